"""Which model answered: the endpoint's ``CustomAttributes``, one home for both sides.

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
