"""Inputs the monitor could not use, each named so a person can find and fix it.

A malformed or duplicated capture line, a capture file that broke off mid-read and
an unreadable Model Monitor report never stop the monitor: each becomes a
``DataWarning`` naming the object, the line and the reason. Every warning is logged
once, where it is found, and is carried in the window report, so a count on a
dashboard can always be traced back to the lines behind it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

MALFORMED_CAPTURE_LINE = "MALFORMED_CAPTURE_LINE"
DUPLICATE_CAPTURE_RECORD = "DUPLICATE_CAPTURE_RECORD"
# A capture file of an eventVersion this monitor was not written for: read anyway
# (its records parsed), and said once per file, so a format change is noticed.
UNKNOWN_CAPTURE_VERSION = "UNKNOWN_CAPTURE_VERSION"
UNREADABLE_REPORT = "UNREADABLE_MODEL_MONITOR_REPORT"
# A capture file whose download broke off mid-stream: the lines before were read.
UNREADABLE_CAPTURE_FILE = "UNREADABLE_CAPTURE_FILE"
# An object among the capture files that is not one (SageMaker writes only ``.jsonl``): a
# compressed or renamed copy would otherwise leave its records out without a word.
NOT_A_CAPTURE_FILE = "NOT_A_CAPTURE_FILE"
# Records in a file that the window measuring their time does not read (their clock is
# far from the file's hour folder): no window counts them, so they are named once.
MISFILED_CAPTURE_RECORDS = "MISFILED_CAPTURE_RECORDS"
# Capture of the window's hours under another variant of the endpoint (an A/B or shadow
# variant, or ENDPOINT_VARIANT not the endpoint's variant name): the monitor measures
# one variant, so those requests are in no number it publishes.
OTHER_VARIANT_CAPTURE = "OTHER_VARIANT_CAPTURE"
# DataCaptureSamplingPercentage is 0: nothing is captured, so every window reads 0
# requests and no confidence, drift or missing-capture alert can fire. Said each window.
CAPTURE_OFF = "CAPTURE_OFF"


@dataclass(frozen=True)
class DataWarning:
    """One skipped input: what kind, which file, which line, and why."""

    code: str
    source: str  # s3://bucket/key (or a local path when the CLI reads a folder)
    line: int | None  # 1-based line in the file; None when the whole file is the problem
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "source": self.source, "line": self.line, "reason": self.reason}

    def log(self, logger: logging.Logger, message: str, *, frames_up: int = 0) -> None:
        """One structured log record per warning, so log queries can count and locate them.
        Its location is the code that found the problem: ``log``'s caller, or ``frames_up``
        frames above it when the caller only passes the warning on."""
        logger.warning(
            message,
            extra={
                "code": self.code,
                "source": self.source,
                "line": self.line,
                "reason": self.reason,
            },
            stacklevel=2 + frames_up,
        )
