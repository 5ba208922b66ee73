"""InvokeEndpoint's header parameters, checked as SageMaker checks them.

The limits come from botocore's sagemaker-runtime model (each header member's
``min``, ``max`` and ``pattern``), not from a copy here, so a client that passes
offline (a 200-character ``InferenceId``, say) is refused offline as on AWS,
and a capture file never holds an id that AWS would not have accepted.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Protocol

import botocore.session

# The Java character classes the model's patterns use, as Python character ranges (ASCII,
# as Java's POSIX classes are without UNICODE_CHARACTER_CLASS).
_JAVA_CLASSES = {"ASCII": r"\x00-\x7f", "Print": r"\x20-\x7e"}


@dataclass(frozen=True)
class HeaderRule:
    member: str
    header: str
    min_length: int
    max_length: int | None
    pattern: re.Pattern[str] | None

    def problem(self, value: str) -> str | None:
        if len(value) < self.min_length:
            return f"{self.member} (header {self.header}) must not be empty"
        if self.max_length is not None and len(value) > self.max_length:
            return (
                f"{self.member} (header {self.header}) is {len(value)} characters; "
                f"at most {self.max_length} are allowed"
            )
        if self.pattern is not None and not self.pattern.fullmatch(value):
            return (
                f"{self.member} (header {self.header}) {value[:80]!r} does not match "
                f"the pattern {self.pattern.pattern}"
            )
        return None


def _python_pattern(java: str) -> re.Pattern[str] | None:
    """The model's (Java) pattern in Python's syntax; None for one this cannot translate,
    which leaves that header to the length limits."""
    for name, chars in _JAVA_CLASSES.items():
        java = java.replace(f"[\\p{{{name}}}]", f"[{chars}]")
        java = java.replace(f"\\p{{{name}}}", f"[{chars}]")
    try:
        return re.compile(java.replace(r"\z", r"\Z"))
    except re.error:
        return None


@cache
def header_rules() -> tuple[HeaderRule, ...]:
    """InvokeEndpoint's header members other than the content negotiation ones (the
    container answers those itself: 415 and 406)."""
    model = botocore.session.get_session().get_service_model("sagemaker-runtime")
    shape = model.operation_model("InvokeEndpoint").input_shape
    rules = []
    for member, member_shape in shape.members.items():
        location = member_shape.serialization
        if location.get("location") != "header" or member in ("ContentType", "Accept"):
            continue
        metadata = member_shape.metadata
        pattern = metadata.get("pattern")
        rules.append(
            HeaderRule(
                member=member,
                header=location["name"],
                min_length=int(metadata.get("min", 0)),
                max_length=int(metadata["max"]) if "max" in metadata else None,
                pattern=_python_pattern(pattern) if pattern else None,
            )
        )
    return tuple(rules)


def invoke_header_problem(headers: Mapping[str, str]) -> str | None:
    """The first header that SageMaker's own validation would refuse, named; else None."""
    lowered = _lowered(headers)
    for rule in header_rules():
        value = lowered.get(rule.header.lower())
        if value is not None and (problem := rule.problem(value)):
            return problem
    return None


class HeaderLines(Protocol):
    """A request's header fields, each line kept (Starlette's ``Headers``)."""

    def getlist(self, key: str) -> list[str]: ...


def field_value(headers: HeaderLines, name: str) -> str | None:
    """A list field's value (Accept, Content-Encoding), its lines joined with commas: RFC 9110
    section 5.3 gives several lines the meaning of that one. None when it was not sent."""
    lines = headers.getlist(name)
    if not lines:
        return None
    # An empty line or element is no value (RFC 9110 section 5.6.1): left out, not joined.
    values = [v.strip() for line in lines for v in line.split(",") if v.strip()]
    return ", ".join(values)


def repeated_field_problem(headers: HeaderLines) -> str | None:
    """A field that may be sent once (Content-Type, or one of InvokeEndpoint's headers) sent
    on several lines, named; else None. Such a request is refused rather than read: taking
    one line where another reader takes the other would let a value that was never checked
    reach the model or the capture file (a 300-character InferenceId behind a short one)."""
    for name in ("Content-Type", *(rule.header for rule in header_rules())):
        if (count := len(headers.getlist(name))) > 1:
            return f"the header {name} was sent {count} times; send it once"
    return None


# SageMaker's ErrorCode (beside the message) for a TargetModel sent to a single-model endpoint.
TARGET_MODEL_NOT_SUPPORTED = "TARGET_MODEL_HEADER_NOT_SUPPORTED"


def target_model_problem(headers: Mapping[str, str], endpoint_name: str) -> str | None:
    """SageMaker's refusal of ``TargetModel`` on an endpoint that is not multi-model, as
    every endpoint here is (one model per variant); None without the header. Served
    instead, a client naming a model would pass offline and fail on AWS."""
    if not _sent(headers, "TargetModel"):
        return None
    return (
        f"Endpoint {endpoint_name} is not a multi-model endpoint and does not support "
        "target model header."
    )


def target_container_problem(headers: Mapping[str, str], endpoint_name: str) -> str | None:
    """The refusal of ``TargetContainerHostname`` on an endpoint that is not a
    multi-container endpoint set for direct invocation (SageMaker: "you get validation
    errors"); None without the header. Served instead, it would pass offline and fail on
    AWS, as ``TargetModel`` would."""
    if not _sent(headers, "TargetContainerHostname"):
        return None
    return (
        f"Endpoint {endpoint_name} is not a multi-container endpoint with direct invocation "
        "and does not support the target container hostname header."
    )


def _sent(headers: Mapping[str, str], member: str) -> bool:
    """Whether the request carries the header of InvokeEndpoint's parameter ``member``."""
    header = next(rule.header for rule in header_rules() if rule.member == member)
    return _lowered(headers).get(header.lower()) is not None


def _lowered(headers: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}
