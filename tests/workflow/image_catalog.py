"""A catalog of uploads, built in code: every image rule, and valid but unusual images.

Each entry is one upload and the record it must end in. Valid unusual files name
the plain PNG they were made from and say whether the model must see exactly the
same input (lossless conversions) or only give the same label (lossy ones).
The domain tests run the catalog through ``serialize_object``; the end-to-end
test uploads it to the offline stack.
"""

from __future__ import annotations

import gzip
import io
import random
import struct
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import pillow_heif
from heif_files import hevc_tile
from PIL import Image, ImageCms, TiffImagePlugin

from scones.cli.bench_serialize import float_pipeline, with_tag
from scones.heic_writer import Item, grid_heic, heic_file, ispe

SAME_INPUT = "same model input"
SAME_LABEL = "same label"


@dataclass(frozen=True)
class Entry:
    name: str
    key: str  # under the incoming prefix
    data: bytes
    status: str  # "CLASSIFIED" (ACCEPTED or NEEDS_REVIEW) or "REJECTED"
    error_code: str = ""
    reason_words: str = ""  # a fragment the reason must contain
    source: bytes = b""  # the plain PNG a valid file was made from
    compare: str = ""  # SAME_INPUT or SAME_LABEL


def encode(image: Image.Image, fmt: str = "PNG", **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def tar_signed_checksum(member: bytes) -> bytes:
    """A tar archive of ``member`` named "vélo.png" (bytes over 127 in its header), its
    header checksum summed as signed bytes, as older tars (Sun's) wrote it."""
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("vélo.png")
        info.size = len(member)
        tar.addfile(info, io.BytesIO(member))
    data = bytearray(archive.getvalue())
    header = data[:148] + b" " * 8 + data[156:512]
    signed = sum(byte - 256 if byte > 127 else byte for byte in header)
    assert signed != sum(header)
    data[148:156] = b"%06o\0 " % signed
    return bytes(data)


def png_with_text(data: bytes, text: str) -> bytes:
    """``data`` (a PNG) with a tEXt "Comment" chunk right after its IHDR."""
    return data[:33] + png_chunk(b"tEXt", b"Comment\0" + text.encode("latin-1")) + data[33:]


def png_with_bad_crc(data: bytes) -> bytes:
    broken = bytearray(data)
    at = broken.find(b"IDAT")
    length = int.from_bytes(broken[at - 4 : at], "big")
    broken[at + 4 + length] ^= 0xFF  # first byte of the IDAT chunk's CRC
    return bytes(broken)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload).to_bytes(4, "big")
    return len(payload).to_bytes(4, "big") + kind + payload + crc


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG of ``width`` x ``height`` black 1-bit pixels: tiny on disk, huge decoded."""
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([1, 0, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", body)
        + png_chunk(b"IEND", b"")
    )


def png_with_profiles(data: bytes, count: int) -> bytes:
    """``data`` with ``count`` iCCP chunks after its IHDR (PNG allows one; Pillow inflates
    each as it opens the file, so thousands of them were a CPU bomb)."""
    profile = png_chunk(b"iCCP", b"icc\x00\x00" + zlib.compress(bytes(1024)))
    return data[:33] + profile * count + data[33:]


def png_with_comment(data: bytes, inflated: int) -> bytes:
    """``data`` with a compressed comment (zTXt) after its IHDR that inflates to
    ``inflated`` bytes: a few KB on disk."""
    comment = png_chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(b"a" * inflated, 9))
    return data[:33] + comment + data[33:]


def jpeg_with_frame(data: bytes, marker: int, precision: int = 8) -> bytes:
    """A baseline JPEG whose frame header says another coding process or sample
    precision (the entropy-coded data stays baseline: the header alone decides)."""
    at = data.index(b"\xff\xc0")
    return (
        data[: at + 1]
        + bytes([marker])
        + data[at + 2 : at + 4]
        + bytes([precision])
        + data[at + 5 :]
    )


def jpeg_with_scans(image: Image.Image, scans: int) -> bytes:
    """A progressive JPEG of ``image`` whose last refinement scan is repeated until the
    file has ``scans`` scans (each one makes libjpeg re-read the whole image)."""
    data = encode(image, "JPEG", progressive=True)
    last = data.rindex(b"\xff\xda")
    have = data.count(b"\xff\xda")  # FF is always followed by 00 inside entropy data
    return data[:-2] + data[last:-2] * (scans - have) + data[-2:]


def _jpeg_segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def jpeg_scan_per_component(width: int, height: int) -> bytes:
    """A uniform grey baseline (not progressive) YCbCr JPEG whose three components are
    coded in three scans: libjpeg then keeps every DCT coefficient, as for a progressive
    file. One-code Huffman tables make each block two zero bits."""
    blocks = ((width + 7) // 8) * ((height + 7) // 8)
    assert blocks % 4 == 0, "whole bytes of two-bit blocks"
    components = b"".join(bytes([c, 0x11, 0]) for c in (1, 2, 3))
    one_code = bytes([1] + [0] * 15)  # one code of length 1: "0"
    data = (
        b"\xff\xd8"
        + _jpeg_segment(0xDB, b"\x00" + bytes([1] * 64))
        + _jpeg_segment(0xC0, struct.pack(">BHHB", 8, height, width, 3) + components)
        + _jpeg_segment(0xC4, b"\x00" + one_code + b"\x00" + b"\x10" + one_code + b"\x00")
    )
    for component in (1, 2, 3):
        data += _jpeg_segment(0xDA, bytes([1, component, 0x00, 0, 63, 0])) + bytes(blocks // 4)
    return data + b"\xff\xd9"


def lossless_jpeg(width: int, height: int) -> bytes:
    """A uniform grey lossless JPEG (SOF3, predictor 1): every difference is the one
    one-bit code "0" (category 0)."""
    assert (width * height) % 8 == 0
    one_code = bytes([1] + [0] * 15)
    return (
        b"\xff\xd8"
        + _jpeg_segment(0xC3, struct.pack(">BHHB", 8, height, width, 1) + bytes([1, 0x11, 0]))
        + _jpeg_segment(0xC4, b"\x00" + one_code + b"\x00")
        + _jpeg_segment(0xDA, bytes([1, 1, 0x00, 1, 0, 0]))
        + bytes(width * height // 8)
        + b"\xff\xd9"
    )


def tiff_with_tiles(width: int, height: int, tile: int) -> bytes:
    """A deflate RGB TIFF of ``width`` x ``height`` that declares one ``tile`` x ``tile``
    tile: libtiff would allocate the whole tile, whatever the image's size."""
    data = zlib.compress(bytes(64))
    entries = [  # (tag, type, count, value); type 3 SHORT, 4 LONG
        (256, 4, 1, width),
        (257, 4, 1, height),
        (258, 3, 3, 0),  # bits per sample: at bits_at, filled below
        (259, 3, 1, 8),  # deflate
        (262, 3, 1, 2),  # RGB
        (277, 3, 1, 3),
        (284, 3, 1, 1),
        (322, 4, 1, tile),
        (323, 4, 1, tile),
        (324, 4, 1, 0),  # tile offset: at data_at
        (325, 4, 1, len(data)),
    ]
    ifd_at = 8
    bits_at = ifd_at + 2 + 12 * len(entries) + 4
    data_at = bits_at + 6
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, declared in entries:
        value = {258: bits_at, 324: data_at}.get(tag, declared)
        if kind == 3 and count == 1:
            ifd += struct.pack("<HHIHH", tag, kind, count, value, 0)
        else:
            ifd += struct.pack("<HHII", tag, kind, count, value)
    ifd += struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", ifd_at) + ifd + struct.pack("<HHH", 8, 8, 8) + data


