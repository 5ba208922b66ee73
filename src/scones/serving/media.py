"""The declared media type against the decoded image format.

A body sent as ``image/jpeg`` that turns out to be a PNG usually means the caller
labels its uploads wrongly; serving it anyway would hide that bug and record a
wrong ``observedContentType`` in the captured traffic. ``application/x-image``
(SageMaker's generic image type) declares no format, so any supported one is fine.
"""

from __future__ import annotations

from scones_core.image_rules import MEDIA_TYPES, format_name, pillow_formats

from scones.serving.errors import ContainerError

GENERIC_MEDIA_TYPE = "application/x-image"
# What the container accepts: PNG (the workflow's normalised input), JPEG (cameras) and
# SageMaker's generic image type, whose body may be any format the image rules accept.
SUPPORTED_CONTENT_TYPES = (MEDIA_TYPES["PNG"], MEDIA_TYPES["JPEG"], GENERIC_MEDIA_TYPE)
# Pillow format names each specific media type allows, from the image rules' one table
# (cameras write multi-picture JPEGs, which Pillow names MPO: still image/jpeg).
FORMATS_BY_MEDIA_TYPE: dict[str, frozenset[str]] = {
    media_type: pillow_formats(media_type)
    for media_type in SUPPORTED_CONTENT_TYPES
    if media_type != GENERIC_MEDIA_TYPE
}


def media_type_for(image_format: str | None) -> str:
    """The Content-Type to send an image of ``image_format`` (Pillow's name) with: its own
    where the container accepts it, the generic image type otherwise."""
    media_type = MEDIA_TYPES.get(format_name(image_format), GENERIC_MEDIA_TYPE)
    return media_type if media_type in FORMATS_BY_MEDIA_TYPE else GENERIC_MEDIA_TYPE


def check_declared_format(image_format: str | None, content_type: str) -> None:
    """Refuse (415) a decoded image whose format is not the one its Content-Type declares."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    allowed = FORMATS_BY_MEDIA_TYPE.get(media_type)
    if allowed is None or image_format in allowed:
        return
    suggestion = media_type_for(image_format)
    alternatives = (
        f"{suggestion} or {GENERIC_MEDIA_TYPE}" if suggestion != GENERIC_MEDIA_TYPE else suggestion
    )
    raise ContainerError(
        415,
        f"Content-Type {media_type} does not match the body, which is a "
        f"{image_format or 'unknown'} image; send it as {alternatives}",
    )
