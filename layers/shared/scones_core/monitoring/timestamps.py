"""ISO 8601 times as the contracts write them, always in UTC.

Data capture writes ``2026-11-25T12:00:00Z``; the results table writes
``2026-11-25T12:00:00.123Z`` (Step Functions' time, which leaves out ``.000``). The
table's sort key is compared as a string, so window bounds must be formatted exactly
like the items' ``recorded_at``, in both forms (``recorded_at_before``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_ONE_MILLISECOND = timedelta(milliseconds=1)

# Where a monitor run's event holds the time it was scheduled for, first match wins: the
# EventBridge Scheduler input this stack sends (template.yaml, MonitorFunction's
# ScheduleV2), then the ``time`` of an EventBridge rule's "Scheduled Event".
SCHEDULE_TIME_FIELD = "scheduledTime"
RULE_TIME_FIELD = "time"
SCHEDULED_TIME_FIELDS = (SCHEDULE_TIME_FIELD, RULE_TIME_FIELD)
# What marks an EventBridge rule's scheduled event (its ``time`` is the schedule's).
RULE_SCHEDULE_EVENT = {"source": "aws.events", "detail-type": "Scheduled Event"}


def parse_timestamp(value: object) -> datetime:
    """An aware UTC datetime from an ISO 8601 string; naive times are taken as UTC.

    Raises ``ValueError`` naming the value when it is not a timestamp.
    """
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected an ISO 8601 timestamp, got {value!r}")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not an ISO 8601 timestamp") from exc
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        # 9999-12-31T23:59:59-01:00 is a valid ISO 8601 time past datetime's range in UTC.
        raise ValueError(f"timestamp {value!r} is outside the years 1 to 9999 in UTC") from None


def format_millis(moment: datetime) -> str:
    """``2026-11-25T12:00:00.123Z``: the results table's ``recorded_at`` format."""
    utc = moment.astimezone(UTC)
    # isoformat, not strftime: glibc's %Y does not pad a year before 1000 to four digits.
    return utc.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def format_step_functions(moment: datetime) -> str:
    """``$$.State.EnteredTime`` as Step Functions writes it: ``format_millis``, without
    the fraction when the milliseconds are zero (``2026-11-25T12:00:00Z``)."""
    text = format_millis(moment)
    return text[: -len(".000Z")] + "Z" if text.endswith(".000Z") else text


def format_seconds(moment: datetime) -> str:
    """``2026-11-25T12:00:00Z``: the format of data capture and EventBridge times."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def hour_folder_name(moment: datetime) -> str:
    """``2026/11/25/12``: the UTC hour folder that data capture files its files in and
    Model Monitor its reports in, under ``{endpoint}/{variant}/`` and
    ``{endpoint}/{schedule}/``."""
    return moment.astimezone(UTC).strftime("%Y/%m/%d/%H")


def floor_hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def hours_between(start: datetime, end: datetime) -> list[datetime]:
    """Every hour that overlaps ``[start, end)``, as the start of that hour."""
    hours: list[datetime] = []
    current = floor_hour(start)
    while current < end:
        hours.append(current)
        current += timedelta(hours=1)
    return hours


def _ceil_millis(moment: datetime) -> datetime:
    floor = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    return floor if floor == moment else floor + _ONE_MILLISECOND


def recorded_at_from(start: datetime) -> str:
    """The least ``recorded_at`` string of a time at or after ``start``."""
    return format_millis(_ceil_millis(start))


def recorded_at_before(end: datetime) -> str:
    """The greatest ``recorded_at`` string of a time before ``end``, for ``<=``/``BETWEEN``.

    Step Functions writes ``$$.State.EnteredTime`` with milliseconds unless they are
    zero: ``2026-11-25T12:59:59Z``, which sorts after every ``12:59:59.xxxZ``. So before
    an ``end`` on a whole second (every scheduled window) the bound is the last second's
    whole-second form; ``end`` minus a millisecond would leave that record out of this
    window and the next. Before an ``end`` within a second (a run by hand) that form
    cannot be taken in without the second's later milliseconds, so it is left to the
    window from ``end``, whose ``recorded_at_from`` sorts below it."""
    if end.microsecond == 0:
        return format_seconds(end - timedelta(seconds=1))
    # The millisecond before ``end``'s ceiling, found without passing it: the ceiling of
    # 9999-12-31T23:59:59.9999 is past the last time Python has.
    floor = end.replace(microsecond=end.microsecond // 1000 * 1000)
    return format_millis(floor if floor != end else end - _ONE_MILLISECOND)


def recorded_at_bounds(start: datetime, end: datetime) -> tuple[str, str]:
    """``BETWEEN`` bounds on ``recorded_at`` for ``[start, end)``: consecutive windows
    count each record exactly once."""
    return recorded_at_from(start), recorded_at_before(end)
