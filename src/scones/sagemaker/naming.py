"""Names for SageMaker resources: a base plus a timestamp suffix from an injectable clock.

SageMaker names must match ``^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}`` and be unique per
account and region, so each launch appends ``YYYYMMDD-HHMMSS``. Passing the clock in
keeps the names, and so the requests, reproducible in tests.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from scones_core.sagemaker_names import MAX_NAME_LENGTH, NAME_RULE, is_sagemaker_name

from scones.sagemaker.errors import LaunchError

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def timestamp_suffix(clock: Clock = utc_now) -> str:
    return clock().astimezone(UTC).strftime("%Y%m%d-%H%M%S")


def check_name(name: str) -> str:
    """``name`` if SageMaker accepts it; otherwise a :class:`LaunchError` saying why."""
    if not is_sagemaker_name(name):
        raise LaunchError(f"invalid SageMaker name {name!r}: use {NAME_RULE}")
    return name


def resource_name(base: str, suffix: str) -> str:
    """``<base>-<suffix>``, with ``base`` shortened so the whole stays within 63 characters."""
    room = MAX_NAME_LENGTH - len(suffix) - 1
    if room < 1:
        raise LaunchError(f"suffix {suffix!r} leaves no room for a name")
    return check_name(f"{base[:room].rstrip('-')}-{suffix}")
