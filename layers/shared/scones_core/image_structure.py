"""What a file's structure asks of a decoder, read from the bytes without decoding.

Some structures cost a decoder dearly however small the image is, and Pillow pays for
a few of them while it parses the header, before any image rule could look:

- PNG: every chunk carries a CRC (decoding ignores a broken IDAT checksum), and the
  spec allows one iCCP profile; Pillow inflates each one as it opens the file, so
  thousands of them took half a minute. The chunks are walked before Pillow sees them.
  Pillow also stops without a word where the image data's deflate stream ends, so the
  data must at least be able to hold the image (deflate shrinks at most 1032 times), and
  the stream must reach the image's end (bytes after it are never inflated).
- JPEG: libjpeg walks the whole image once per scan (thousands of refinement scans in
  a small file take minutes), keeps every DCT coefficient of the image when there is
  more than one scan, and has no reduced-scale decode for a lossless frame. It also
  fills a scan cut short with grey without a word Pillow passes on; restart markers,
  where a file has them, count how much of each scan is there, and every block takes
  at least a bit, which bounds how little data a whole image can have.
- Camera raw files (DNG, CR2) are TIFF structures that are not images to classify.
- TIFF: libtiff allocates and fills a whole tile, or decodes a strip's raw samples
  into a buffer of their own, whatever the image's own size; and Pillow reads every
  strip's offset and length into Python objects as it opens the file (a million
  one-row strips took seconds and 400 MB before any rule ran), and every number in the
  EXIF, GPS and Interoperability directories as it loads it (2 million rationals took
  14 s). The first directory's block count, and the numbers in each directory Pillow
  reads, are counted before Pillow sees the file. An EXIF block (a PNG's or a WebP's)
  is a TIFF structure too, whose first directory Pillow reads for the orientation.
- GIF: Pillow reads the blocks before the first image in Python, a sub-block or a
  stray byte at a time; they are walked before Pillow sees them.
- BMP: Pillow decodes RLE8 and RLE4 in Python, a command and often a byte at a time
  (a row of one pixel and an end of line is padded with zeros byte by byte), so a few
  KB of run-length data take seconds; its header says which coding the pixels use.

``image_rules`` turns these facts into rejections; the walks that refuse a structure
outright (``check_*``) raise the rejection themselves, the others only read.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterator, Mapping
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
        if kind in _PNG_EXIF_CARRIERS and (exif := _png_exif(kind, data[pos + 8 : end - 4])):
            check_exif_block(exif, "PNG's EXIF block")
        if kind == b"IEND":
            return
        pos = end


# Deflate's largest ratio: a 258-byte match in two bits (one-bit length and distance codes).
DEFLATE_MAX_RATIO = 1032
# Channels of each PNG colour type (grey, RGB, palette, grey + alpha, RGBA).
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def png_image_data(data: bytes) -> tuple[int, int]:
    """(bytes of the IDAT data Pillow reads, bytes the image inflates to at least, 0 when
    its header cannot say) of a PNG whose chunks ``check_png_chunks`` passed. Pillow
    stops, and says nothing, when the deflate stream ends before the image is full (the
    rest stays black). (An interlaced image inflates to more: more rows, each padded.)"""
    stored = sum(len(part) for part in _png_idat_run(data))
    header = data[16:29] if data[12:16] == b"IHDR" else b""
    if len(header) < 13 or header[9] not in _PNG_CHANNELS:
        return stored, 0
    width, height = struct.unpack(">II", header[:8])
    row = -(-width * header[8] * _PNG_CHANNELS[header[9]] // 8)
    return stored, height * (1 + row)  # each row: a filter byte, then its samples


def _png_idat_run(data: bytes) -> Iterator[memoryview]:
    """The payloads of the IDAT chunks Pillow reads as the image data: the first run of
    consecutive IDAT chunks before IEND (it stops at the first other chunk, and never
    reads past IEND)."""
    pos, view, started = len(PNG_SIGNATURE), memoryview(data), False
    while pos + 12 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        if kind == b"IDAT":
            started = True
            yield view[pos + 8 : pos + 8 + length]
        elif started or kind == b"IEND":
            return
        pos += 12 + length


# How much inflated data is held at once while a PNG's image data is measured.
_PNG_INFLATE_STEP = 1 << 20


def png_inflated_size(data: bytes, enough: int) -> int | None:
    """How many bytes the image data Pillow reads inflates to, counted up to ``enough``
    (a few MiB held at a time); None when the deflate stream is corrupt, which Pillow's
    decoder names itself. Bytes after the stream's end, in its chunk or in more IDAT
    chunks, inflate to nothing: Pillow ignores them."""
    inflater, produced = zlib.decompressobj(), 0
    try:
        for part in _png_idat_run(data):
            pending: bytes | memoryview = part
            while pending and not inflater.eof and produced < enough:
                produced += len(inflater.decompress(pending, _PNG_INFLATE_STEP))
                pending = inflater.unconsumed_tail
            if inflater.eof or produced >= enough:
                break
    except zlib.error:
        return None
    return produced


def _name(kind: bytes) -> str:
    """A chunk's type as people read it: its four letters, or its bytes in hex when they
    are not letters (a damaged type; never Python's ``b'IDA\\xab'``)."""
    return kind.decode("latin-1") if kind.isalpha() else f"0x{kind.hex()}"


# Chunks that may give Pillow's getexif() its EXIF block: eXIf, a tEXt chunk keyed "exif"
# (Pillow keeps its text as bytes), and ImageMagick's hex "Raw profile type exif" text.
_PNG_EXIF_CARRIERS = frozenset({b"eXIf", b"tEXt", b"zTXt", b"iTXt"})
_PNG_RAW_EXIF = b"Raw profile type exif"
# Pillow's MAX_TEXT_CHUNK: it refuses a compressed text that inflates to more.
_PNG_TEXT_LIMIT = 2**20


def _png_exif(kind: bytes, payload: bytes) -> bytes | None:
    """The EXIF block this chunk would give Pillow, or None."""
    if kind == b"eXIf":
        return payload
    keyword, _, text = payload.partition(b"\0")
    if kind == b"tEXt" and keyword == b"exif":
        return text
    if keyword != _PNG_RAW_EXIF:
        return None
    hex_text: bytes | None = text
    if kind == b"zTXt":
        hex_text = _inflate_text(text[1:])
    elif kind == b"iTXt":  # flag, method, language, translated keyword, text
        parts = text[2:].split(b"\0", 2)
        hex_text = None if len(parts) < 3 else parts[2]
        if hex_text is not None and text[:1] == b"\x01":
            hex_text = _inflate_text(hex_text)
    if hex_text is None:
        return None
    try:  # as Pillow reads it: three header lines, then hex digits
        return bytes.fromhex("".join(hex_text.decode("latin-1").split("\n")[3:]))
    except ValueError:
        return None


def _inflate_text(compressed: bytes) -> bytes | None:
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(compressed, _PNG_TEXT_LIMIT)
    except zlib.error:
        return None
    return None if inflater.unconsumed_tail else text


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
_SOS, _EOI, _DRI = 0xDA, 0xD9, 0xDD
# Markers without a length: SOI, RST0-7 and TEM.
_STANDALONE = frozenset({0xD8, 0x01, *range(0xD0, 0xD8)})
# The next marker after entropy-coded data: the last 0xFF of a run (fill bytes may precede
# any marker) not followed by a stuffed 0x00 or RSTn, so FF FF D0 is a restart. Each
# pattern starts with a literal byte, which keeps the search at C speed (a leading
# \xff+ made the walk of a noisy 2.7 MB photo 30 times slower).
_NEXT_MARKER = re.compile(rb"\xff(?![\x00\xd0-\xd7\xff])")
_FILL = re.compile(rb"\xff+")
# RST0-7. Counted with bytes.count, at C speed: a scan of nothing but restart markers
# (8 million in 16 MB) took the walk 1.8 s a match at a time.
_RESTARTS = tuple(bytes((0xFF, marker)) for marker in range(0xD0, 0xD8))
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
    # (scan, restart markers found, restart markers its MCUs need) for the first scan
    # that ends short of its restart intervals: the rest of the scan was cut off.
    short_scan: tuple[int, int, int] | None = None
    coded_bytes: int = 0  # entropy-coded data after the scan headers, markers within included
    # 8x8 blocks in all the frame's components (0 when not known). Huffman coding gives
    # each block's DC coefficient a code of at least one bit, in a sequential scan or in a
    # progressive file's first DC scan, so fewer than one bit a block means the data is
    # missing: libjpeg fills what it does not find with grey, and says nothing.
    frame_blocks: int = 0

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
    segments = restarts = padding = interval = coded = 0
    components: dict[int, tuple[int, int]] = {}
    short_scan = None
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
            precision, dimensions, components = _frame_header(data[pos + 4 : end])
        if marker == _DRI and pos + 6 <= size:
            interval = int.from_bytes(data[pos + 4 : pos + 6], "big")
        if marker != _SOS:
            segments += 1
            pos = end
            continue
        scans += 1
        found = _NEXT_MARKER.search(data, end)
        stop = size if found is None else found.start()
        in_scan = _restart_markers(data, end, stop)
        restarts, coded = restarts + in_scan, coded + max(0, stop - end)
        needed = _restarts_needed(dimensions, components, data[pos + 4 : end], interval)
        if short_scan is None and frame not in LOSSLESS_SOF_MARKERS and in_scan < needed:
            short_scan = (scans, in_scan, needed)
        pos = stop
    return JpegLayout(
        frame_marker=frame,
        scans=scans,
        precision=precision,
        size=dimensions,
        segments=segments,
        restarts=restarts,
        padding=padding,
        short_scan=short_scan,
        coded_bytes=coded,
        frame_blocks=sum(_scan_mcus(dimensions, components, bytes([c])) for c in components),
    )


def _restart_markers(data: bytes, start: int, stop: int) -> int:
    """RST0-7 markers in ``data[start:stop]``. A scan's 0xFF bytes are stuffed (FF 00)
    but for its restart markers (and fill bytes): when every one is stuffed there are
    none, found in two passes at C speed instead of one per marker (a photo without
    restart markers, the usual case, spent 11 ms of its 29 counting them)."""
    if data.count(b"\xff", start, stop) == data.count(b"\xff\x00", start, stop):
        return 0
    return sum(data.count(marker, start, stop) for marker in _RESTARTS)


def _frame_header(
    header: bytes,
) -> tuple[int | None, tuple[int, int] | None, dict[int, tuple[int, int]]]:
    """A frame header's sample precision, (width, height), and each component's sampling
    factors (H, V) by its id."""
    precision = header[0] if header else None
    size = None
    if len(header) >= 5:
        height, width = struct.unpack(">HH", header[1:5])
        size = (width, height)
    components = {
        header[at]: (header[at + 1] >> 4, header[at + 1] & 15)
        for at in range(6, len(header) - 2, 3)
    }
    return precision, size, components


def _restarts_needed(
    size: tuple[int, int] | None,
    components: dict[int, tuple[int, int]],
    scan_header: bytes,
    interval: int,
) -> int:
    """The restart markers a whole scan holds: one between each two of its restart intervals
    of ``interval`` MCUs (0 without restart intervals, or when its MCUs are not known)."""
    if not interval or not scan_header:
        return 0
    scan = scan_header[1 : 1 + 2 * scan_header[0] : 2]
    return max(0, _up(_scan_mcus(size, components, scan), interval) - 1)


def _scan_mcus(
    size: tuple[int, int] | None, components: dict[int, tuple[int, int]], scan: bytes
) -> int:
    """The MCUs a scan of these components codes (ITU T.81 A.2): in a scan of several, an
    MCU holds each one's H x V blocks; a scan of one codes each block of that component,
    whose size is the frame's scaled by its sampling factors. 0 when not known."""
    if size is None or not scan or any(c not in components for c in scan):
        return 0
    width, height = size
    h_max = max(h for h, _ in components.values())
    v_max = max(v for _, v in components.values())
    if h_max == 0 or v_max == 0:
        return 0
    if len(scan) > 1:
        return _up(width, 8 * h_max) * _up(height, 8 * v_max)
    h, v = components[scan[0]]
    return _up(_up(width * h, h_max), 8) * _up(_up(height * v, v_max), 8)


def _up(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


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
_STRIP_BYTE_COUNTS, _TILE_BYTE_COUNTS = 279, 325
# A 5000x5000 TIFF stored a row per strip has 5,000 strips, in 256x256 tiles 400. Pillow
# turns every strip's offset into Python objects as it opens the file: 65,536 take
# about 0.4 s of CPU and 50 MB, a million 3 s and 400 MB (and 10 s to load).
MAX_TIFF_BLOCKS = 65_536
_ROWS_PER_STRIP, _BITS_PER_SAMPLE, _SAMPLES_PER_PIXEL, _PLANAR = 278, 258, 277, 284


# The headers Pillow takes for a TIFF (its PREFIXES): the two standard ones, the two
# with a byte order the magic number contradicts (read as classic TIFFs), and BigTIFF's.
TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"MM*\x00", b"II\x00*", b"II+\x00", b"MM\x00+")


def tiff_headers(data: bytes) -> list[tuple[str, bool, int]]:
    """Each way the header may be read: (byte order, BigTIFF, first directory's offset).
    Pillow 13 takes a big-endian BigTIFF for a classic TIFF whose first directory's offset
    is in bytes 4-7 (it looks for 43 in the third byte), so that header is read both ways."""
    if not data.startswith(TIFF_SIGNATURES) or len(data) < 8:
        return []
    order = "<" if data[:2] == b"II" else ">"
    classic = (order, False, int(struct.unpack_from(order + "I", data, 4)[0]))
    if data[2:4] not in (b"+\x00", b"\x00+"):
        return [classic]
    readings = [classic] if order == ">" else []
    if len(data) >= 16:
        readings.append((order, True, int(struct.unpack_from(order + "Q", data, 8)[0])))
    return readings


def tiff_block_count(data: bytes) -> int:
    """How many strips or tiles the first image of a TIFF is stored in, read from its
    first directory (0 when the header cannot be read: Pillow then says what is wrong)."""
    counts = [0]
    for order, big, first in tiff_headers(data):
        for tag, _kind, count, _field in _tiff_entries(data, order, big, first):
            if tag in (_STRIP_OFFSETS, _TILE_OFFSETS):
                counts.append(count)
                break
    return max(counts)


# Camera raw files in a TIFF structure. A DNG (a phone's RAW or ProRAW photo) has the
# DNGVersion tag in its first directory, whose image is either the sensor's raw samples
# (which Pillow cannot read) or a small preview (which would be classified in the photo's
# place); a Canon CR2 says "CR", version 2, after its TIFF header. The other TIFF-based
# raws (Nikon NEF and NRW, Sony ARW, Pentax PEF, Samsung SRW) say nothing of the kind:
# their first directory holds the sensor's samples (Photometric CFA or LinearRaw), or a
# thumbnail marked reduced-resolution (NewSubfileType bit 0) with the photo in a SubIFD.
_DNG_VERSION = 50706
_CR2_MARK = b"CR\x02"
_NEW_SUBFILE_TYPE, _MAKE, _PHOTOMETRIC, _SUB_IFDS = 254, 271, 262, 330
_RAW_PHOTOMETRIC = frozenset({32803, 34892})  # CFA, LinearRaw
# A camera maker's raw format, by the first word of the Make tag.
_RAW_BY_MAKE = {"NIKON": "NEF", "SONY": "ARW", "PENTAX": "PEF", "RICOH": "PEF", "SAMSUNG": "SRW"}


def tiff_camera_raw(data: bytes) -> str | None:
    """The camera raw format of a file with a TIFF header ("DNG", "CR2", "NEF", ...;
    "TIFF-based" for a maker not named here), or ``None``."""
    if data.startswith(b"II*\x00") and data[8:11] == _CR2_MARK:
        return "CR2"
    for order, big, entries in _first_directories(data):
        if _DNG_VERSION in entries:
            return "DNG"
        photometric = _tiff_integer(order, entries.get(_PHOTOMETRIC))
        subfile = _tiff_integer(order, entries.get(_NEW_SUBFILE_TYPE)) or 0
        if photometric in _RAW_PHOTOMETRIC or (subfile & 1 and _SUB_IFDS in entries):
            make = _tiff_ascii(data, order, big, entries.get(_MAKE)).upper().split()
            return _RAW_BY_MAKE.get(make[0] if make else "", "TIFF-based")
    return None


_Entry = tuple[int, int, bytes]  # field type, count, the entry's value field


def _first_directories(data: bytes) -> Iterator[tuple[str, bool, dict[int, _Entry]]]:
    """For each way the header may be read: (byte order, BigTIFF, the first directory's
    entries by tag)."""
    for order, big, first in tiff_headers(data):
        entries = _tiff_entries(data, order, big, first)
        yield order, big, {tag: (kind, count, field) for tag, kind, count, field in entries}


def _tiff_integer(order: str, entry: _Entry | None) -> int | None:
    """The value of a one-integer tag stored in its entry, or ``None``."""
    if entry is None or entry[1] != 1 or entry[0] not in (3, 4, 16):
        return None
    kind, _count, field = entry
    fmt = order + _TIFF_INTEGER_FORMATS[kind]
    if struct.calcsize(fmt) > len(field):  # a LONG8 in a classic entry: not stored in it
        return None
    return int(struct.unpack_from(fmt, field)[0])


def _tiff_integers(
    data: bytes, order: str, big: bool, entry: _Entry | None, limit: int = 16
) -> list[int]:
    """The first ``limit`` values of a SHORT or LONG tag, in its entry or where it points
    (``[]`` when absent or outside the file)."""
    if entry is None or entry[0] not in (3, 4):
        return []
    kind, count, field = entry
    unit, count = _TIFF_TYPE_BYTES[kind], min(count, limit)
    stored = field
    if count * unit > len(field):
        at = _stored_at(order, big, field)
        stored = data[at : at + count * unit]
    count = min(count, len(stored) // unit)
    return list(struct.unpack_from(f"{order}{count}{_TIFF_INTEGER_FORMATS[kind]}", stored))


_BITS_PER_SAMPLE, _SAMPLE_FORMAT = 258, 339
_PHOTOMETRIC_NAMES = {0: "grey", 1: "grey", 2: "RGB", 3: "palette", 5: "CMYK", 6: "YCbCr"}
_PHOTOMETRIC_NAMES |= {8: "CIELab", 9: "ICCLab", 10: "ITULab"}
_SAMPLE_FORMAT_NAMES = {1: "unsigned integer", 2: "signed integer", 3: "floating-point"}


def tiff_sample_layout(data: bytes) -> str | None:
    """How the first image of a TIFF stores its pixels, in words ("RGB in 32-bit
    floating-point samples"), or ``None`` when its directory does not say, or is cut off
    (an interrupted upload: Pillow drops a tag whose values lie past the end of the file,
    and a layout read from what is left would be wrong)."""
    for order, big, first in tiff_headers(data):
        if not _tiff_directory_whole(data, order, big, first):
            continue
        entries = {
            tag: (kind, count, field)
            for tag, kind, count, field in _tiff_entries(data, order, big, first)
        }
        photometric = _tiff_integer(order, entries.get(_PHOTOMETRIC))
        bits = sorted(set(_tiff_integers(data, order, big, entries.get(_BITS_PER_SAMPLE)))) or [1]
        formats = set(_tiff_integers(data, order, big, entries.get(_SAMPLE_FORMAT))) or {1}
        if photometric is None:
            continue
        colour = _PHOTOMETRIC_NAMES.get(photometric, f"photometric {photometric}")
        extra = " with extra channels" if 338 in entries else ""
        size = " and ".join(str(b) for b in bits)
        kind = " and ".join(_SAMPLE_FORMAT_NAMES.get(f, f"format {f}") for f in sorted(formats))
        return f"{colour}{extra} in {size}-bit {kind} samples"
    return None


def _tiff_ascii(data: bytes, order: str, big: bool, entry: _Entry | None) -> str:
    """An ASCII tag's text up to its first NUL ("" when absent or outside the file)."""
    if entry is None or entry[0] != 2:
        return ""
    _kind, count, field = entry
    if count <= len(field):
        raw = field[:count]
    else:
        at = _stored_at(order, big, field)
        raw = data[at : at + min(count, 256)]
    return raw.split(b"\0", 1)[0].decode("latin-1")


# ---- TIFF directories, and EXIF blocks (a TIFF structure of their own) ----------

# Bytes a value of each field type takes: the types Pillow reads (it skips the others).
_TIFF_TYPE_BYTES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8}
_TIFF_TYPE_BYTES |= {13: 4, 16: 8}
# BYTE, ASCII and UNDEFINED: Pillow keeps such a tag as one bytes or str object, however
# long it is (a maker note, an ICC profile, XMP), so its length costs a copy, not a step.
_TIFF_BYTE_TYPES = frozenset({1, 2, 7})
_TIFF_RATIONAL_TYPES = frozenset({5, 10})
# Integer types, by struct format: what a directory pointer or a block array may be.
_TIFF_INTEGER_FORMATS = {3: "H", 4: "I", 8: "h", 9: "i", 13: "I", 16: "Q"}
# The directories Pillow reads whole as it loads a TIFF (``load_end`` reads every tag of
# the EXIF, GPS and Interoperability ones into Python objects), and where it finds them:
# the first directory points to the EXIF and GPS ones, the EXIF one to Interoperability.
_TIFF_SUB_DIRECTORIES = {
    "first": ((34665, "EXIF"), (34853, "GPS")),
    "EXIF": ((40965, "Interoperability"),),
}
_TIFF_BLOCK_ARRAYS = frozenset(
    {_STRIP_OFFSETS, _STRIP_BYTE_COUNTS, _TILE_OFFSETS, _TILE_BYTE_COUNTS}
)
_TIFF_ENTRY = {False: (12, "HHI4s"), True: (20, "HHQ8s")}  # bytes, struct format
_EXIF_PREFIX = b"Exif\x00\x00"
# Entries in one directory. A camera's first directory has a few dozen and its EXIF one
# about fifty (TIFF, EXIF and DNG define a few hundred tags in all). Pillow reads each
# entry in Python, and BigTIFF's 64-bit count lets a 16 MB file declare 800,000 of them;
# ``tiff_block_count`` looks no further than this for the strip offsets either.
MAX_TIFF_DIRECTORY_ENTRIES = 4096
# Numbers in one directory's tags (BYTE, ASCII and UNDEFINED tags aside, see above).
# Pillow makes a Python object of each number it reads: 0.1-0.25 us each, and 3.4 us for
# a rational, which becomes a Fraction (measured, Pillow 13). A 16 MB EXIF directory of
# 2 million rationals took 14 s and 600 MB; one directory pointed to three times, three
# times that. Real directories hold a few hundred numbers (a camera's EXIF block is a few
# KB to a few hundred KB, most of it the maker note, which is bytes); the longest arrays a
# TIFF may carry are a 16-bit image's transfer function (3 x 65,536 numbers) and a
# GeoTIFF's tie points (6 a point). A rational counts as TIFF_RATIONAL_COST numbers (its
# measured cost, rounded up), so at most 8,192 of them: at the budget a directory costs
# Pillow about 0.06 s, and a TIFF has at most four such directories. The main image's
# strip or tile offsets and byte counts are not counted up to MAX_TIFF_BLOCKS each: the
# block count bounds them.
MAX_TIFF_DIRECTORY_VALUES = 262_144
TIFF_RATIONAL_COST = 32


def check_tiff_directories(data: bytes, what: str = "TIFF", *, bigtiff: bool = True) -> None:
    """Walk a TIFF structure's first directory and the EXIF, GPS and Interoperability
    directories it leads to, as Pillow finds them, before Pillow reads them.

    ``ImageTooComplex`` names a directory of more than ``MAX_TIFF_DIRECTORY_ENTRIES``
    entries or ``MAX_TIFF_DIRECTORY_VALUES`` numbers; ``CorruptImage`` a directory two
    pointers lead to (Pillow reads it again for each: a pointer back to the first
    directory, or EXIF, GPS and Interoperability all naming one, multiply its cost).
    ``what`` names the structure in the reason ("TIFF", "PNG's EXIF block"); ``bigtiff``
    False leaves a BigTIFF reading alone (Pillow cannot read one in an EXIF block). What
    cannot be read is left to Pillow, which names it, or ignores it in an EXIF block.
    Every reading of the header ``tiff_headers`` gives is walked."""
    for order, big, first in tiff_headers(data):
        if bigtiff or not big:
            _walk_tiff_directories(data, order, big, first, what)


def _walk_tiff_directories(data: bytes, order: str, big: bool, first: int, what: str) -> None:
    seen = {first: "first"}
    pending = [(first, "first")]
    while pending:
        offset, name = pending.pop()
        entries = _tiff_entries(data, order, big, offset)
        if len(entries) > MAX_TIFF_DIRECTORY_ENTRIES:
            raise ImageTooComplex(
                f"The {what}'s {name} directory has more than {MAX_TIFF_DIRECTORY_ENTRIES} "
                "entries, each read one at a time (real ones have a few dozen)."
            )
        numbers, rationals, pointers = _tiff_directory_values(data, order, big, entries, name)
        if numbers + rationals * TIFF_RATIONAL_COST > MAX_TIFF_DIRECTORY_VALUES:
            raise ImageTooComplex(
                f"The {what}'s {name} directory holds {numbers} numbers and {rationals} "
                f"fractions, each read into an object; at most {MAX_TIFF_DIRECTORY_VALUES} "
                f"numbers are, a fraction counting {TIFF_RATIONAL_COST} (save it without "
                "that metadata)."
            )
        for tag, child in _TIFF_SUB_DIRECTORIES.get(name, ()):
            at = pointers.get(tag)
            if at is None:
                continue
            if at in seen:
                raise CorruptImage(
                    f"The {what} is corrupt: its {child} directory pointer leads back to its "
                    f"{seen[at]} directory, which would be read again."
                )
            seen[at] = child
            pending.append((at, child))


def check_exif_block(block: bytes, what: str) -> None:
    """``check_tiff_directories`` on an EXIF block (a PNG's eXIf chunk, a WebP's EXIF
    chunk), after the "Exif" prefixes Pillow strips. Pillow reads such a block's first
    directory when the image rules ask for its Orientation tag, however large the tag."""
    for _ in range(2):
        if block.startswith(_EXIF_PREFIX):
            block = block[len(_EXIF_PREFIX) :]
    check_tiff_directories(block, what, bigtiff=False)


def _tiff_entries(
    data: bytes, order: str, big: bool, offset: int
) -> list[tuple[int, int, int, bytes]]:
    """The entries of the directory at ``offset`` that lie in the file (Pillow reads them
    until the file ends), at most one past ``MAX_TIFF_DIRECTORY_ENTRIES``."""
    size, entry = _TIFF_ENTRY[big]
    count_size = 8 if big else 2
    if offset + count_size > len(data):
        return []
    (declared,) = struct.unpack_from(order + ("Q" if big else "H"), data, offset)
    first = offset + count_size
    present = min(declared, (len(data) - first) // size, MAX_TIFF_DIRECTORY_ENTRIES + 1)
    return list(struct.iter_unpack(order + entry, data[first : first + present * size]))


def _stored_at(order: str, big: bool, field: bytes) -> int:
    """Where an entry whose values do not fit in it stores them (its field is an offset)."""
    return int(struct.unpack(order + ("Q" if big else "I"), field)[0])


def _tiff_directory_whole(data: bytes, order: str, big: bool, offset: int) -> bool:
    """Whether every entry the directory at ``offset`` declares, and every value stored
    outside an entry, lies in the file."""
    count_size = 8 if big else 2
    if offset + count_size > len(data):
        return False
    (declared,) = struct.unpack_from(order + ("Q" if big else "H"), data, offset)
    entries = _tiff_entries(data, order, big, offset)
    if len(entries) < min(declared, MAX_TIFF_DIRECTORY_ENTRIES + 1):
        return False
    for _tag, kind, count, field in entries:
        unit = _TIFF_TYPE_BYTES.get(kind, 0)
        if count * unit > len(field):
            at = _stored_at(order, big, field)
            if at + count * unit > len(data):
                return False
    return True


def _tiff_directory_values(
    data: bytes, order: str, big: bool, entries: list[tuple[int, int, int, bytes]], name: str
) -> tuple[int, int, dict[int, int]]:
    """How many numbers and rationals a directory's tags hold (as
    ``MAX_TIFF_DIRECTORY_VALUES`` counts them), and the single-integer tags' values
    (where sub-directory pointers are)."""
    numbers, rationals, pointers = 0, 0, dict[int, int]()
    for tag, kind, count, field in entries:
        unit = _TIFF_TYPE_BYTES.get(kind)
        if unit is None or count == 0:
            continue
        stored = field
        if count * unit > len(field):  # stored elsewhere: Pillow skips it past the file's end
            at = _stored_at(order, big, field)
            if at + count * unit > len(data):
                continue
            stored = data[at : at + unit]
        integer = _TIFF_INTEGER_FORMATS.get(kind)
        if count == 1 and integer is not None:
            pointers.setdefault(tag, struct.unpack_from(order + integer, stored)[0])
        if kind in _TIFF_BYTE_TYPES:
            continue
        counted = count
        if name == "first" and tag in _TIFF_BLOCK_ARRAYS and integer is not None:
            counted = max(0, count - MAX_TIFF_BLOCKS)
        if kind in _TIFF_RATIONAL_TYPES:
            rationals += counted
        else:
            numbers += counted
    return numbers, rationals, {tag: at for tag, at in pointers.items() if at >= 0}


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


# ---- WebP -------------------------------------------------------------------------

# Top-level chunks of an extended (VP8X) WebP: a header, a profile, EXIF, XMP, and one
# ANMF chunk a frame; walking them is a step each in Python, so a flood of empty chunks
# in front of an EXIF chunk would cost the walk what the EXIF check saves.
MAX_WEBP_CHUNKS = 65_536


def check_webp_exif(data: bytes) -> None:
    """``check_exif_block`` on an extended WebP's first EXIF chunk, the one Pillow reads
    (a simple WebP, one VP8 or VP8L chunk, carries none); ``ImageTooComplex`` past
    ``MAX_WEBP_CHUNKS`` chunks before it."""
    if data[12:16] != b"VP8X":
        return
    end = min(len(data), 8 + int.from_bytes(data[4:8], "little"))
    pos, chunks = 12, 0
    while pos + 8 <= end:
        chunks += 1
        if chunks > MAX_WEBP_CHUNKS:
            raise ImageTooComplex(
                f"The WebP has more than {MAX_WEBP_CHUNKS} chunks; encoders write a few, "
                "and one a frame."
            )
        length = int.from_bytes(data[pos + 4 : pos + 8], "little")
        if data[pos : pos + 4] == b"EXIF":
            check_exif_block(data[pos + 8 : pos + 8 + length], "WebP's EXIF block")
            return
        pos += 8 + length + (length & 1)


# ---- GIF --------------------------------------------------------------------------

# Pillow reads a GIF's blocks up to its first image in Python as it opens the file: each
# extension sub-block (keeping a comment's), and each stray byte between blocks, one at a
# time. 8 million one-byte comment sub-blocks took 3.3 s and 900 MB; 16 MB of stray
# zeros 3.1 s. Ordinary extensions take a sub-block or two (graphic control, the NETSCAPE
# loop), and encoders fill sub-blocks to 255 bytes, so even 16 MB of comment or ICC
# profile is 65,536 of them (XMP, read as if it were sub-blocks, a few a hundred bytes):
# at the budget Pillow takes about 30 ms. Stray bytes: none in an encoder's output.
MAX_GIF_SUB_BLOCKS = 65_536
MAX_GIF_PADDING_BYTES = 64 * 1024
_GIF_EXTENSION, _GIF_IMAGE, _GIF_TRAILER = 0x21, 0x2C, 0x3B
_GIF_BLOCK = re.compile(rb"[!,;]")


def check_gif_blocks(data: bytes) -> None:
    """Walk a GIF's blocks as Pillow does as it opens the file, from the header up to the
    first image descriptor (Pillow decodes the image's data in C): ``ImageTooComplex``
    past ``MAX_GIF_SUB_BLOCKS`` extension sub-blocks or ``MAX_GIF_PADDING_BYTES`` stray
    bytes. What cannot be walked (a truncated block, no image) is left to Pillow."""
    if len(data) < 13:
        return
    flags = data[10]
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    size, blocks, padding = len(data), 0, 0
    while pos < size:
        introducer = data[pos]
        if introducer in (_GIF_IMAGE, _GIF_TRAILER):
            return
        if introducer != _GIF_EXTENSION:  # stray bytes, which Pillow skips one at a time
            found = _GIF_BLOCK.search(data, pos)
            stop = size if found is None else found.start()
            padding += stop - pos
            if padding > MAX_GIF_PADDING_BYTES:
                raise ImageTooComplex(
                    f"The GIF has more than {MAX_GIF_PADDING_BYTES} bytes between its blocks, "
                    "which a decoder reads and discards a byte at a time."
                )
            pos = stop
            continue
        pos += 2  # the introducer and the label; then sub-blocks up to an empty one
        while pos < size:
            blocks += 1
            if blocks > MAX_GIF_SUB_BLOCKS:
                raise ImageTooComplex(
                    f"The GIF has more than {MAX_GIF_SUB_BLOCKS} extension blocks before its "
                    "image, each read one at a time (encoders write a few)."
                )
            length = data[pos]
            pos += 1 + length
            if length == 0:
                break


# ---- BMP --------------------------------------------------------------------------

# BITMAPINFOHEADER's compression field: the run-length codings, which Pillow decodes in Python.
_BMP_RUN_LENGTH = {1: "RLE8", 2: "RLE4"}


def bmp_run_length(info: Mapping[Any, object]) -> str | None:
    """The run-length coding ("RLE8" or "RLE4") a BMP's header gives its pixels, from
    Pillow's ``info`` (read as it opens the file); ``None`` for any other coding."""
    compression = info.get("compression")
    return _BMP_RUN_LENGTH.get(compression) if isinstance(compression, int) else None
