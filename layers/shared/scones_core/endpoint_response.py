"""What the endpoint answers: its probabilities and, in ``CustomAttributes``, which model
answered. One home for every side: the server, the classify step and the monitor's
reading of captured traffic.

:func:`probabilities` is the body's contract, so an answer the classify step accepts is
the same answer the monitor reads back from the endpoint's data capture.

The response body stays the built-in algorithm's contract (a JSON list of
probabilities), so the model version travels beside it, the way SageMaker lets a
container say more about its answer: the container sets the
``X-Amzn-SageMaker-Custom-Attributes`` response header, and ``InvokeEndpoint``
returns it verbatim as ``CustomAttributes``. The server writes it with
:func:`custom_attributes`; the classify step reads it with :func:`model_version`,
and every classified record keeps it, so a record says which model judged it even
while two variants (a canary) serve side by side.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

CUSTOM_ATTRIBUTES_HEADER = "X-Amzn-SageMaker-Custom-Attributes"
MODEL_VERSION_KEY = "model_version"
# What a record holds when the endpoint does not say (a container that sets no header,
# such as SageMaker's built-in algorithm).
UNREPORTED = "unreported"
# SageMaker forwards at most 1024 visible US-ASCII characters.
_MAX_LENGTH = 1024


def custom_attributes(version: str) -> str:
    """The header value the container answers with: ``model_version=<version>``."""
    text = f"{MODEL_VERSION_KEY}={version}"
    if not version or len(text) > _MAX_LENGTH or not text.isascii() or not text.isprintable():
        raise ValueError(f"model version {version!r} cannot travel in CustomAttributes")
    return text


def model_version(attributes: object) -> str:
    """The version named by ``CustomAttributes`` (``key=value`` pairs separated by ``,``
    or ``;``), or :data:`UNREPORTED` when it names none."""
    if not isinstance(attributes, str):
        return UNREPORTED
    for part in attributes.replace(";", ",").split(","):
        key, sep, value = part.partition("=")
        value = value.strip()
        if sep and key.strip() == MODEL_VERSION_KEY and value and value.isprintable():
            return value[:128]
    return UNREPORTED


# A probability may stray this far outside [0, 1] (a float32 softmax) and is clamped;
# the probabilities must sum to 1 within SUM_TOLERANCE.
_RANGE_TOLERANCE = 1e-6
SUM_TOLERANCE = 1e-3


def probabilities(answer: object, labels: Sequence[str]) -> tuple[float, ...]:
    """The endpoint's answer (parsed JSON) as one probability per label, in label order.

    Accepted: a list (this project's server, SageMaker's built-in image classifier), a
    batch of one (``[[...]]``) and ``{"predictions": [...]}`` (TensorFlow Serving's
    shape). ``ValueError`` says what is wrong.
    """
    if isinstance(answer, dict) and "predictions" in answer:
        answer = answer["predictions"]
    if isinstance(answer, list) and len(answer) == 1 and isinstance(answer[0], list):
        answer = answer[0]
    names = ", ".join(labels)
    if not isinstance(answer, list):
        raise ValueError(f"the answer is not a list of probabilities ({names}): {answer!r:.80}")
    if len(answer) != len(labels):
        raise ValueError(
            f"the answer has {len(answer)} probabilities, expected {len(labels)} ({names})"
        )
    values: list[float] = []
    for item in answer:
        if isinstance(item, bool) or not isinstance(item, int | float):
            raise ValueError(f"probability {item!r:.40} is not a number")
        try:
            number = float(item)
        except OverflowError:
            raise ValueError("a probability is an integer too large for a float") from None
        if not math.isfinite(number) or not -_RANGE_TOLERANCE <= number <= 1 + _RANGE_TOLERANCE:
            raise ValueError(f"probability {item!r} is outside [0, 1]")
        values.append(min(max(number, 0.0), 1.0))
    if abs(sum(values) - 1.0) > SUM_TOLERANCE:
        raise ValueError(f"the probabilities sum to {sum(values):.6f}, not 1")
    return tuple(values)