def tiff_in_strips(
    width: int,
    height: int,
    rows_per_strip: int,
    *,
    samples: int = 1,
    bits: int = 8,
    extra_tags: tuple[tuple[int, int, list[int]], ...] = (),
) -> bytes:
    """A little-endian TIFF stored in strips of ``rows_per_strip`` rows, every strip the
    same deflated zeros (16-bit RGBA when ``samples`` is 4 and ``bits`` 16), with
    ``extra_tags`` (SHORT or LONG) in its directory too."""
    strips = -(-height // rows_per_strip)
    data = zlib.compress(bytes(width * samples * bits // 8 * rows_per_strip))
    entries: list[tuple[int, int, list[int]]] = [  # (tag, type, values); 3 SHORT, 4 LONG
        (256, 4, [width]),
        (257, 4, [height]),
        (258, 3, [bits] * samples),
        (259, 3, [8]),  # deflate
        (262, 3, [1 if samples == 1 else 2]),
        (273, 4, [0] * strips),  # offsets: filled below
        (277, 3, [samples]),
        (278, 4, [rows_per_strip]),
        (279, 4, [len(data)] * strips),
    ]
    if samples == 4:
        entries.append((338, 3, [2]))  # unassociated alpha
    entries = sorted(entries + list(extra_tags))
    data_at = 8
    ifd_at = data_at + len(data) + len(data) % 2
    extra_at = ifd_at + 2 + 12 * len(entries) + 4
    ifd, extra = struct.pack("<H", len(entries)), b""
    for tag, kind, declared in entries:
        values = [data_at] * strips if tag == 273 else declared
        packed = b"".join(struct.pack("<H" if kind == 3 else "<I", v) for v in values)
        if len(packed) <= 4:
            ifd += struct.pack("<HHI", tag, kind, len(values)) + packed.ljust(4, b"\0")
        else:
            ifd += struct.pack("<HHII", tag, kind, len(values), extra_at + len(extra))
            extra += packed
    ifd += struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", ifd_at) + data + b"\0" * (len(data) % 2) + ifd + extra


def bmp_rle(size: tuple[int, int], palette: list[int], body: bytes, *, rle4: bool = False) -> bytes:
    """A BMP (BITMAPINFOHEADER) whose pixel data is ``body``, coded RLE4 or RLE8 with
    ``palette`` (flat RGB). Pillow cannot write run-length BMPs."""
    colours = len(palette) // 3
    red, green, blue = palette[0::3], palette[1::3], palette[2::3]
    table = b"".join(bytes(bgr) + b"\0" for bgr in zip(blue, green, red, strict=True))
    info = struct.pack(
        "<IiiHHIIiiII",
        40,
        *size,
        1,
        4 if rle4 else 8,
        2 if rle4 else 1,
        len(body),
        2835,
        2835,
        colours,
        0,
    )
    offset = 14 + len(info) + len(table)
    return b"BM" + struct.pack("<IHHI", offset + len(body), 0, 0, offset) + info + table + body


def bmp_with_alpha_mask(image: Image.Image, alpha: int) -> bytes:
    """``image`` (RGB) as a 32-bit BMP with a BITMAPV5HEADER whose masks are A8R8G8B8,
    every pixel's alpha byte ``alpha``. Pillow writes no alpha mask itself."""
    width, height = image.size
    rgba = Image.merge("RGBA", (*image.convert("RGB").split(), Image.new("L", image.size, alpha)))
    # Each pixel a little-endian word A<<24 | R<<16 | G<<8 | B; BMP rows run bottom-up.
    body = rgba.transpose(Image.Transpose.FLIP_TOP_BOTTOM).tobytes("raw", "BGRA")
    info = struct.pack("<IiiHHIIiiII", 124, width, height, 1, 32, 3, len(body), 2835, 2835, 0, 0)
    info += struct.pack("<IIII", 0xFF0000, 0xFF00, 0xFF, 0xFF000000)
    info += b"BGRs" + bytes(48) + struct.pack("<IIII", 4, 0, 0, 0)  # sRGB, perceptual
    offset = 14 + len(info)
    return b"BM" + struct.pack("<IHHI", offset + len(body), 0, 0, offset) + info + body


def bmp_run_length(image: Image.Image, *, rle4: bool = False, tail: bytes = b"") -> bytes:
    """``image`` (mode P, at most 16 colours for RLE4) as a run-length BMP: runs of equal
    pixels, an end of line per row and an end of bitmap, then ``tail`` (bytes a decoder
    never reads)."""
    width, height = image.size
    pixels = image.tobytes()
    body = bytearray()
    for y in reversed(range(height)):  # BMP rows run bottom-up
        row = pixels[y * width : (y + 1) * width]
        x = 0
        while x < width:
            run = 1
            while x + run < width and run < 255 and row[x + run] == row[x]:
                run += 1
            body += bytes([run, row[x] * 0x11 if rle4 else row[x]])
            x += run
        body += b"\0\0"
    entries = (16 if rle4 else 256) * 3
    palette = ((image.getpalette() or []) + [0] * entries)[:entries]
    return bmp_rle(image.size, palette, bytes(body) + b"\0\1" + tail, rle4=rle4)


def bmp_rle_bomb(width: int, height: int, *, rle4: bool = False) -> bytes:
    """A few KB of RLE that Pillow's Python decoder takes seconds over: each row one pixel
    and an end of line, which it pads with zeros a byte at a time."""
    body = b"\1\7\0\0" * height + b"\0\1"
    return bmp_rle((width, height), [0, 0, 0] * (16 if rle4 else 256), body, rle4=rle4)


def png_keyed(
    rows: list[list[int]] | list[list[tuple[int, ...]]], depth: int, key: int | tuple[int, ...]
) -> bytes:
    """A grey (int samples) or RGB (tuples) PNG of ``depth`` bits a sample whose tRNS
    chunk makes the colour ``key`` transparent. Pillow writes neither 2- and 4-bit grey
    nor 16-bit RGB."""
    rgb = isinstance(rows[0][0], tuple)
    width, height = len(rows[0]), len(rows)
    packed = b""
    for row in rows:
        samples = [s for pixel in row for s in (pixel if isinstance(pixel, tuple) else (pixel,))]
        if depth == 16:
            data = struct.pack(f">{len(samples)}H", *samples)
        else:
            bits = "".join(format(s, f"0{depth}b") for s in samples)
            bits += "0" * (-len(bits) % 8)
            data = int(bits, 2).to_bytes(len(bits) // 8, "big")
        packed += b"\0" + data
    keys = key if isinstance(key, tuple) else (key,)
    header = struct.pack(">IIBBBBB", width, height, depth, 2 if rgb else 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"tRNS", struct.pack(f">{len(keys)}H", *keys))
        + png_chunk(b"IDAT", zlib.compress(packed))
        + png_chunk(b"IEND", b"")
    )


def tiff_planar_16(image: Image.Image, *, big_endian: bool) -> bytes:
    """``image`` (RGB or CMYK) as an uncompressed TIFF of 16-bit samples stored a channel
    at a time (PlanarConfiguration 2, Photoshop's "Pixel Order: Per Channel"), each
    sample its 8-bit value times 257; one strip a channel. Pillow writes no such file."""
    order = ">" if big_endian else "<"
    width, height = image.size
    bands = image.split()
    planes = [
        struct.pack(f"{order}{width * height}H", *(v * 257 for v in band.tobytes()))
        for band in bands
    ]
    count = len(planes)
    entries = [  # (tag, type, values); type 3 SHORT, 4 LONG
        (256, 4, [width]),
        (257, 4, [height]),
        (258, 3, [16] * count),
        (259, 3, [1]),
        (262, 3, [5 if image.mode == "CMYK" else 2]),
        (273, 4, [0] * count),  # offsets: filled below
        (277, 3, [count]),
        (278, 4, [height]),
        (279, 4, [len(plane) for plane in planes]),
        (284, 3, [2]),
    ]
    ifd_at = 8
    extra_at = ifd_at + 2 + 12 * len(entries) + 4
    pixels_at = extra_at + 4 * 3 * count + 16  # room for the arrays stored apart
    offsets = [pixels_at + sum(len(p) for p in planes[:n]) for n in range(count)]
    ifd, extra = struct.pack(order + "H", len(entries)), b""
    for tag, kind, declared in entries:
        values = offsets if tag == 273 else declared
        packed = b"".join(struct.pack(order + ("H" if kind == 3 else "I"), v) for v in values)
        if len(packed) <= 4:
            ifd += struct.pack(order + "HHI", tag, kind, len(values)) + packed.ljust(4, b"\0")
        else:
            ifd += struct.pack(order + "HHII", tag, kind, len(values), extra_at + len(extra))
            extra += packed
    ifd += struct.pack(order + "I", 0)
    head = (b"MM\x00*" if big_endian else b"II*\x00") + struct.pack(order + "I", ifd_at)
    return (head + ifd + extra).ljust(pixels_at, b"\0") + b"".join(planes)


def tiff_grey_16(
    size: tuple[int, int],
    samples: list[int],
    *,
    big_endian: bool,
    signed: bool = False,
    deflate: bool = False,
) -> bytes:
    """A 16-bit grey TIFF in either byte order, unsigned or signed, raw or deflated
    (Pillow writes a big-endian one only uncompressed, and no signed one)."""
    order = ">" if big_endian else "<"
    raw = struct.pack(f"{order}{len(samples)}{'h' if signed else 'H'}", *samples)
    data = zlib.compress(raw) if deflate else raw
    entries = [  # (tag, type, value); type 3 SHORT, 4 LONG
        (256, 4, size[0]),
        (257, 4, size[1]),
        (258, 3, 16),
        (259, 3, 8 if deflate else 1),
        (262, 3, 1),  # black is zero
        (273, 4, 8),  # the strip follows the header
        (277, 3, 1),
        (278, 4, size[1]),
        (279, 4, len(data)),
        (339, 3, 2 if signed else 1),  # sample format
    ]
    ifd = struct.pack(order + "H", len(entries))
    for tag, kind, value in entries:
        packed = struct.pack(order + ("H" if kind == 3 else "I"), value).ljust(4, b"\0")
        ifd += struct.pack(order + "HHI", tag, kind, 1) + packed
    ifd += struct.pack(order + "I", 0)
    head = (b"MM\x00*" if big_endian else b"II*\x00") + struct.pack(
        order + "I", 8 + len(data) + len(data) % 2
    )
    return head + data + b"\0" * (len(data) % 2) + ifd


# TIFF field types: struct format and bytes a value (a rational is two numbers).
_TIFF_FORMATS = {1: ("B", 1), 2: ("B", 1), 3: ("H", 2), 4: ("I", 4), 5: ("I", 8), 7: ("B", 1)}
_TIFF_FORMATS |= {9: ("i", 4), 10: ("i", 8), 12: ("d", 8)}
_TIFF_CHILDREN = {
    "first": ((34665, "EXIF"), (34853, "GPS")),
    "EXIF": ((40965, "Interoperability"),),
}
TiffTag = tuple[int, int, "bytes | list[int] | list[float]"]

# What a camera writes besides the image: make, model, resolution; exposure, a 100 KB
# maker note, lens, subject area; a GPS position; the Interoperability index.
CAMERA_EXIF: dict[str, list[TiffTag]] = {
    "first": [
        (271, 2, b"Canon\0"),
        (272, 2, b"Canon EOS R5\0"),
        (282, 5, [72, 1]),
        (283, 5, [72, 1]),
        (296, 3, [2]),
        (305, 2, b"Firmware Version 1.8.1\0"),
        (306, 2, b"2024:05:01 10:00:00\0"),
    ],
    "EXIF": [
        (33434, 5, [1, 125]),
        (33437, 5, [28, 10]),
        (34855, 3, [100]),
        (36867, 2, b"2024:05:01 10:00:00\0"),
        (37396, 3, [2000, 1500, 400, 300]),
        (37500, 7, random.Random(5).randbytes(100_000)),
        (37510, 7, b"ASCII\0\0\0" + b" " * 256),
        (42034, 5, [24, 1, 105, 1, 4, 1, 4, 1]),
    ],
    "GPS": [
        (0, 1, b"\x02\x03\x00\x00"),
        (1, 2, b"N\0"),
        (2, 5, [51, 1, 30, 1, 1234, 100]),
        (3, 2, b"W\0"),
        (4, 5, [0, 1, 7, 1, 3, 1]),
        (7, 5, [10, 1, 0, 1, 0, 1]),
    ],
    "Interoperability": [(1, 2, b"R98\0"), (2, 7, b"0100")],
}


def tiff_with_directories(
    image: Image.Image,
    tags: dict[str, list[TiffTag]],
    *,
    big_endian: bool = False,
    bigtiff: bool = False,
    pointers: dict[str, str] | None = None,
) -> bytes:
    """An uncompressed TIFF of ``image`` (L or RGB) in one strip, whose first directory
    points to an EXIF and a GPS directory and the EXIF one to an Interoperability one, each
    one ``tags`` names: (tag, type, values) with the values packed as the type says (a
    rational as two numbers) or bytes as they are. ``pointers`` sends a directory's pointer
    elsewhere ({"GPS": "EXIF"}: the GPS pointer leads to the EXIF directory)."""
    order = ">" if big_endian else "<"
    offset_format, inline = ("Q", 8) if bigtiff else ("I", 4)
    head = 16 if bigtiff else 8
    pixels = image.tobytes()
    bands = len(image.getbands())
    image_tags: list[TiffTag] = [
        (256, 4, [image.width]),
        (257, 4, [image.height]),
        (258, 3, [8] * bands),
        (259, 3, [1]),
        (262, 3, [2 if bands == 3 else 1]),
        (273, 4, [head]),
        (277, 3, [bands]),
        (278, 4, [image.height]),
        (279, 4, [len(pixels)]),
    ]
    names = ["first", *(name for name in ("EXIF", "GPS", "Interoperability") if name in tags)]
    leads = {name: (pointers or {}).get(name, name) for name in names}

    def directory(name: str, at: int, where: dict[str, int]) -> bytes:
        listed = (image_tags if name == "first" else []) + list(tags.get(name, []))
        children = _TIFF_CHILDREN.get(name, ())
        listed += [(tag, 4, [where[leads[child]]]) for tag, child in children if child in where]
        listed.sort(key=lambda entry: entry[0])
        table = struct.pack(order + ("Q" if bigtiff else "H"), len(listed))
        extra_at = at + len(table) + len(listed) * (4 + 2 * inline) + inline
        extra = b""
        for tag, kind, values in listed:
            code, size = _TIFF_FORMATS[kind]
            packed = (
                values
                if isinstance(values, bytes)
                else struct.pack(f"{order}{len(values)}{code}", *values)
            )
            table += struct.pack(order + "HH" + offset_format, tag, kind, len(packed) // size)
            if len(packed) <= inline:
                table += packed.ljust(inline, b"\0")
            else:
                table += struct.pack(order + offset_format, extra_at + len(extra))
                extra += packed + b"\0" * (len(packed) % 2)
        return table + bytes(inline) + extra

    where = dict.fromkeys(names, 0)
    at = head + len(pixels) + len(pixels) % 2
    for name in names:
        where[name] = at
        at += len(directory(name, 0, where))
    body = b"".join(directory(name, where[name], where) for name in names)
    if bigtiff:
        header = struct.pack(order + "HHHQ", 43, 8, 0, where["first"])
    else:
        header = struct.pack(order + "HI", 42, where["first"])
    return (b"MM" if big_endian else b"II") + header + pixels + b"\0" * (len(pixels) % 2) + body


def gif_with_blocks(data: bytes, blocks: bytes) -> bytes:
    """``data`` (a GIF) with ``blocks`` (extensions, or stray bytes) right after its header
    and global colour table, before its first block."""
    flags = data[10]
    at = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    return data[:at] + blocks + data[at:]


def gif_extension(label: int, payload: bytes, sub_block: int = 255) -> bytes:
    """An extension (0xFE a comment) of ``payload`` in sub-blocks of ``sub_block`` bytes."""
    parts = [payload[at : at + sub_block] for at in range(0, len(payload), sub_block)]
    return b"!" + bytes([label]) + b"".join(bytes([len(part)]) + part for part in parts) + b"\0"


def gif_xmp(xmp: bytes) -> bytes:
    """XMP as Adobe stores it in a GIF: an application extension holding the raw packet
    (which a reader walks as if it were sub-blocks) and a 258-byte trailer that ends
    such a walk wherever it lands."""
    return b"!\xff\x0bXMP DataXMP" + xmp + bytes([1, *range(255, -1, -1), 0])


def jpeg_cut_short(data: bytes, keep: float = 0.6) -> bytes:
    """``data`` cut inside its last scan and given its EOI again, as a broken copy or
    upload may leave it: libjpeg fills the rest of the scan with grey, and says nothing."""
    scan = data.rindex(b"\xff\xda")
    return data[: scan + int((len(data) - scan) * keep)] + b"\xff\xd9"


def jpeg_with_size(data: bytes, width: int, height: int) -> bytes:
    """A baseline JPEG whose frame header declares ``width`` x ``height`` over its own
    (much smaller) data: libjpeg fills the rest with grey, and says nothing."""
    at = data.index(b"\xff\xc0") + 5  # marker, length, precision
    return data[:at] + struct.pack(">HH", height, width) + data[at + 4 :]


def png_short_data(width: int, height: int, rows: int) -> bytes:
    """An 8-bit RGB PNG of ``width`` x ``height`` whose deflate stream (complete, every
    CRC right) holds only ``rows`` rows: Pillow leaves the others black, and says nothing."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = zlib.compress(bytes(rows * (1 + 3 * width)))
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", body)
        + png_chunk(b"IEND", b"")
    )


def tiff_dng(image: Image.Image) -> bytes:
    """``image`` as a TIFF with a DNG's DNGVersion tag (1.4) in its first directory: a
    phone's RAW photo, whose first image is a preview or the sensor's raw samples."""
    tags = TiffImagePlugin.ImageFileDirectory_v2()
    tags[50706] = bytes([1, 4, 0, 0])
    tags.tagtype[50706] = 1  # BYTE
    return encode(image, "TIFF", tiffinfo=tags)


def heic(image: Image.Image, **encoder: object) -> bytes:
    """``image`` as libheif writes a HEIC (pillow-heif's HeifFile, so the test process
    never registers pillow-heif's Pillow plugin over the product's pi-heif one)."""
    out = io.BytesIO()
    pillow_heif.from_pillow(image).save(out, **encoder)
    return out.getvalue()


def heic_grid(image: Image.Image, tile: int) -> bytes:
    """``image`` cut into a grid of ``tile`` x ``tile`` HEVC tiles, as a phone writes it."""
    columns, rows = image.width // tile, image.height // tile
    coded = [
        hevc_tile(image.crop((x * tile, y * tile, (x + 1) * tile, (y + 1) * tile)), quality=95)
        for y in range(rows)
        for x in range(columns)
    ]
    return grid_heic(coded, rows, columns)


def heic_10_bit(image: Image.Image) -> bytes:
    """``image`` as a 10-bit HEIC (a phone's HDR photo): libheif codes 16-bit samples so."""
    samples = b"".join((value << 8).to_bytes(2, "little") for value in image.tobytes())
    out = io.BytesIO()
    pillow_heif.from_bytes(mode="RGB;16", size=image.size, data=samples).save(out, quality=95)
    return out.getvalue()


def heic_sideways(image: Image.Image) -> bytes:
    """``image`` stored turned a quarter, with EXIF orientation 6 to turn it back: libheif
    writes that as an irot property, and a decoder must turn it once, not twice."""
    stored = pillow_heif.from_pillow(image.rotate(90, expand=True))
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.info["exif"] = exif.tobytes()
    out = io.BytesIO()
    stored.save(out, quality=95)
    return out.getvalue()


def heic_coded_as(image: Image.Image, kind: bytes) -> bytes:
    """A HEIC whose primary image says it is coded as ``kind`` (av01: AVIF's AV1)."""
    tile = hevc_tile(image.resize((64, 64)), quality=90)
    item = Item(kind, tile.data, [tile.hvcc, ispe(64, 64)])
    return heic_file({1: item}, 1)


def rejected(name: str, data: bytes, code: str, words: str, key: str | None = None) -> Entry:
    return Entry(name, key or f"catalog/{name}", data, "REJECTED", code, words)


def bad_inputs(source: Path, max_bytes: int, max_pixels: int) -> list[Entry]:
    """One upload per image rule (and per kind of non-raster file)."""
    png = source.read_bytes()
    rgb = Image.open(source).convert("RGB")
    jpeg = encode(rgb, "JPEG", quality=90)
    gif = encode(rgb, "GIF")
    small = rgb.convert("L")
    loop = {"GPS": "EXIF", "Interoperability": "EXIF"}  # three pointers, one directory
    side = int(max_pixels**0.5) + 1
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("photo.png", png)
    tarred = io.BytesIO()
    with tarfile.open(fileobj=tarred, mode="w") as archive:
        member = tarfile.TarInfo("photo.png")
        member.size = len(png)
        archive.addfile(member, io.BytesIO(png))
    return [
        rejected("empty.png", b"", "EmptyObject", "empty"),
        rejected("oversize.jpg", b"\xff\xd8\xff" + b"\0" * max_bytes, "ImageTooLarge", "limit"),
        rejected("notes.png", b"hello, this is plain text\n", "NotAnImage", "not an image"),
        rejected("noise.jpg", bytes(range(256)) * 8, "NotAnImage", "not an image"),
        rejected("truncated.png", png[: len(png) // 2], "CorruptImage", "truncated"),
        rejected("bad-crc.png", png_with_bad_crc(png), "CorruptImage", "corrupt"),
        rejected("truncated.jpg", jpeg[: len(jpeg) // 2], "CorruptImage", "truncated"),
        rejected("header-junk.png", png[:16] + b"\xff" * 64, "CorruptImage", "corrupt"),
        rejected("bomb.png", png_header_only(side, side), "ImageTooManyPixels", "pixels"),
        rejected("tile-bomb.tif", tiff_with_tiles(64, 64, side), "ImageTooManyPixels", "tiles"),
        rejected("strips.tif", tiff_in_strips(8, 70_000, 1), "ImageTooComplex", "70000 strips"),
        rejected("rle-bomb.bmp", bmp_rle_bomb(5000, 5000), "ImageTooComplex", "RLE8"),
        rejected(
            "exif-bomb.tif",  # 10,000 rationals in 80 KB: 73 ms for Pillow, a 16 MB one 14 s
            tiff_with_directories(small, {"EXIF": [(42240, 5, [22, 10] * 10_000)]}),
            "ImageTooComplex",
            "EXIF directory",
        ),
        rejected(
            "exif-loop.tif",  # each pointer to one directory made Pillow read it again
            tiff_with_directories(
                small, {"EXIF": [], "GPS": [], "Interoperability": []}, pointers=loop
            ),
            "CorruptImage",
            "read again",
        ),
        rejected(
            "comment-flood.gif",  # 8 million sub-blocks in 16 MB took 3.3 s and 900 MB
            gif_with_blocks(gif, gif_extension(0xFE, b"x" * 70_000, sub_block=1)),
            "ImageTooComplex",
            "extension blocks",
        ),
        rejected(
            "cut-restarts.jpg",
            jpeg_cut_short(encode(rgb, "JPEG", quality=90, restart_marker_blocks=1)),
            "CorruptImage",
            "truncated",
        ),
        rejected("profiles.png", png_with_profiles(png, 2), "CorruptImage", "iCCP"),
        rejected(
            "long-comment.png",
            png_with_comment(png, 2_000_000),
            "ImageTooComplex",
            "text or colour-profile chunks",
        ),
        rejected(
            "scans.jpg",
            jpeg_with_scans(Image.open(source).convert("RGB"), 101),
            "ImageTooComplex",
            "more than 100 scans",
        ),
        rejected("dot.png", encode(Image.new("RGB", (1, 1), (9, 9, 9))), "ImageTooSmall", "1x1"),
        rejected("sliver.png", encode(Image.new("RGB", (7, 400))), "ImageTooSmall", "7x400"),
        rejected("scan.pdf", b"%PDF-1.7\n1 0 obj <<>> endobj\n", "NotARasterImage", "PDF"),
        rejected(
            "logo.svg",
            b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>',
            "NotARasterImage",
            "SVG",
        ),
        rejected("figure.eps", b"%!PS-Adobe-3.0 EPSF-3.0\n", "NotARasterImage", "EPS"),
        rejected("photos.zip", zipped.getvalue(), "NotARasterImage", "ZIP"),
        rejected("photos.tar", tarred.getvalue(), "NotARasterImage", "tar archive"),
        rejected("signed-sum.tar", tar_signed_checksum(png), "NotARasterImage", "tar archive"),
        rejected("photo.png.gz", gzip.compress(png), "NotARasterImage", "gzip"),
        rejected(
            "header-only.heic",
            b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + b"\0" * 64,
            "CorruptImage",
            "0 meta boxes",
        ),
        rejected("av1-inside.heic", heic_coded_as(rgb, b"av01"), "UnsupportedImageFormat", "AV1"),
        rejected("layers.psd", b"8BPS\0\x01" + b"\0" * 64, "UnsupportedImageFormat", "PSD"),
        rejected("phone-raw.dng", tiff_dng(rgb), "UnsupportedImageFormat", "camera raw (DNG)"),
        rejected(
            "planar16-cmyk.tif",
            tiff_planar_16(rgb.convert("CMYK"), big_endian=False),
            "UnsupportedImageFormat",
            "stored a channel at a time",
        ),
        rejected(
            "frame-bomb.jpg",  # 5000x4999 pixels declared over a 32x32 image's data
            jpeg_with_size(jpeg, 5000, 4999),
            "CorruptImage",
            "blocks of pixels",
        ),
        rejected(
            "short-data.png",  # 4999x4999 pixels declared, three rows of data
            png_short_data(4999, 4999, 3),
            "CorruptImage",
            "image inflates to",
        ),
        rejected("12-bit.jpg", jpeg_with_frame(jpeg, 0xC1, 12), "UnsupportedImageFormat", "12-bit"),
        rejected("jpeg-ls.jpg", jpeg_with_frame(jpeg, 0xF7), "UnsupportedImageFormat", "JPEG-LS"),
        rejected(
            "hierarchical.jpg",
            jpeg_with_frame(jpeg, 0xC5),
            "UnsupportedImageFormat",
            "Hierarchical",
        ),
        # The generic image-file brand first; AVIF among the compatible brands.
        rejected(
            "camera.avif",
            b"\0\0\0\x1cftypmif1\0\0\0\0mif1avifmiaf" + b"\0" * 64,
            "UnsupportedImageFormat",
            "AVIF",
        ),
        rejected(
            "commented.svg",
            b'<!-- exported by an editor -->\n<svg xmlns="http://www.w3.org/2000/svg"/>',
            "NotARasterImage",
            "SVG",
        ),
        rejected(
            "illustrator.svg",  # an editor's prolog puts <svg past the first 512 bytes
            b'<?xml version="1.0" encoding="utf-8"?>\n'
            b"<!-- Generator: a vector editor, SVG Export Plug-In -->\n"
            b'<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" [\n'
            + b"".join(
                b'  <!ENTITY ns_%d "http://ns.example.com/Extensibility/1.0/">\n' % n
                for n in range(8)
            )
            + b']>\n<svg xmlns="http://www.w3.org/2000/svg"/>',
            "NotARasterImage",
            "SVG",
        ),
        rejected(
            "interrupted.tif",  # its directory, written last, cut short by the upload
            encode(rgb.resize((640, 480)), "TIFF", compression="tiff_lzw")[:-2],
            "CorruptImage",
            "truncated or corrupt",
        ),
        rejected(
            "folder-marker",
            b"",
            "FolderPlaceholder",
            "folder placeholder",
            key="catalog/new folder/",
        ),
    ]


def unusual_images(source: Path) -> list[Entry]:
    """Valid images in every accepted format and awkward mode, made from ``source``."""
    rgb = Image.open(source).convert("RGB")
    gray = rgb.convert("L")
    sixteen = Image.new("I;16", gray.size)
    sixteen.frombytes(
        b"".join(int(v * 257).to_bytes(2, "little") for v in gray.tobytes()), "raw", "I;16"
    )
    opaque = rgb.copy()
    opaque.putalpha(255)
    rotated = rgb.rotate(90, expand=True)  # stored sideways...
    exif = Image.Exif()
    exif[0x0112] = 6  # ...and displayed upright again (rotate 90 clockwise)
    second = Image.new("RGB", rgb.size, (0, 0, 0))
    big = rgb.resize((640, 640), Image.Resampling.BICUBIC)
    cmyk = rgb.convert("CMYK")
    palette = rgb.quantize(255)  # index 255 unused: make it the transparent one
    palette.info["transparency"] = 255
    key_colour = rgb.getpixel((0, 0))  # an RGB PNG's tRNS: this colour is transparent
    keyed = rgb.copy()
    keyed.putdata([(255, 255, 255) if px == key_colour else px for px in rgb.get_flattened_data()])
    # 16 bits a sample, the low byte unlike the high one (which is all Pillow keeps).
    samples_16 = [v << 8 | 0x5A for v in rgb.tobytes()]
    row_16 = 3 * rgb.width
    rgb_16 = [
        [tuple(samples_16[at : at + 3]) for at in range(top, top + row_16, 3)]
        for top in range(0, len(samples_16), row_16)
    ]
    colours = rgb.quantize(256)
    # A print profile (megabytes in real files) that must not travel with the model input.
    profile = random.Random(7).randbytes(300_000)
    # An sRGB profile whose floating-point pipeline repeats one element 20,000 times: read,
    # it would take LittleCMS 20 s to build (preprocess._FLOAT_PIPELINE_TAGS).
    hostile_profile = with_tag(
        ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes(),
        b"D2B0",
        float_pipeline((1, 0, 0, 0, 1, 0, 0, 0, 1), 20_000),
    )

    plain = source.read_bytes()

    def valid(name: str, data: bytes, compare: str, src: bytes = plain) -> Entry:
        return Entry(name, f"catalog/{name}", data, "CLASSIFIED", source=src, compare=compare)

    return [
        valid("plain.png", plain, SAME_INPUT),
        valid("UPPER.PNG", plain, SAME_INPUT),
        valid("no-extension", plain, SAME_INPUT),
        valid("wrong-extension.jpg", plain, SAME_INPUT),
        valid("rgba.png", encode(opaque), SAME_INPUT),
        valid("lossless.webp", encode(rgb, "WEBP", lossless=True), SAME_INPUT),
        valid("bitmap.bmp", encode(rgb, "BMP"), SAME_INPUT),
        # Photoshop's 32-bit BMP: an alpha mask, and alpha 0 everywhere; shown opaque.
        valid("unused-alpha.bmp", bmp_with_alpha_mask(rgb, 0), SAME_INPUT),
        valid("opaque-alpha.bmp", bmp_with_alpha_mask(rgb, 255), SAME_INPUT),
        valid("scan.tiff", encode(rgb, "TIFF", compression="tiff_lzw"), SAME_INPUT),
        valid("cmyk.tiff", encode(cmyk, "TIFF"), SAME_INPUT),
        # Channel after channel, 16 bits a sample: Pillow read them as 8-bit, so noise.
        valid("planar16-le.tif", tiff_planar_16(rgb, big_endian=False), SAME_INPUT),
        valid("planar16-be.tif", tiff_planar_16(rgb, big_endian=True), SAME_INPUT),
        valid("exif-rotated.png", encode(rotated, exif=exif.tobytes()), SAME_INPUT),
        # Unreadable EXIF (not a TIFF structure) says nothing about the pixels.
        valid("junk-exif.png", encode(rgb, exif=b"\x00\x01garbage" * 5), SAME_INPUT),
        valid(
            "junk-exif.webp",
            encode(rgb, "WEBP", lossless=True, exif=b"\x00\x01garbage" * 5),
            SAME_INPUT,
        ),
        valid("gray16.png", encode(sixteen), SAME_INPUT, src=encode(gray)),
        valid(
            "gray16-big-endian.tif",
            tiff_grey_16(gray.size, [v * 257 for v in gray.tobytes()], big_endian=True),
            SAME_INPUT,
            src=encode(gray),
        ),
        valid("rle8.bmp", bmp_run_length(colours), SAME_INPUT, src=encode(colours)),
        valid("palette.png", encode(palette), SAME_LABEL),
        valid("progressive.jpg", encode(rgb, "JPEG", quality=95, progressive=True), SAME_LABEL),
        valid("cmyk.jpg", encode(cmyk, "JPEG", quality=95), SAME_LABEL),
        valid("photo.webp", encode(rgb, "WEBP", quality=95), SAME_LABEL),
        valid(
            "animated.gif",
            encode(rgb, "GIF", save_all=True, append_images=[second], duration=100),
            SAME_LABEL,
        ),
        valid("photo-640.jpg", encode(big, "JPEG", quality=92), SAME_LABEL),
        # A phone's HEIC: libheif's file (its coded 64x64 cropped back to 32x32), one
        # stored sideways with its irot and EXIF orientation, and a grid of 4 tiles.
        valid("phone.heic", heic(rgb, quality=95), SAME_LABEL),
        valid("phone-444.heic", heic(rgb, quality=95, chroma=444), SAME_LABEL),
        valid("phone-10-bit.heic", heic_10_bit(rgb), SAME_LABEL),
        valid("sideways.heic", heic_sideways(rgb), SAME_LABEL),
        valid(
            "grid.heic", heic_grid(rgb.resize((128, 128), Image.Resampling.BICUBIC), 64), SAME_LABEL
        ),
        # A camera's EXIF, GPS and Interoperability directories, in either byte order.
        valid("camera-exif.tif", tiff_with_directories(rgb, CAMERA_EXIF), SAME_INPUT),
        valid(
            "camera-exif-mm.tif",
            tiff_with_directories(rgb, CAMERA_EXIF, big_endian=True),
            SAME_INPUT,
        ),
        valid(
            "restarts.jpg",
            encode(rgb, "JPEG", quality=95, progressive=True, restart_marker_blocks=1),
            SAME_LABEL,
        ),
        valid(
            "commented.gif",
            gif_with_blocks(
                encode(rgb, "GIF", comment=b"taken on the quay " * 100),
                gif_xmp(b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>' * 200),
            ),
            SAME_LABEL,
        ),
        # The key colour is composited on white like any transparency.
        valid("rgb-trns.png", encode(rgb, transparency=key_colour), SAME_INPUT, encode(keyed)),
        valid(
            "rgb16-trns.png",
            png_keyed(rgb_16, 16, rgb_16[0][0]),  # the key is pixel (0, 0)'s colour
            SAME_INPUT,
            encode(keyed),
        ),
        valid(
            "print-profile.jpg",
            encode(cmyk, "JPEG", quality=95, icc_profile=profile),
            SAME_INPUT,
            encode(cmyk, "JPEG", quality=95),
        ),
        valid("hostile-profile.png", encode(rgb, icc_profile=hostile_profile), SAME_INPUT),
        # "ustar" at byte 257, where a tar archive's header has it (its checksum does not
        # add up): the PNG's comment (after its signature and IHDR, the text begins at 49).
        valid("custard.png", png_with_text(plain, "y" * 207 + "Custard tart"), SAME_INPUT),
    ]


def awkward_keys(source: Path) -> list[Entry]:
    """A valid PNG under keys that S3 encodes, or that outgrow an execution name."""
    data = source.read_bytes()
    deep = "/".join(f"level{i}" for i in range(24)) + "/bike.png"
    keys = {
        "spaces": "catalog/my bike photo (1).png",
        "plus": "catalog/bike+motor+2024.png",
        "percent": "catalog/100% bike %41.png",
        "unicode": "catalog/vélo-摩托车-🚲.png",
        "deep": f"catalog/{deep}",
        "long": "catalog/" + "very-long-name-" * 16 + ".png",
    }
    return [
        Entry(f"key-{name}", key, data, "CLASSIFIED", source=data, compare=SAME_INPUT)
        for name, key in keys.items()
    ]
