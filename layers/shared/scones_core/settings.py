"""Settings read from environment variables once, at cold start.

Every value comes from a template parameter through the function's environment,
so nothing here carries a default for a name, an ARN or a threshold. A missing
or malformed variable fails the cold start with one message that names them all.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar, cast

from scones_core.errors import SettingsError
from scones_core.records import NEITHER
from scones_core.workflow_type import EXPRESS, WORKFLOW_TYPES

T = TypeVar("T")


class EnvReader:
    """Reads typed values from an environment, recording every problem instead of
    stopping at the first, so one error message can name them all."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ
        self.problems: list[str] = []

    def required(self, name: str) -> str:
        value = self._environ.get(name, "").strip()
        if not value:
            self.problems.append(f"{name} is missing or empty")
        return value

    def parsed(self, name: str, parse: Callable[[str], T]) -> T:
        """``parse(value)``; a missing or unparsable value is recorded as a problem."""
        value = self.required(name)
        if not value:
            return _placeholder(parse)
        return self._parse(name, value, parse)

    def optional(self, name: str, parse: Callable[[str], T]) -> T | None:
        value = self._environ.get(name, "").strip()
        return self._parse(name, value, parse) if value else None

    def _parse(self, name: str, value: str, parse: Callable[[str], T]) -> T:
        try:
            return parse(value)
        except (ValueError, OverflowError) as exc:
            self.problems.append(f"{name}={value!r} is invalid: {exc}")
            return _placeholder(parse)

    def string(self, name: str) -> str:
        return self.required(name)

    def integer(self, name: str, *, minimum: int = 0) -> int:
        def parse(raw: str) -> int:
            value = int(raw)
            if value < minimum:
                raise ValueError(f"must be >= {minimum}")
            return value

        return self.parsed(name, parse)

    def number(self, name: str, *, minimum: float, maximum: float) -> float:
        def parse(raw: str) -> float:
            value = float(raw)
            if not minimum <= value <= maximum:
                raise ValueError(f"must be between {minimum} and {maximum}")
            return value

        return self.parsed(name, parse)

    def items(self, name: str, *, transform: Callable[[str], str] = str) -> tuple[str, ...]:
        def parse(raw: str) -> tuple[str, ...]:
            values = tuple(transform(part.strip()) for part in raw.split(",") if part.strip())
            if not values:
                raise ValueError("must list at least one value")
            return values

        return self.parsed(name, parse)

    def check(self, what: str) -> None:
        if self.problems:
            raise SettingsError(f"{what}: " + "; ".join(self.problems))


def sides_conflict(min_side: int, max_pixels: int) -> str | None:
    """Why no image could pass both limits (the smallest allowed image, ``min_side``
    square, has more pixels than ``max_pixels``), or None."""
    if min_side * min_side <= max_pixels:
        return None
    return (
        f"the smallest image allowed, {min_side}x{min_side}, has {min_side * min_side} pixels, "
        f"more than the {max_pixels} allowed: every image would be rejected"
    )


def _placeholder(parse: Callable[[str], T]) -> T:
    """Stands in for a bad value; ``check`` raises before anyone reads it."""
    return cast(T, None)


# The normalised PNG travels in the workflow's state, base64-encoded: at 224x224 one that
# does not compress (noise) plus the largest rest of a state stays under Step Functions'
# 256 KiB (`scones bench payload --param ModelInputSize=224x224`). The template's
# AllowedPattern for ModelInputSize holds the same bound.
MAX_MODEL_INPUT_SIDE = 224


def parse_input_size(raw: str) -> tuple[int, int]:
    """``ModelInputSize`` (``WIDTHxHEIGHT``) as ``(width, height)``."""
    width, height = (int(v) for v in _size(raw).split("x"))
    return width, height


