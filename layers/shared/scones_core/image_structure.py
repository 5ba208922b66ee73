"""What a file's structure asks of a decoder, read from the bytes without decoding.

Some structures cost a decoder dearly however small the image is, and Pillow pays for
a few of them while it parses the header, before any image rule could look:

- PNG: every chunk carries a CRC (decoding ignores a broken IDAT checksum), and the
  spec allows one iCCP profile; Pillow inflates each one as it opens the file, so
  thousands of them took half a minute. The chunks are walked before Pillow sees them.
- JPEG: libjpeg walks the whole image once per scan (thousands of refinement scans in
  a small file take minutes), keeps every DCT coefficient of the image when there is
  more than one scan, and has no reduced-scale decode for a lossless frame.
- TIFF: libtiff allocates and fills a whole tile, whatever the image's own size.

``image_rules`` turns these facts into rejections; this module only reads them.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

from scones_core.errors import CorruptImage

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Chunks the PNG specification allows once (the ones a decoder inflates or parses).
_PNG_ONCE = frozenset({b"IHDR", b"PLTE", b"iCCP", b"sRGB", b"gAMA", b"cHRM", b"eXIf", b"acTL"})


def check_png_chunks(data: bytes) -> None:
    """Walk every chunk up to IEND: ``CorruptImage`` names a truncated chunk, a chunk
    whose CRC does not match, or a chunk the specification allows once given twice."""
    pos = len(PNG_SIGNATURE)
    seen: set[bytes] = set()
    while True:
        if pos + 12 > len(data):
            raise CorruptImage("The PNG data is truncated: it ends before its IEND chunk.")
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if length > 2**31 - 1 or end > len(data):
            raise CorruptImage(f"The PNG data is truncated: its {_name(kind)} chunk is cut off.")
        crc = int.from_bytes(data[end - 4 : end], "big")
        if zlib.crc32(data[pos + 4 : end - 4]) != crc:
            raise CorruptImage(f"The PNG data is corrupt: its {_name(kind)} chunk fails its CRC.")
        if kind in _PNG_ONCE:
            if kind in seen:
                raise CorruptImage(
                    f"The PNG data is corrupt: it has more than one {_name(kind)} chunk, "
                    "which PNG allows once."
                )
            seen.add(kind)
        if kind == b"IEND":
            return
        pos = end


def _name(kind: bytes) -> str:
    return kind.decode("latin-1") if kind.isalpha() else repr(kind)


# ---- JPEG -------------------------------------------------------------------------

# Start-of-frame markers (every one but DHT C4, JPG C8 and DAC CC) and the lossless ones.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
LOSSLESS_SOF_MARKERS = frozenset({0xC3, 0xC7, 0xCB, 0xCF})
_SOS, _EOI = 0xDA, 0xD9
# Markers without a length: SOI, RST0-7 and TEM.
_STANDALONE = frozenset({0xD8, 0x01, *range(0xD0, 0xD8)})
# The next marker after entropy-coded data: 0xFF not followed by a stuffed 0x00 or RSTn.
_NEXT_MARKER = re.compile(rb"\xff(?![\x00\xd0-\xd7])")


@dataclass(frozen=True)
class JpegLayout:
    """The first image's frame type and how many scans it has (up to its EOI)."""

    frame_marker: int | None
    scans: int

    @property
    def lossless(self) -> bool:
        return self.frame_marker in LOSSLESS_SOF_MARKERS


def jpeg_layout(data: bytes) -> JpegLayout:
    """Walk the marker segments of the first image (a camera JPEG's preview images come
    after its EOI, inside or after it). Never raises: what cannot be walked is left to
    the decoder, which names the damage."""
    pos, frame, scans = 2, None, 0
    size = len(data)
    while pos + 2 <= size:
        if data[pos] != 0xFF:
            found = _NEXT_MARKER.search(data, pos)
            if found is None:
                break
            pos = found.start()
            continue
        marker = data[pos + 1]
        if marker == 0xFF:  # a fill byte before a marker
            pos += 1
            continue
        if marker == _EOI:
            break
        if marker in _STANDALONE:
            pos += 2
            continue
        if pos + 4 > size:
            break
        end = pos + 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker in _SOF_MARKERS and frame is None:
            frame = marker
        if marker != _SOS:
            pos = end
            continue
        scans += 1
        found = _NEXT_MARKER.search(data, end)
        pos = size if found is None else found.start()
    return JpegLayout(frame_marker=frame, scans=scans)


# ---- TIFF -------------------------------------------------------------------------

_TILE_WIDTH, _TILE_LENGTH = 322, 323


def tiff_tile_size(tags: object) -> tuple[int, int] | None:
    """(TileWidth, TileLength) from a TIFF's tags (Pillow's ``tag_v2``), if it is tiled."""
    get = getattr(tags, "get", None)
    if get is None:
        return None
    width, length = get(_TILE_WIDTH), get(_TILE_LENGTH)
    if not isinstance(width, int) or not isinstance(length, int):
        return None
    return width, length
