"""Injected faults: make the endpoint fail on purpose, so retries can be proven.

A :class:`FaultPlan` holds counters that the ``/_faults`` admin route sets and
every invocation consumes. Each counted fault fails the next *n* invocations
(``-1`` means "until cleared"); ``latency_ms`` delays every invocation until
cleared. When several faults are armed, one invocation consumes only the first
in :data:`FAULT_ORDER`.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Fault(StrEnum):
    """A failure the plan can inject, named as the admin route's JSON keys."""

    UNAVAILABLE = "unavailable"
    THROTTLE = "throttle"
    INTERNAL_FAILURE = "internal_failure"
    MODEL_ERROR = "model_error"
    # The container itself answers 429 (too busy): SageMaker returns it as a ModelError.
    BUSY = "busy"


FAULT_ORDER: tuple[Fault, ...] = (
    Fault.UNAVAILABLE,
    Fault.THROTTLE,
    Fault.INTERNAL_FAILURE,
    Fault.MODEL_ERROR,
    Fault.BUSY,
)
LATENCY_KEY = "latency_ms"
UNTIL_CLEARED = -1


class FaultSpecError(ValueError):
    """The JSON sent to ``POST /_faults`` is not a valid fault plan."""


@dataclass(frozen=True)
class Injection:
    """What one invocation must suffer: an optional failure and a delay."""

    fault: Fault | None
    latency_ms: int


def parse_fault_spec(spec: Any) -> dict[str, int]:
    """Validate an admin request body; return ``{key: value}`` with known keys only."""
    if not isinstance(spec, Mapping) or not spec:
        raise FaultSpecError(
            "fault plan must be a non-empty JSON object such as "
            '{"throttle": 2}; keys: ' + ", ".join([*FAULT_ORDER, LATENCY_KEY])
        )
    known = {str(f) for f in FAULT_ORDER} | {LATENCY_KEY}
    parsed: dict[str, int] = {}
    for key, value in spec.items():
        if key not in known:
            raise FaultSpecError(f"unknown fault {key!r}; known faults: {', '.join(sorted(known))}")
        if isinstance(value, bool) or not isinstance(value, int):
            raise FaultSpecError(f"fault {key!r} must be an integer, got {value!r}")
        if key == LATENCY_KEY:
            if not 0 <= value <= 60_000:
                raise FaultSpecError(f"{LATENCY_KEY} must be between 0 and 60000, got {value}")
        elif value < UNTIL_CLEARED:
            raise FaultSpecError(
                f"fault {key!r} must be a count >= 0, or -1 for 'until cleared', got {value}"
            )
        parsed[key] = value
    return parsed


class FaultPlan:
    """Thread-safe fault counters, consumed one per invocation."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._remaining: dict[Fault, int] = dict.fromkeys(FAULT_ORDER, 0)
        self._injected: dict[Fault, int] = dict.fromkeys(FAULT_ORDER, 0)
        self._latency_ms = 0
        self._delayed = 0
        self._invocations = 0

    def arm(self, spec: Any) -> dict[str, Any]:
        """Set the faults named in ``spec`` (others keep their state); return the snapshot."""
        parsed = parse_fault_spec(spec)
        with self._lock:
            for key, value in parsed.items():
                if key == LATENCY_KEY:
                    self._latency_ms = value
                else:
                    self._remaining[Fault(key)] = value
        return self.snapshot()

    def clear(self) -> dict[str, Any]:
        """Disarm every fault; counters of what was injected are kept."""
        with self._lock:
            self._remaining = dict.fromkeys(FAULT_ORDER, 0)
            self._latency_ms = 0
        return self.snapshot()

    def next_injection(self) -> Injection:
        """Consume the fault for one invocation (called once per invocation)."""
        with self._lock:
            self._invocations += 1
            chosen: Fault | None = None
            for fault in FAULT_ORDER:
                left = self._remaining[fault]
                if left == 0:
                    continue
                if left > 0:
                    self._remaining[fault] = left - 1
                self._injected[fault] += 1
                chosen = fault
                break
            if self._latency_ms:
                self._delayed += 1
            return Injection(fault=chosen, latency_ms=self._latency_ms)

    def snapshot(self) -> dict[str, Any]:
        """The armed plan and what has been injected so far, as JSON-ready data."""
        with self._lock:
            return {
                "plan": {
                    **{str(f): n for f, n in self._remaining.items()},
                    LATENCY_KEY: self._latency_ms,
                },
                "injected": {
                    **{str(f): n for f, n in self._injected.items()},
                    "delayed": self._delayed,
                },
                "invocations": self._invocations,
            }