def _size(raw: str) -> str:
    parts = raw.lower().split("x")
    if len(parts) != 2 or not all(p.isascii() and p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError("expected WIDTHxHEIGHT, e.g. 32x32")
    width, height = (int(p) for p in parts)
    if max(width, height) > MAX_MODEL_INPUT_SIDE:
        raise ValueError(
            f"each side must be at most {MAX_MODEL_INPUT_SIDE}: the model input travels "
            "in the workflow's state, which Step Functions limits to 256 KiB"
        )
    return f"{width}x{height}"


@dataclass(frozen=True)
class StartSettings:
    state_machine_arn: str
    # The uploads this stack classifies. The bucket's own notification is filtered to the
    # prefix, but S3 events through an SNS topic or EventBridge name every bucket and key.
    # Empty: not checked (scones redrive without the stack's outputs to read them from).
    image_bucket: str = ""
    incoming_prefix: str = ""
    # The template's WorkflowType. Empty: the caller does not wait for its executions
    # (scones redrive, the backfill), whatever the type.
    workflow_type: str = ""
    # The queue the start function reads, whose messages it sends back sooner than the
    # visibility timeout (``ingest.delay_redeliveries``), the first delay IngestRetrySeconds.
    # Empty and 0 for other callers.
    ingest_queue_url: str = ""
    retry_seconds: int = 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StartSettings:
        env = EnvReader(environ)
        settings = cls(
            state_machine_arn=env.string("STATE_MACHINE_ARN"),
            image_bucket=env.string("IMAGE_BUCKET"),
            incoming_prefix=env.string("INCOMING_PREFIX"),
            workflow_type=env.parsed("WORKFLOW_TYPE", _workflow_type),
            ingest_queue_url=env.string("INGEST_QUEUE_URL"),
            retry_seconds=env.integer("INGEST_RETRY_SECONDS", minimum=1),
        )
        env.check("start_workflow settings")
        return settings

    @property
    def waits(self) -> bool:
        """Whether each execution is run to its end (``StartSyncExecution``, Express only):
        the start function's backpressure (``scones_core.ingest``)."""
        return self.workflow_type == EXPRESS

    def is_upload_here(self, bucket: str, key: str) -> bool:
        """Whether ``bucket``/``key`` is an upload this stack classifies."""
        return (not self.image_bucket or bucket == self.image_bucket) and key.startswith(
            self.incoming_prefix
        )


def _workflow_type(raw: str) -> str:
    if raw not in WORKFLOW_TYPES:
        raise ValueError(f"must be one of {', '.join(WORKFLOW_TYPES)}")
    return raw


@dataclass(frozen=True)
class BackfillSettings:
    """The backfill step starts workflows as the start function does, and skips the
    objects the results table already holds."""

    start: StartSettings
    results_table: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> BackfillSettings:
        env = EnvReader(environ)
        settings = cls(
            start=StartSettings(
                state_machine_arn=env.string("STATE_MACHINE_ARN"),
                image_bucket=env.string("IMAGE_BUCKET"),
                incoming_prefix=env.string("INCOMING_PREFIX"),
            ),
            results_table=env.string("RESULTS_TABLE_NAME"),
        )
        env.check("backfill settings")
        return settings


# A label names a folder of images (``<LabelledDataPrefix><label>/``, a training
# channel's ``<label>/``) and is a JSON string in the retraining definition.
_LABEL_FORBIDDEN = frozenset('/\\"')


def parse_labels(value: str) -> tuple[str, ...]:
    """The model's labels in its output order: at least two, each named once, each text
    that records, logs and figures can show (no control characters or undecodable bytes)
    and that can name a folder (no ``/``, ``\\`` or ``"``; not ``.`` or ``..``); never
    ``neither``, the review page's answer for an image of no label."""
    labels = tuple(label.strip() for label in value.split(","))
    if len(labels) < 2 or any(not label for label in labels):
        raise ValueError("expected at least two comma-separated, non-empty labels")
    for label in labels:
        if not label.isprintable():
            raise ValueError(
                f"label {label!r} is not printable text (undecodable bytes or control characters)"
            )
        if _LABEL_FORBIDDEN & set(label) or label in (".", ".."):
            raise ValueError(
                f"label {label!r} cannot name a folder of images: a label holds no '/', "
                "'\\' or '\"' and is not '.' or '..'"
            )
    if len(set(labels)) != len(labels):
        raise ValueError("labels must be unique")
    if NEITHER in labels:
        raise ValueError(
            f"{NEITHER!r} cannot be a label: it is the review page's answer for an image of "
            "none of the labels"
        )
    return labels


def positive_int(value: str) -> int:
    """A whole number of at least 1 (``ValueError`` says which it is not)."""
    try:
        number = int(value)
    except ValueError:
        raise ValueError("not a whole number") from None
    if number < 1:
        raise ValueError("must be at least 1")
    return number


def _formats(raw: str) -> tuple[str, ...]:
    """A comma-separated subset of the supported formats, upper case."""
    from scones_core.image_rules import SUPPORTED_IMAGE_FORMATS

    values = tuple(dict.fromkeys(part.strip().upper() for part in raw.split(",") if part.strip()))
    unknown = [value for value in values if value not in SUPPORTED_IMAGE_FORMATS]
    if unknown or not values:
        raise ValueError(
            f"{', '.join(unknown) or 'nothing'} is not among the supported formats "
            f"({', '.join(SUPPORTED_IMAGE_FORMATS)})"
        )
    return values


@dataclass(frozen=True)
class ImageLimits:
    """The image rules' settings (template parameters ``MaxImageBytes`` and friends)."""

    max_bytes: int
    max_pixels: int
    min_side: int
    allowed_formats: tuple[str, ...]
    model_input_size: tuple[int, int]  # (width, height)
    # Whether messages name the template parameter a limit comes from ("(MaxImageBytes)").
    parameter_names: bool = True
    # The function's memory (Lambda's AWS_LAMBDA_FUNCTION_MEMORY_SIZE, from its MemorySize):
    # an image whose decode would not fit is refused before decoding. None: no such bound.
    memory_mb: int | None = None

    def named(self, parameter: str) -> str:
        """`` (Parameter)`` for a message, when the limits came from the template."""
        return f" ({parameter})" if self.parameter_names else ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ImageLimits:
        env = EnvReader(environ)
        size = env.parsed("MODEL_INPUT_SIZE", _size) or "0x0"
        width, height = (int(v) for v in size.split("x"))
        settings = cls(
            max_bytes=env.integer("MAX_IMAGE_BYTES", minimum=1),
            max_pixels=env.integer("MAX_IMAGE_PIXELS", minimum=1),
            min_side=env.integer("MIN_IMAGE_SIDE", minimum=1),
            allowed_formats=env.parsed("ALLOWED_IMAGE_FORMATS", _formats),
            model_input_size=(width, height),
            memory_mb=env.optional("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", positive_int),
        )
        if not env.problems and (
            conflict := sides_conflict(settings.min_side, settings.max_pixels)
        ):
            env.problems.append(f"MIN_IMAGE_SIDE and MAX_IMAGE_PIXELS: {conflict}")
        env.check("image settings")
        return settings

    @classmethod
    def unrestricted(cls, model_input_size: tuple[int, int]) -> ImageLimits:
        """No limits beyond Pillow's own decompression-bomb guard: for trusted local
        files (training data), which still follow every other image rule."""
        from PIL import Image

        from scones_core.image_rules import SUPPORTED_IMAGE_FORMATS

        return cls(
            max_bytes=sys.maxsize,
            max_pixels=int(Image.MAX_IMAGE_PIXELS or sys.maxsize),
            min_side=1,
            allowed_formats=SUPPORTED_IMAGE_FORMATS,
            model_input_size=model_input_size,
            parameter_names=False,
        )


@dataclass(frozen=True)
class EndpointSettings:
    endpoint_name: str
    labels: tuple[str, ...]
    timeout_seconds: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EndpointSettings:
        env = EnvReader(environ)
        settings = cls(
            endpoint_name=env.string("ENDPOINT_NAME"),
            labels=env.parsed("LABELS", parse_labels),
            timeout_seconds=env.integer("ENDPOINT_TIMEOUT_SECONDS", minimum=1),
        )
        env.check("classify_image settings")
        return settings
