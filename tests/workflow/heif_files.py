"""Real HEVC tiles for the image tests, from libheif's encoder (pillow-heif, in the test
environment only).

``hevc_tile`` encodes a picture with libheif and keeps its HEVC configuration and coded
data; ``scones.heic_writer`` boxes such tiles as a phone does (one image, a grid, an alpha
plane, EXIF, any field of a test's choosing), so each rule of
``scones_core.heif_structure`` can be broken one at a time on otherwise real files.
"""

from __future__ import annotations

import io

import pillow_heif
from PIL import Image

from scones.heic_writer import HevcTile, tile_from_heic


def hevc_tile(picture: Image.Image, **encoder: object) -> HevcTile:
    """``picture`` encoded by libheif (x265): ``quality``, ``chroma`` (420, 444), and a
    16-bit mode ("RGB;16" through ``pillow_heif.from_bytes``) for 10 bits a sample."""
    out = io.BytesIO()
    # HeifFile.save, not Pillow's save: the test process must not register pillow-heif's
    # opener, so every decode goes through the product's pi-heif plugin.
    pillow_heif.from_pillow(picture).save(out, **encoder)
    return tile_from_heic(out.getvalue())
