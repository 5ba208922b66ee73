"""What a finished retraining run leaves behind: one item in the monitor's state table.

The state machine writes these items with direct ``dynamodb:putItem`` states and
``scones retrain`` writes the same layout offline (a test compares the two).
``pk = retraining#<endpoint>#<run>``; the item has no ``expires_at``, so the
table's TTL keeps it (cooldown markers expire, outcomes are history).
"""

from __future__ import annotations

from typing import Any

RECORD_TYPE = "RETRAINING_OUTCOME"
PROMOTED = "PROMOTED"
REJECTED = "REJECTED"
ROLLED_BACK = "ROLLED_BACK"
FAILED = "FAILED"
OUTCOMES = (PROMOTED, REJECTED, ROLLED_BACK, FAILED)
# The attributes every outcome item has (the ASL's record states write exactly these).
ATTRIBUTES = (
    "pk",
    "record_type",
    "outcome",
    "endpoint_name",
    "run_name",
    "execution_arn",
    "recorded_at",
    "reason",
)


# What each outcome's alert says after "Scones retraining on <endpoint>: " (its subject;
# SNS takes under 100 characters, and EndpointName has at most 40).
SUBJECTS = {
    PROMOTED: "candidate promoted",
    REJECTED: "candidate rejected by the gate",
    ROLLED_BACK: "canary rolled back",
    FAILED: "failed",
}
# The state of the retraining definition that sends each outcome's alert.
ALERT_STATES = {
    PROMOTED: "NotifyPromoted",
    REJECTED: "AlertRejected",
    ROLLED_BACK: "AlertRolledBack",
    FAILED: "AlertFailed",
}
# The error of a run whose alert could not be published past its retries (the topic or
# its KMS key deleted or disabled, publishing no longer allowed): the run ends FAILED
# under this name, not the raw SNS error, and its cause names the outcome, which stands.
NOTIFICATION_FAILED = "NotificationFailed"


def alert_subject(outcome: str, endpoint_name: str) -> str:
    """The alert's subject: the endpoint named, so two stacks mailing one inbox differ."""
    return f"Scones retraining on {endpoint_name}: {SUBJECTS[outcome]}"


def outcome_key(endpoint_name: str, run_name: str) -> str:
    return f"retraining#{endpoint_name}#{run_name}"


def outcome_item(
    *,
    outcome: str,
    endpoint_name: str,
    run_name: str,
    execution_arn: str,
    recorded_at: str,
    reason: str,
) -> dict[str, Any]:
    """The DynamoDB item (attribute-value form)."""
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, got {outcome!r}")
    values = {
        "pk": outcome_key(endpoint_name, run_name),
        "record_type": RECORD_TYPE,
        "outcome": outcome,
        "endpoint_name": endpoint_name,
        "run_name": run_name,
        "execution_arn": execution_arn,
        "recorded_at": recorded_at,
        "reason": reason,
    }
    return {name: {"S": values[name]} for name in ATTRIBUTES}
