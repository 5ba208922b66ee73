"""What a file's structure asks of a decoder, read from the bytes without decoding.

Some structures cost a decoder dearly however small the image is, and Pillow pays for
a few of them while it parses the header, before any image rule could look:

- PNG: every chunk carries a CRC (decoding ignores a broken IDAT checksum), and the
  spec allows one iCCP profile; Pillow inflates each one as it opens the file, so
  thousands of them took half a minute. The chunks are walked before Pillow sees them.
- JPEG: libjpeg walks the whole image once per scan (thousands of refinement scans in
  a small file take minutes), keeps every DCT coefficient of the image when there is
  more than one scan, and has no reduced-scale decode for a lossless frame.
- TIFF: libtiff allocates and fills a whole tile, or decodes a strip's raw samples
  into a buffer of their own, whatever the image's own size; and Pillow reads every
  strip's offset and length into Python objects as it opens the file (a million
  one-row strips took seconds and 400 MB before any rule ran). The first directory's
  block count is read before Pillow sees the file.
- BMP: Pillow decodes RLE8 and RLE4 in Python, a command and often a byte at a time
  (a row of one pixel and an end of line is padded with zeros byte by byte), so a few
  KB of run-length data take seconds; its header says which coding the pixels use.

``image_rules`` turns these facts into rejections; this module only reads them.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scones_core.errors import CorruptImage, ImageTooComplex, UnsupportedImageFormat

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Chunks the PNG specification allows once (the ones a decoder inflates or parses).
_PNG_ONCE = frozenset({b"IHDR", b"PLTE", b"iCCP", b"sRGB", b"gAMA", b"cHRM", b"eXIf", b"acTL"})
# The critical chunks (upper-case first letter) a PNG decoder knows; any other one changes
# how the image must be read, and the specification says not to show it (Apple's CgBI).
_PNG_CRITICAL = frozenset({b"IHDR", b"PLTE", b"IDAT", b"IEND"})
# Encoders split IDAT into chunks of 8-64 KB, so a 5 MiB PNG has a few hundred. Each chunk
# costs a step in Python here and in Pillow: 437,000 empty ones took 4 s of CPU.
MAX_PNG_CHUNKS = 20_000


def check_png_chunks(data: bytes) -> None:
    """Walk every chunk up to IEND: ``CorruptImage`` names a truncated chunk, a chunk
    whose CRC does not match, or a chunk the specification allows once given twice;
    ``UnsupportedImageFormat`` an unknown critical chunk; ``ImageTooComplex`` more than
    ``MAX_PNG_CHUNKS`` chunks."""
    pos = len(PNG_SIGNATURE)
    seen: set[bytes] = set()
    chunks = 0
    while True:
        chunks += 1
        if chunks > MAX_PNG_CHUNKS:
            raise ImageTooComplex(
                f"The PNG has more than {MAX_PNG_CHUNKS} chunks; each is read one at a time "
                "(save it again: encoders write a few hundred)."
            )
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
        if kind[:1].isupper() and kind not in _PNG_CRITICAL:
            raise UnsupportedImageFormat(
                f"The PNG has a critical chunk {_name(kind)} that standard PNG decoders do not "
                "know (Apple's CgBI, say); save it as a standard PNG."
            )
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
# Hierarchical (differential) frames: a process libjpeg never implemented.
HIERARCHICAL_SOF_MARKERS = frozenset({0xC5, 0xC6, 0xC7, 0xCD, 0xCE, 0xCF})
# Arithmetic coding: libjpeg decodes it only from one buffer, and Pillow feeds it in parts,
# so whether one decoded depended on its size (45 KB did, 78 KB did not).
ARITHMETIC_SOF_MARKERS = frozenset({0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
# JPEG-LS (ITU T.87) starts its frame with SOF55: a different codec in a JPEG wrapper.
JPEG_LS_SOF_MARKER = 0xF7
_SOS, _EOI = 0xDA, 0xD9
# Markers without a length: SOI, RST0-7 and TEM.
_STANDALONE = frozenset({0xD8, 0x01, *range(0xD0, 0xD8)})
# The next marker after entropy-coded data: the last 0xFF of a run (fill bytes may precede
# any marker) not followed by a stuffed 0x00 or RSTn, so FF FF D0 is a restart. Each
# pattern starts with a literal byte, which keeps the search at C speed (a leading
# \xff+ made the walk of a noisy 2.7 MB photo 30 times slower).
_NEXT_MARKER = re.compile(rb"\xff(?![\x00\xd0-\xd7\xff])")
_FILL = re.compile(rb"\xff+")
_RESTART = re.compile(rb"\xff[\xd0-\xd7]")
# libjpeg walks every block of the image once per scan. Encoders write up to a few
# dozen (a progressive JPEG from libjpeg has 10); thousands in a small file are a CPU
# bomb that would outlast the function's timeout.
MAX_JPEG_SCANS = 100
# Where a walk stops counting: past these, image_rules refuses the file whatever the rest
# holds, so a flood of scans, empty segments or padding costs the walk no more than this.
MAX_JPEG_SEGMENTS = 2_000
MAX_JPEG_PADDING_BYTES = 64 * 1024


@dataclass(frozen=True)
class JpegLayout:
    """The first image's frame type and size, and how many scans, marker segments, restart
    markers and bytes of padding (fill bytes, and bytes a decoder discards between
    segments) it has, up to its EOI."""

    frame_marker: int | None
    scans: int
    precision: int | None = None  # bits per sample, from the frame header
    size: tuple[int, int] | None = None  # (width, height) from the frame header
    segments: int = 0  # markers outside the scans, SOS excepted
    restarts: int = 0
    padding: int = 0

    @property
    def lossless(self) -> bool:
        return self.frame_marker in LOSSLESS_SOF_MARKERS

    @property
    def blocks(self) -> int | None:
        """8x8 blocks in one component of the frame: a restart interval holds at least one."""
        if self.size is None:
            return None
        width, height = self.size
        return -(-width // 8) * -(-height // 8)


def jpeg_layout(data: bytes) -> JpegLayout:
    """Walk the marker segments of the first image (a camera JPEG's preview images come
    after its EOI, inside or after it) as libjpeg and Pillow read them: a byte that is
    not a marker, and 0xFF 0x00 between segments, are discarded, not read as a segment.
    Never raises: what cannot be walked is left to the decoder, which names the damage.
    Stops counting past ``MAX_JPEG_SCANS`` scans, ``MAX_JPEG_SEGMENTS`` segments or
    ``MAX_JPEG_PADDING_BYTES``."""
    pos, frame, scans, precision, dimensions = 2, None, 0, None, None
    segments = restarts = padding = 0
    size = len(data)
    while (
        pos + 2 <= size
        and scans <= MAX_JPEG_SCANS
        and segments <= MAX_JPEG_SEGMENTS
        and padding <= MAX_JPEG_PADDING_BYTES
    ):
        if data[pos] != 0xFF:
            found = _NEXT_MARKER.search(data, pos)
            stop = size if found is None else found.start()
            padding += stop - pos
            pos = stop
            continue
        fill = _FILL.match(data, pos)
        if fill is not None and fill.end() - pos > 1:  # fill bytes before a marker
            padding += fill.end() - pos - 1
            pos = fill.end() - 1
            continue
        marker = data[pos + 1]
        if marker == 0x00:  # a stuffed zero outside a scan: discarded
            padding += 2
            pos += 2
            continue
        if marker == _EOI:
            break
        if marker in _STANDALONE:  # outside a scan, each one is a step of Pillow's parser
            segments += 1
            pos += 2
            continue
        if pos + 4 > size:
            break
        end = pos + 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if (marker in _SOF_MARKERS or marker == JPEG_LS_SOF_MARKER) and frame is None:
            frame = marker
            precision = data[pos + 4] if pos + 4 < size else None
            if pos + 9 <= size:
                height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
                dimensions = (width, height)
        if marker != _SOS:
            segments += 1
            pos = end
            continue
        scans += 1
        found = _NEXT_MARKER.search(data, end)
        stop = size if found is None else found.start()
        restarts += sum(1 for _ in _RESTART.finditer(data, end, stop))
        pos = stop
    return JpegLayout(
        frame_marker=frame,
        scans=scans,
        precision=precision,
        size=dimensions,
        segments=segments,
        restarts=restarts,
        padding=padding,
    )


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


_STRIP_OFFSETS, _TILE_OFFSETS = 273, 324
_ROWS_PER_STRIP, _BITS_PER_SAMPLE, _SAMPLES_PER_PIXEL, _PLANAR = 278, 258, 277, 284


def tiff_block_count(data: bytes) -> int:
    """How many strips or tiles the first image of a TIFF is stored in, read from its
    first directory (0 when the header cannot be read: Pillow then says what is wrong)."""
    order = "<" if data[:2] == b"II" else ">"
    try:
        (version,) = struct.unpack_from(order + "H", data, 2)
        if version == 42:
            (directory,) = struct.unpack_from(order + "I", data, 4)
            (entries,) = struct.unpack_from(order + "H", data, directory)
            entry, count_format, first = 12, "I", directory + 2
        elif version == 43:  # BigTIFF
            (directory,) = struct.unpack_from(order + "Q", data, 8)
            (entries,) = struct.unpack_from(order + "Q", data, directory)
            entry, count_format, first = 20, "Q", directory + 8
        else:
            return 0
        for at in range(first, first + min(entries, 4096) * entry, entry):
            (tag,) = struct.unpack_from(order + "H", data, at)
            if tag in (_STRIP_OFFSETS, _TILE_OFFSETS):
                return int(struct.unpack_from(order + count_format, data, at + 4)[0])
    except (struct.error, OverflowError):  # OverflowError: an offset past 2**63 (BigTIFF)
        return 0
    return 0


def tiff_strip_bytes(tags: object, size: tuple[int, int]) -> int:
    """The raw bytes of one strip of a strip-stored TIFF of ``size`` (Pillow's ``tag_v2``):
    what libtiff decodes a strip into before Pillow unpacks it. 0 for a tiled TIFF."""
    get = getattr(tags, "get", None)
    if get is None or tiff_tile_size(tags) is not None:
        return 0
    width, height = size
    rows = get(_ROWS_PER_STRIP)
    rows = min(rows, height) if isinstance(rows, int) and rows > 0 else height
    bits = get(_BITS_PER_SAMPLE) or (1,)
    bits = bits if isinstance(bits, tuple) else (bits,)
    samples = get(_SAMPLES_PER_PIXEL) or len(bits)
    per_sample = [b if isinstance(b, int) else 8 for b in bits] or [8]
    per_sample += [per_sample[-1]] * (samples - len(per_sample))
    # Separate planes: a strip holds one sample of each pixel.
    row_bits = width * (per_sample[0] if get(_PLANAR) == 2 else sum(per_sample[:samples]))
    return rows * -(-row_bits // 8)


# ---- BMP --------------------------------------------------------------------------

# BITMAPINFOHEADER's compression field: the run-length codings, which Pillow decodes in Python.
_BMP_RUN_LENGTH = {1: "RLE8", 2: "RLE4"}


def bmp_run_length(info: Mapping[Any, object]) -> str | None:
    """The run-length coding ("RLE8" or "RLE4") a BMP's header gives its pixels, from
    Pillow's ``info`` (read as it opens the file); ``None`` for any other coding."""
    compression = info.get("compression")
    return _BMP_RUN_LENGTH.get(compression) if isinstance(compression, int) else None
