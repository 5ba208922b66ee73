"""The image rules: which bytes are an image this product classifies, judged by content.

One function, :func:`decode_image`, applies every rule in a fixed order and
raises the ``ImageRejected`` subclass that names the first one broken. The
serialize step, the model server and training all decode through it, so an
upload is judged the same way wherever it goes. Key names and extensions play
no part: the bytes decide.

Order matters for safety: everything that can be decided from the size, the
header or the file's structure (type, format, PNG chunks and checksums, pixel
count, side length, JPEG scans and restart markers, TIFF tiles and directories,
EXIF blocks, GIF blocks, BMP run-length coding, whether the decode fits the
function's memory) is decided before a single pixel is decoded, so a decompression
bomb costs a header read (``image_structure`` walks the bytes).
"""

from __future__ import annotations

import functools
import hashlib
import io
import re
import struct
import warnings
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PIL import (
    ExifTags,
    Image,
    ImageFile,
    PngImagePlugin,
    TiffImagePlugin,
    UnidentifiedImageError,
)

from scones_core.errors import (
    CorruptImage,
    EmptyObject,
    ImageTooComplex,
    ImageTooLarge,
    ImageTooManyPixels,
    ImageTooSmall,
    NotAnImage,
    NotARasterImage,
    UnsupportedImageFormat,
)
from scones_core.heif_structure import HeifLayout, heif_layout
from scones_core.image_structure import (
    ARITHMETIC_SOF_MARKERS,
    DEFLATE_MAX_RATIO,
    HIERARCHICAL_SOF_MARKERS,
    JPEG_LS_SOF_MARKER,
    MAX_JPEG_PADDING_BYTES,
    MAX_JPEG_SCANS,
    MAX_JPEG_SEGMENTS,
    MAX_TIFF_BLOCKS,
    PNG_SIGNATURE,
    TIFF_SIGNATURES,
    JpegLayout,
    bmp_run_length,
    check_exif_block,
    check_gif_blocks,
    check_png_chunks,
    check_tiff_directories,
    check_webp_exif,
    jpeg_layout,
    png_image_data,
    png_inflated_size,
    tiff_block_count,
    tiff_camera_raw,
    tiff_sample_layout,
    tiff_strip_bytes,
    tiff_tile_size,
)

if TYPE_CHECKING:
    from scones_core.records import ImageSource
    from scones_core.settings import ImageLimits

# Raster formats Pillow decodes safely and this product accepts (Pillow's names).
# AllowedImageFormats narrows this set; it can never widen it.
SUPPORTED_IMAGE_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF", "HEIC")
# Pillow plugins to try for each accepted format. Only these parsers ever see the
# bytes: EPS (which runs Ghostscript), PSD, ICO and the rest are never attempted.
_PILLOW_PLUGINS: dict[str, tuple[str, ...]] = {
    "PNG": ("PNG",),
    "JPEG": ("JPEG",),  # camera JPEGs with a preview open as MPO through this plugin
    "WEBP": ("WEBP",),
    "BMP": ("BMP", "DIB"),
    "TIFF": ("TIFF",),
    "GIF": ("GIF",),
    # Opened by pi-heif's plugin (libheif with libde265) itself, and only once the bytes
    # were sniffed as HEIC and their boxes walked (heif_structure): never registered.
    "HEIC": (),
}
# Pillow's own name for a format -> ours (camera JPEGs with a preview are "MPO").
_FORMAT_ALIASES = {"MPO": "JPEG", "DIB": "BMP", "HEIF": "HEIC"}
# The media type of each accepted format: what a record's ``source_format`` is served
# as (the review page) and what the model server's Content-Type check allows.
MEDIA_TYPES: dict[str, str] = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
    "GIF": "image/gif",
    "HEIC": "image/heic",
}


def format_name(pillow_format: str | None) -> str:
    """Our name for the format Pillow reports (``MPO`` is a ``JPEG``, ``DIB`` a ``BMP``)."""
    return _FORMAT_ALIASES.get(pillow_format or "", pillow_format or "")


def pillow_formats(media_type: str) -> frozenset[str]:
    """Every name Pillow may give a decoded image of ``media_type`` (empty if unknown)."""
    ours = {fmt for fmt, declared in MEDIA_TYPES.items() if declared == media_type}
    return frozenset(ours | {alias for alias, fmt in _FORMAT_ALIASES.items() if fmt in ours})


# What Pillow's parsers and decoders raise on malformed files (seen in fuzzing:
# ValueError "Truncated IHDR chunk", struct.error, EOFError, SyntaxError ...; OverflowError
# when a TIFF's 64-bit strip offset is past what a file position can hold).
DECODE_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    struct.error,
    zlib.error,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
    OverflowError,
    MemoryError,
    # pi-heif passes on libheif's errors at decode (a security limit) as RuntimeError.
    RuntimeError,
)


# ---- recognising content ------------------------------------------------------

_HEIF_BRANDS = {
    *(b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs"),
    *(b"mif1", b"mif2", b"msf1", b"MiHE", b"miaf"),
}
# Camera raw files in the same box format (Canon's CR3).
_RAW_BRANDS = {b"crx "}
# A BMP's info header size, right after its 14-byte file header: one of the known
# versions (OS/2 1.x and 2.x, Windows 3 to 5, the Adobe variants); "BM" alone is text.
_BMP_INFO_SIZES = {12, 16, 40, 52, 56, 64, 108, 124}
_AVIF_BRANDS = {b"avif", b"avis"}


# Signatures by their first bytes: (prefixes, what it is). Checked in order.
_RASTER_SIGNATURES: tuple[tuple[tuple[bytes, ...], str], ...] = (
    ((b"\x89PNG\r\n\x1a\n",), "PNG"),
    ((b"\xff\xd8\xff",), "JPEG"),
    ((b"GIF87a", b"GIF89a"), "GIF"),
    (TIFF_SIGNATURES, "TIFF"),
    ((b"8BPS",), "PSD"),
    ((b"\x00\x00\x01\x00",), "ICO"),
    ((b"\xff\x0a", b"\x00\x00\x00\x0cJXL "), "JPEG XL"),
    ((b"\x00\x00\x00\x0cjP  ", b"\xff\x4f\xff\x51"), "JPEG 2000"),
    ((b"qoif",), "QOI"),
)
_NON_RASTER_SIGNATURES: tuple[tuple[tuple[bytes, ...], str], ...] = (
    ((b"%PDF-",), "a PDF document"),
    ((b"%!PS", b"\xc5\xd0\xd3\xc6"), "a PostScript or EPS document"),
    ((b"\xd7\xcd\xc6\x9a", b"\x01\x00\x09\x00\x00\x03"), "a Windows metafile (vector image)"),
    ((b"PK\x03\x04", b"PK\x05\x06"), "a ZIP archive (or an Office or EPUB document)"),
    ((b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",), "a legacy Office document"),
    ((b"\x1f\x8b",), "a gzip archive"),
    ((b"BZh",), "a bzip2 archive"),
    ((b"\xfd7zXZ\x00",), "an xz archive"),
    ((b"7z\xbc\xaf\x27\x1c",), "a 7-Zip archive"),
    ((b"Rar!\x1a\x07",), "a RAR archive"),
)


def _match(head: bytes, signatures: tuple[tuple[tuple[bytes, ...], str], ...]) -> str | None:
    return next((name for prefixes, name in signatures if head.startswith(prefixes)), None)


def _raster_format(head: bytes) -> str | None:
    """A raster format name from the first bytes, or ``None``."""
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "WEBP"
    if (
        head.startswith(b"BM")
        and len(head) >= 18
        and int.from_bytes(head[14:18], "little") in _BMP_INFO_SIZES
    ):
        return "BMP"
    brand = head[8:12] if head[4:8] == b"ftyp" else b""
    # The box's compatible brands (after the major brand and minor version) say AVIF
    # when the major brand is the generic image-file one ("mif1").
    compatible = head[16 : int.from_bytes(head[:4], "big")] if brand else b""
    if brand in _AVIF_BRANDS or (
        brand in _HEIF_BRANDS
        and any(compatible[i : i + 4] in _AVIF_BRANDS for i in range(0, len(compatible), 4))
    ):
        return "AVIF"
    if brand in _HEIF_BRANDS:
        return "HEIC"
    if brand in _RAW_BRANDS:
        return "camera raw (CR3)"
    return _match(head, _RASTER_SIGNATURES)


def _non_raster_kind(data: bytes) -> str | None:
    """What a known non-raster file is ("a PDF document"), or ``None``."""
    head = data[:_SNIFF_BYTES]
    if _SVG_DOCUMENT.match(data[:_SVG_PROLOG_BYTES].removeprefix(b"\xef\xbb\xbf")):
        return "an SVG vector image"
    if head.startswith(b"\x01\x00\x00\x00") and head[40:44] == b" EMF":
        return "an enhanced Windows metafile (vector image)"
    if _is_tar_header(head):
        return "a tar archive"
    if head[4:8] == b"ftyp" and head[8:12] not in _HEIF_BRANDS | _AVIF_BRANDS | _RAW_BRANDS:
        return "an MP4 or QuickTime video"
    return _match(head, _NON_RASTER_SIGNATURES)


def _is_tar_header(head: bytes) -> bool:
    """A tar archive's first header: "ustar" at byte 257 and a header checksum that adds
    up (the sum of its 512 bytes, the checksum's own eight counted as spaces; older tars
    sum them as signed bytes, and ``tarfile`` takes either). "ustar" at 257 alone is no
    proof: a JPEG's EXIF or a PNG's text may hold "Custard tart"."""
    if len(head) < 512 or head[257:262] != b"ustar":
        return False
    stated = head[148:156].split(b"\0", 1)[0].strip()
    if not stated or any(c not in b"01234567" for c in stated):
        return False
    header = head[:148] + b" " * 8 + head[156:512]
    signed = sum(byte - 256 if byte > 127 else byte for byte in header)
    return int(stated, 8) in (sum(header), signed)


_SNIFF_BYTES = 512
# An SVG document: a prolog (XML declaration, processing instructions, comments, a
# DOCTYPE with its internal subset, which an editor may fill with entities) and then the
# <svg> root element, within the first _SVG_PROLOG_BYTES. An XHTML page or a feed holding
# an <svg> further in is not one. Possessive, so a hostile prolog costs one pass.
_SVG_PROLOG_BYTES = 65_536
_SVG_DOCUMENT = re.compile(
    rb"(?:\s|<\?.*?\?>|<!--.*?-->|<!doctype(?:[^\[>\"']|\"[^\"]*\"|'[^']*'"
    rb"|\[(?:[^\]\"']|\"[^\"]*\"|'[^']*')*+\])*+>)*+<svg[\s/>]",
    re.DOTALL | re.IGNORECASE,
)


# ---- decoding --------------------------------------------------------------------

# Memory a decode takes per pixel of the decoded size, measured (`scones bench memory`):
# Pillow keeps 3- and 4-band images at 4 bytes a pixel, and its WebP decoder holds
# several RGBA buffers at once. The preprocessing adds only strips (``preprocess``).
DECODE_BYTES_PER_PIXEL = {"WEBP": 17}
# A HEIC's decode, measured (`scones bench memory`, and 25 MP grids of 8-bit 4:2:0 and
# 10-bit 4:4:4 tiles: 205 and 406 MB): libheif decodes each tile into Y, Cb and Cr planes
# (``HeifLayout.plane_bytes``), converts the image to interleaved RGB(A) at 1 byte a
# sample, or 2 above 8 bits, and Pillow copies that into its own 4 bytes a pixel; two
# more bytes a pixel cover what the conversion holds besides (with one, the 25 MP grid of
# 10-bit 4:4:4 tiles was estimated at 417 MiB for the 406 MiB measured: no room for error).
HEIC_PILLOW_BYTES_PER_PIXEL = 6
_MODE_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1} | dict.fromkeys(
    ("I;16", "I;16B", "I;16L", "I;16N"), 2
)
_DEFAULT_BYTES_PER_PIXEL = 4
# Pillow decodes a run-length BMP in Python: its pixels and its commands cost CPU, however
# few bytes it has. Measured on one x86 core of the dev machine (Pillow 13, CPython 3.11,
# best of 3, runs repeated): the slowest content, a row of one pixel and an end of line
# (padded a byte at a time), took 0.46-1.06 s at 4 MP (up to 265 ns a pixel) and 3.3-5.1 s
# at 25 MP; 1 MiB of runs that write no pixel took 0.38-0.53 s (up to 500 ns a byte)
# whatever the pixel count. Lambda at 512 MB runs about 3.5 times slower: at most about
# 3.7 s for the pixels and 1.9 s for the data, inside SerializeImage's 15 s timeout with
# room for the read and the rest (the 25 MP file took 7.6 s here through Serialize).
# 4 MP holds 2000x2000 (1920x1080 is 2 MP); more pixels, or more data, are refused.
MAX_BMP_RLE_PIXELS = 4_000_000
MAX_BMP_RLE_BYTES = 2**20
# libheif decodes a HEIC whole, each tile at full size: no reduced-scale decode. Its time
# is budgeted in coded pixels of a phone's 8-bit 4:2:0 tiles (HeifLayout.decode_work
# counts other chroma formats and depths in them). A 25 MP
# grid of 8-bit 4:2:0 tiles took 2.3 s of CPU through normalise_image on one x86 core of
# the dev machine (92 ns a coded pixel, 18 % more at 10 bits), on one decode thread or
# four alike. The libde265 of pi-heif's aarch64 wheel (Lambda's arm64) has none of the
# x86 wheel's SSE routines, so it is counted twice as slow, 184 ns at one vCPU; Lambda
# gives a function one vCPU at LAMBDA_FULL_VCPU_MB and proportionally less below. The
# decode may take HEIC_DECODE_SECONDS of SerializeImage's 15 s (its Timeout, a test ties
# them); reading the upload and the rest take the others. At 512 MB that is about 15.7
# million coded pixels: a phone's 12 MP photo (4032x3024 in 8x6 tiles of 512: 12.6 M).
HEIC_NS_PER_CODED_PIXEL = 184
HEIC_DECODE_SECONDS = 10
LAMBDA_FULL_VCPU_MB = 1769


def lambda_cpu_share(memory_mb: int) -> float:
    """The share of one vCPU that Lambda gives a function of ``memory_mb``."""
    return min(1.0, memory_mb / LAMBDA_FULL_VCPU_MB)


def heic_coded_pixel_limit(memory_mb: int) -> int:
    """The coded pixels of a HEIC a function of ``memory_mb`` decodes in its time."""
    return int(HEIC_DECODE_SECONDS * 1e9 / HEIC_NS_PER_CODED_PIXEL * lambda_cpu_share(memory_mb))


# What the function holds besides the decode: the interpreter, boto3, Pillow, the
# upload's bytes and the preprocessing's strips (SerializeImage peaks at about 60 MB
# on a 32x32 PNG).
FUNCTION_RESERVE_MB = 96


def decode_bytes(
    fmt: str,
    mode: str,
    size: tuple[int, int],
    coefficient_size: tuple[int, int] | None = None,
    *,
    tile: tuple[int, int] | None = None,
    strip_bytes: int = 0,
    copies: int = 1,
    heif: HeifLayout | None = None,
) -> int:
    """An upper estimate of the memory decoding an image of ``size`` takes.

    ``coefficient_size``: the full size of a JPEG with more than one scan (progressive,
    or one scan per component). libjpeg then keeps every DCT coefficient of the whole
    image (2 bytes each) even when it decodes at a reduced scale, so a draft saves its
    output but not those buffers. ``tile``: a tiled TIFF's tile, which libtiff
    allocates whole. ``strip_bytes``: a strip-stored TIFF's raw strip, which libtiff
    decodes into a buffer of its own (16-bit samples make it twice the unpacked image's
    row). ``copies``: full-size images the loader holds at once (Pillow turns
    a TIFF with an Orientation tag upright into a second one as it loads).
    ``heif``: a HEIC's layout, whose tiles libheif decodes into planes of their own
    before it converts the image to RGB for Pillow to copy.
    """
    if heif is not None:
        samples = 3 + heif.alpha
        interleaved = samples * (2 if heif.high_bit_depth else 1)
        per_pixel = interleaved + HEIC_PILLOW_BYTES_PER_PIXEL
        # The tile in the decoder: its picture, libheif's copy and their conversion. A
        # tile far larger than its grid (a 4096x4096 tile in a 64x64 grid rose 58 MB
        # over the 25 MB of its planes) costs that much again, three times over.
        planes = heif.plane_bytes + 3 * heif.tile_plane_bytes
        return planes + heif.width * heif.height * per_pixel  # cropped after
    per_pixel = DECODE_BYTES_PER_PIXEL.get(
        fmt, _MODE_BYTES_PER_PIXEL.get(mode, _DEFAULT_BYTES_PER_PIXEL)
    )
    bands = Image.getmodebands(mode)
    extra = 0
    if coefficient_size is not None:
        extra += coefficient_size[0] * coefficient_size[1] * 2 * bands
    if tile is not None:
        extra += tile[0] * tile[1] * max(per_pixel, bands)
    return size[0] * size[1] * per_pixel * copies + extra + strip_bytes


@dataclass
class DecodedImage:
    """A fully decoded first frame, plus what the header said about the upload."""

    image: Image.Image
    source: ImageSource


def decode_image(
    data: bytes, limits: ImageLimits, *, draft_to: tuple[int, int] | None = None
) -> DecodedImage:
    """Apply every image rule to ``data`` and decode its first frame.

    ``draft_to`` (width, height) lets JPEG decode at a reduced scale that still
    covers that size: a 12-megapixel photo bound for a 32x32 model decodes at an
    eighth of its size. The pixel limits are still enforced on the full header size.
    """
    if not data:
        raise EmptyObject("The object is empty (0 bytes).")
    if len(data) > limits.max_bytes:
        raise ImageTooLarge(
            f"The object is {len(data)} bytes; the limit is {limits.max_bytes}"
            f"{limits.named('MaxImageBytes')}."
        )
    kind = _non_raster_kind(data)
    if kind is not None:
        raise NotARasterImage(f"The object is {kind}, not a raster image.")
    sniffed = _raster_format(data[:_SNIFF_BYTES])
    if sniffed == "TIFF" and (raw := tiff_camera_raw(data)) is not None:
        sniffed = f"camera raw ({raw})"
    if sniffed is not None and sniffed not in limits.allowed_formats:
        raise UnsupportedImageFormat(
            f"{sniffed} images are not accepted; send one of "
            f"{', '.join(limits.allowed_formats)}{limits.named('AllowedImageFormats')}."
        )
    if sniffed == "PNG" and data.startswith(PNG_SIGNATURE):
        # Before Pillow parses it: Pillow inflates every iCCP chunk as it opens a PNG.
        check_png_chunks(data)
    jpeg = jpeg_layout(data) if sniffed == "JPEG" else None
    if jpeg is not None:
        _check_jpeg_frame(jpeg)
        _check_jpeg_markers(jpeg)
    if sniffed == "TIFF" and (blocks := tiff_block_count(data)) > MAX_TIFF_BLOCKS:
        # Before Pillow parses it: Pillow reads every strip's offset as it opens a TIFF.
        raise ImageTooComplex(
            f"The TIFF is stored in {blocks} strips or tiles; at most {MAX_TIFF_BLOCKS} "
            "are read (save it with larger strips or tiles)."
        )
    if sniffed == "TIFF":
        # Pillow reads every tag of the EXIF, GPS and Interoperability directories as it
        # loads a TIFF, and the tags it needs of the first one as it opens it.
        check_tiff_directories(data)
    if sniffed == "WEBP":
        check_webp_exif(data)  # read whenever the preprocessing asks for the orientation
    if sniffed == "GIF":
        check_gif_blocks(data)  # Pillow reads them a block or a byte at a time as it opens it
    heif = heif_layout(data) if sniffed == "HEIC" else None
    for block in heif.exif if heif is not None else ():
        check_exif_block(block, "HEIC's EXIF block")  # Pillow reads it for the orientation
    image = _open(data, limits, sniffed)
    try:
        return _check_and_load(image, data, limits, draft_to, jpeg=jpeg, heif=heif)
    except BaseException:
        image.close()
        raise


def _open(data: bytes, limits: ImageLimits, sniffed: str | None) -> ImageFile.ImageFile:
    plugins = [plugin for fmt in limits.allowed_formats for plugin in _PILLOW_PLUGINS[fmt]]
    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that; refuse that band too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if sniffed == "HEIC":
                image = _heif_image_file()(io.BytesIO(data))
            else:
                image = Image.open(io.BytesIO(data), formats=plugins)
    except UnidentifiedImageError:
        if sniffed == "TIFF" and (layout := _unsupported_tiff_layout(data)) is not None:
            raise UnsupportedImageFormat(
                f"TIFFs of {layout} are not supported; save it as RGB, grey or CMYK with "
                "8 or 16 bits a sample."
            ) from None
        if sniffed is not None:
            raise CorruptImage(
                f"The object starts like a {sniffed} image, but its header is truncated or corrupt."
            ) from None
        raise _not_an_image(limits) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _too_many_pixels(exc, limits) from None
    except DECODE_ERRORS as exc:
        if sniffed is None:  # a plugin's lax test took it ("BM" starts a text), then failed
            raise _not_an_image(limits) from None
        if sniffed == "BMP" and str(exc).startswith("Unsupported BMP"):
            # Pillow's words for a valid layout it does not read (A4R4G4B4, a depth).
            words = _describe(exc).removesuffix(".")
            raise UnsupportedImageFormat(f"{words}; save it as a 24-bit BMP or as PNG.") from None
        raise _oversized_metadata(exc) or CorruptImage(
            f"The {sniffed} header is truncated or corrupt: {_describe(exc)}"
        ) from None
    if not isinstance(image, ImageFile.ImageFile):  # pragma: no cover - Pillow contract
        raise NotAnImage("The object is not an image Pillow can read.")
    return image


@functools.cache
def _heif_image_file() -> type[ImageFile.ImageFile]:
    """pi-heif's Pillow image class (importing it loads libheif: about 30 ms, once).

    Only the primary image is read: thumbnails, depth maps and other auxiliary images
    (a phone's HDR gain map) are neither listed nor decoded. libheif's own security
    limits stay on, behind the image rules' tighter ones (``heif_structure``)."""
    import pi_heif  # a native library, loaded by the first HEIC only
    from pi_heif import options

    options.THUMBNAILS = options.DEPTH_IMAGES = options.AUX_IMAGES = False
    # One tile in the decoder at a time, as the memory estimate counts: four threads took
    # as much CPU, and a function at 512 MB has a third of a core.
    options.DECODE_THREADS = 1
    return pi_heif.HeifImageFile


def _not_an_image(limits: ImageLimits) -> NotAnImage:
    return NotAnImage(
        "The object is not an image: its content matches none of "
        f"{', '.join(limits.allowed_formats)}."
    )


def _check_and_load(
    image: ImageFile.ImageFile,
    data: bytes,
    limits: ImageLimits,
    draft_to: tuple[int, int] | None,
    *,
    jpeg: JpegLayout | None = None,
    heif: HeifLayout | None = None,
) -> DecodedImage:
    fmt = format_name(image.format)
    if fmt not in limits.allowed_formats:  # a sniffing gap; Pillow is the authority
        raise UnsupportedImageFormat(
            f"{fmt or 'This'} images are not accepted; send one of "
            f"{', '.join(limits.allowed_formats)}{limits.named('AllowedImageFormats')}."
        )
    width, height = _stored_size(fmt, image, heif)
    # A HEIC is decoded at its coded size (its ispe), and cropped (clap) only after.
    coded_width, coded_height = (heif.width, heif.height) if heif is not None else (width, height)
    if coded_width * coded_height > limits.max_pixels:
        raise ImageTooManyPixels(
            f"The image is {coded_width}x{coded_height} = {coded_width * coded_height} pixels; "
            f"the limit is {limits.max_pixels} pixels{limits.named('MaxImagePixels')}."
        )
    if min(width, height) < limits.min_side:
        raise ImageTooSmall(
            f"The image is {width}x{height} pixels; each side must be at least "
            f"{limits.min_side}{limits.named('MinImageSide')}."
        )
    structure = _structure(fmt, image, data, limits, jpeg=jpeg, heif=heif)
    mode = image.mode
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if draft_to is not None and fmt == "JPEG" and not structure.lossless:
                # A lossless JPEG has no reduced-scale decode: it decodes at full size.
                side = max(draft_to)
                image.draft(None, (side, side))
            _check_memory(fmt, image, (width, height), limits, structure)
            _load(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _too_many_pixels(exc, limits) from None
    except DECODE_ERRORS as exc:
        raise _oversized_metadata(exc) or CorruptImage(
            f"The {fmt} data is truncated or corrupt: {_describe(exc)}"
        ) from None
    decoded: Image.Image = image
    if heif is not None:
        # libheif turns and crops as it decodes, so the stored size is the decoded one
        # turned back. pi-heif copies the whole image again at each load of a file with
        # more than one image, and the preprocessing loads a strip at a time: the decoded
        # pixels are kept as an image of their own.
        width, height = _stored_size(fmt, image, heif)
        decoded = image._new(image.im)
        decoded.format = image.format  # what the model server checks a Content-Type with
        image.close()
    return DecodedImage(
        image=decoded,
        source={
            "format": fmt,
            "mode": mode,
            "width": width,
            "height": height,
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        },
    )


def _stored_size(
    fmt: str | None, image: ImageFile.ImageFile, heif: HeifLayout | None = None
) -> tuple[int, int]:
    """(width, height) as the file stores its pixels, before its orientation is applied,
    for every format alike (the record's ``source_width`` and ``source_height``): Pillow
    reports a TIFF tagged with a quarter turn (orientations 5 to 8) turned already, a
    HEIC cropped (clap) and turned (irot) already, and every other format as stored."""
    width, height = image.size
    if heif is not None and heif.quarter_turns % 2:
        return height, width
    if fmt == "TIFF":
        tags = getattr(image, "tag_v2", None)
        orientation = tags.get(ExifTags.Base.Orientation) if tags is not None else None
        if orientation in (5, 6, 7, 8):
            return height, width
    return width, height


# A PNG's samples on the decoded image's scale, by Pillow's raw mode: it spreads 2- and
# 4-bit grey over 0-255 and keeps a 16-bit RGB sample's high byte (it maps a 1-bit key
# itself, and keeps 16-bit grey whole).
_PNG_KEY_SCALES: dict[str, Callable[[int], int]] = {
    "L;2": lambda sample: sample * 85,
    "L;4": lambda sample: sample * 17,
    "RGB;16B": lambda sample: sample >> 8,
}


def _load(image: ImageFile.ImageFile) -> None:
    """Decode the pixels, righting three things Pillow 13 gets wrong about them.

    libtiff hands Pillow native-order samples, and Pillow says so for every 16-bit raw
    mode but the signed big-endian one: a compressed big-endian signed TIFF came out
    byte-swapped. Pillow leaves a PNG's tRNS colour key as stored while it rescales
    the samples (``_PNG_KEY_SCALES``): the key never matched, and the transparent pixels
    showed in their own colour. And a 32-bit BMP whose alpha mask is set but whose alpha
    is 0 everywhere (Photoshop writes them) is opaque to Windows, Photoshop and browsers:
    as given, it was all transparent, so the model saw a blank background.
    """
    tile = image.tile[0] if image.tile else None
    args = tile.args if tile is not None else None
    if (
        tile is not None
        and tile.codec_name == "libtiff"  # Pillow's own decoder reads the file's order
        and isinstance(args, tuple)
        and args[:1] == ("I;16BS",)
    ):
        image.tile = [tile._replace(args=("I;16NS", *args[1:])), *image.tile[1:]]
    image.load()
    scale = _PNG_KEY_SCALES.get(args) if image.format == "PNG" and isinstance(args, str) else None
    key = image.info.get("transparency")
    if scale is not None and isinstance(key, tuple):
        image.info["transparency"] = tuple(scale(sample) for sample in key)
    elif scale is not None and isinstance(key, int):
        image.info["transparency"] = scale(key)
    if image.format == "BMP" and image.mode == "RGBA" and image.getchannel("A").getbbox() is None:
        image.putalpha(255)


@dataclass(frozen=True)
class _Structure:
    """What the file's structure adds to its decode (``image_structure``)."""

    lossless: bool = False
    jpeg_scans: int = 0
    tile: tuple[int, int] | None = None
    strip_bytes: int = 0
    upright_copy: bool = False
    heif: HeifLayout | None = None  # a HEIC's decoded tiles and alpha plane


def _structure(
    fmt: str,
    image: ImageFile.ImageFile,
    data: bytes,
    limits: ImageLimits,
    *,
    jpeg: JpegLayout | None = None,
    heif: HeifLayout | None = None,
) -> _Structure:
    """Refuse a structure that would cost far more than the pixels (thousands of JPEG
    scans, a TIFF tile larger than the pixel limit); describe the rest. ``jpeg`` and
    ``heif``: the layout already read from the bytes, if they were sniffed as one."""
    if heif is not None:
        if heif.coded_pixels > limits.max_pixels:
            raise ImageTooManyPixels(
                f"The HEIC's {heif.width}x{heif.height} image is coded in {heif.tiles} "
                f"tile(s) of {heif.coded_pixels} pixels in all, which libheif decodes whole; "
                f"the limit is {limits.max_pixels} pixels{limits.named('MaxImagePixels')}."
            )
        in_time = None if limits.memory_mb is None else heic_coded_pixel_limit(limits.memory_mb)
        if in_time is not None and heif.decode_work > in_time:
            costlier = (
                f" (by their chroma and bit depth, as long to decode as {heif.decode_work} "
                "pixels of a phone's 8-bit 4:2:0 tiles)"
                if heif.decode_work > heif.coded_pixels
                else ""
            )
            raise ImageTooManyPixels(
                f"The HEIC's {heif.width}x{heif.height} image is coded in {heif.tiles} tile(s) "
                f"of {heif.coded_pixels} pixels in all{costlier}, which libheif decodes whole; "
                f"at {limits.memory_mb} MB (the function's MemorySize) at most {in_time} are "
                "decoded in its time: send it as JPEG, or smaller."
            )
        return _Structure(heif=heif)
    if fmt == "JPEG":
        layout = jpeg or jpeg_layout(data)
        if layout.scans > MAX_JPEG_SCANS:
            raise ImageTooComplex(
                f"The JPEG has more than {MAX_JPEG_SCANS} scans, and each one re-reads the "
                f"whole image; at most {MAX_JPEG_SCANS} are decoded."
            )
        _check_jpeg_data(layout, image.size)
        return _Structure(lossless=layout.lossless, jpeg_scans=layout.scans)
    if fmt == "TIFF":
        tags = getattr(image, "tag_v2", None)
        _check_tiff_samples(tags)
        _read_planar_16_bit_samples(image, tags, data)
        tile = tiff_tile_size(tags)
        if tile is not None and tile[0] * tile[1] > limits.max_pixels:
            raise ImageTooManyPixels(
                f"The TIFF's tiles are {tile[0]}x{tile[1]} = {tile[0] * tile[1]} pixels each, "
                f"and each is decoded whole; the limit is {limits.max_pixels} pixels"
                f"{limits.named('MaxImagePixels')}."
            )
        orientation = tags.get(ExifTags.Base.Orientation) if tags is not None else None
        return _Structure(
            tile=tile,
            strip_bytes=tiff_strip_bytes(tags, image.size),
            upright_copy=orientation not in (None, 1),
        )
    if fmt == "PNG" and data.startswith(PNG_SIGNATURE):
        _check_png_data(data, image.size)
    if fmt == "BMP" and (coding := bmp_run_length(image.info)) is not None:
        _check_bmp_run_length(coding, image, data)
    return _Structure()


_TIFF_SAMPLE_FORMAT, _TIFF_BITS_PER_SAMPLE = 339, 258
# (SampleFormat, bits) that Pillow decodes into the wrong numbers: unsigned 32-bit samples
# as signed (the brightest half turned black), signed 8-bit ones as unsigned.
_TIFF_MISREAD_SAMPLES = {(1, 32): "unsigned 32-bit integer", (2, 8): "signed 8-bit integer"}


def _check_tiff_samples(tags: Mapping[int, object] | None) -> None:
    if tags is None:
        return
    sample = (
        _first(tags.get(_TIFF_SAMPLE_FORMAT, 1)),
        _first(tags.get(_TIFF_BITS_PER_SAMPLE, 1)),
    )
    kind = _TIFF_MISREAD_SAMPLES.get(sample)  # type: ignore[arg-type]
    if kind is not None:
        raise UnsupportedImageFormat(
            f"TIFFs of {kind} samples are not supported; save it with 8 or 16 bits a "
            "sample (unsigned), or, if grey, as floating point."
        )


_TIFF_PLANAR_CONFIGURATION = 284
# The colour channels whose 16-bit samples Pillow 13 can unpack one channel at a time.
_PLANAR_16_BIT_BANDS = frozenset("RGBA")


def _read_planar_16_bit_samples(
    image: ImageFile.ImageFile, tags: Mapping[int, object] | None, data: bytes
) -> None:
    """Have Pillow read an uncompressed TIFF stored a channel at a time (PlanarConfiguration
    2, Photoshop's "Pixel Order: Per Channel") with 16-bit samples as 16-bit samples.

    Pillow 13 reads each such channel through its 8-bit raw mode ("R", "G", ...), so the
    picture came out as noise. The channel's 16-bit raw mode keeps each sample's high
    byte, as Pillow reads interleaved 16-bit RGB; a channel with no such mode is refused.
    """
    if tags is None or tags.get(_TIFF_PLANAR_CONFIGURATION) != 2:
        return
    if _first(tags.get(_TIFF_BITS_PER_SAMPLE, 1)) != 16 or not image.tile:
        return
    if any(tile.codec_name != "raw" for tile in image.tile):
        return  # libtiff reads the compressed ones right
    order = "L" if data.startswith(b"II") else "B"
    if image.mode in ("I;16", "I;16B"):
        # One sample a pixel is stored alike either way; Pillow took "I" for its raw mode.
        image.tile = [
            tile._replace(
                args=(image.mode, *(tile.args[1:] if isinstance(tile.args, tuple) else ()))
            )
            for tile in image.tile
        ]
        return
    tiles = []
    for tile in image.tile:
        args = tile.args if isinstance(tile.args, tuple) else ()
        band = args[0] if args else None
        if band not in _PLANAR_16_BIT_BANDS:
            raise UnsupportedImageFormat(
                f"TIFFs of 16-bit {image.mode} samples stored a channel at a time "
                "(PlanarConfiguration 2) are not supported; save it with the channels "
                "interleaved, or compressed."
            )
        tiles.append(tile._replace(args=(f"{band};16{order}", *args[1:])))
    image.tile = tiles


def _first(value: object) -> object:
    """A TIFF tag's first value (per-sample tags are tuples)."""
    return value[0] if isinstance(value, tuple) and value else value


def _check_bmp_run_length(coding: str, image: ImageFile.ImageFile, data: bytes) -> None:
    """Refuse a run-length BMP whose pixels or run-length data would keep Pillow's Python
    decoder busy for seconds (``MAX_BMP_RLE_PIXELS``, ``MAX_BMP_RLE_BYTES``)."""
    width, height = image.size
    if width * height > MAX_BMP_RLE_PIXELS:
        raise ImageTooComplex(
            f"The BMP is {coding}-compressed and {width}x{height} = {width * height} pixels; "
            f"{coding} is decoded in Python, so at most {MAX_BMP_RLE_PIXELS} pixels are "
            "(save it uncompressed or as PNG)."
        )
    # The decoder reads commands from the pixel data's offset until the image is full or
    # the bitmap ends; a command that writes nothing costs as much as one that does.
    coded = len(data) - (image.tile[0].offset if image.tile else 0)
    if coded > MAX_BMP_RLE_BYTES:
        raise ImageTooComplex(
            f"The BMP's {coding} data is {coded} bytes; {coding} is decoded in Python, "
            f"a command at a time, so at most {MAX_BMP_RLE_BYTES} bytes are "
            "(save it uncompressed or as PNG)."
        )


def _check_memory(
    fmt: str,
    image: ImageFile.ImageFile,
    header_size: tuple[int, int],
    limits: ImageLimits,
    structure: _Structure,
) -> None:
    """Refuse, before decoding, an image whose decode would not fit in the function's
    memory: the function would be killed instead of recording why."""
    if limits.memory_mb is None:
        return
    buffered = fmt == "JPEG" and (bool(image.info.get("progressive")) or structure.jpeg_scans > 1)
    needed = decode_bytes(
        fmt,
        image.mode,
        image.size,
        header_size if buffered else None,
        tile=structure.tile,
        strip_bytes=structure.strip_bytes,
        copies=2 if structure.upright_copy else 1,
        heif=structure.heif,
    )
    available = (limits.memory_mb - FUNCTION_RESERVE_MB) * 2**20
    if needed > available:
        width, height = header_size
        raise ImageTooManyPixels(
            f"Decoding this {width}x{height} {fmt} image takes about {needed // 2**20} MB; "
            f"the function has {limits.memory_mb} MB (its MemorySize), "
            f"{FUNCTION_RESERVE_MB} MB of it for itself."
        )


def _too_many_pixels(exc: BaseException, limits: ImageLimits) -> ImageTooManyPixels:
    """Pillow's own bomb guard fired: the size from its message, and our limit (not its
    internal one)."""
    found = _DECLARED_PIXELS.search(str(exc))
    declared = f"{int(found.group(1))} pixels" if found else "too many pixels"
    if found and int(found.group(1)) <= limits.max_pixels:  # MaxImagePixels raised past it
        return ImageTooManyPixels(
            f"The image header declares {declared}, more than the decoder takes "
            f"({Image.MAX_IMAGE_PIXELS} pixels, below MaxImagePixels {limits.max_pixels})."
        )
    return ImageTooManyPixels(
        f"The image header declares {declared}; "
        f"the limit is {limits.max_pixels} pixels{limits.named('MaxImagePixels')}."
    )


_DECLARED_PIXELS = re.compile(r"Image size \((\d+) pixels\)")


def _check_jpeg_markers(layout: JpegLayout) -> None:
    """Refuse, before Pillow parses the header a byte at a time in Python, a JPEG whose
    markers cost far more than its pixels: a flood of empty segments or padding (5 MiB of
    them took 4-6 s of CPU), or more restart markers than the image has blocks (libjpeg
    resynchronises at each); and one whose restart markers show a scan cut short."""
    if layout.segments > MAX_JPEG_SEGMENTS:
        raise ImageTooComplex(
            f"The JPEG has more than {MAX_JPEG_SEGMENTS} marker segments; encoders write "
            "a few dozen."
        )
    if layout.padding > MAX_JPEG_PADDING_BYTES:
        raise ImageTooComplex(
            f"The JPEG has more than {MAX_JPEG_PADDING_BYTES} bytes of padding or data "
            "outside its segments, which a decoder reads and discards a byte at a time."
        )
    if layout.short_scan is not None:
        # libjpeg fills a scan cut short with grey and says nothing, so a JPEG cut and
        # given its EOI again decodes; the restart markers say how much was coded.
        scan, found, needed = layout.short_scan
        raise CorruptImage(
            f"The JPEG data is truncated: its scan {scan} has {found} of the {needed} restart "
            "markers its image needs, so the rest of the scan is missing."
        )
    blocks = layout.blocks
    if blocks is not None and layout.restarts > max(1, layout.scans) * blocks:
        raise ImageTooComplex(
            f"The JPEG has {layout.restarts} restart markers, more than its "
            f"{max(1, layout.scans)} scan(s) of {blocks} blocks can hold."
        )


def _check_jpeg_data(layout: JpegLayout, size: tuple[int, int]) -> None:
    """Refuse a JPEG whose scans are too short for its frame: every block takes at least
    a bit (``JpegLayout.frame_blocks``), and libjpeg fills what is missing with grey
    without a word, so a 700-byte file declaring 5000x5000 pixels decoded as a grey
    image. Checked after the pixel limit, which names a bomb past it."""
    if layout.coded_bytes * 8 < layout.frame_blocks:
        width, height = size
        raise CorruptImage(
            f"The JPEG data is truncated: its {width}x{height} image has {layout.frame_blocks} "
            f"blocks of pixels, each coded in at least one bit, but its scans hold only "
            f"{layout.coded_bytes} bytes."
        )


def _check_png_data(data: bytes, size: tuple[int, int]) -> None:
    """Refuse a PNG whose image data is too short for its header: Pillow leaves the rows a
    deflate stream that ends early does not reach black, so a 120-byte file declaring
    5000x5000 pixels decoded as a black image. Deflate shrinks data at most
    ``DEFLATE_MAX_RATIO`` times, which refuses most such files from their size alone; the
    others are measured (a short stream padded with bytes Pillow never inflates)."""
    stored, needed = png_image_data(data)
    width, height = size
    if stored * DEFLATE_MAX_RATIO < needed:
        raise CorruptImage(
            f"The PNG data is truncated: its {width}x{height} image inflates to {needed} bytes, "
            f"but its IDAT data is {stored} bytes, and deflate shrinks data at most "
            f"{DEFLATE_MAX_RATIO} times."
        )
    inflated = png_inflated_size(data, needed)
    if inflated is not None and inflated < needed:
        raise CorruptImage(
            f"The PNG data is truncated: its {width}x{height} image inflates to {needed} bytes, "
            f"but its image data's deflate stream ends after {inflated} bytes."
        )


def _check_jpeg_frame(layout: JpegLayout) -> None:
    """Name the JPEG processes the decoder does not have, instead of calling them corrupt:
    JPEG-LS, hierarchical frames, arithmetic coding, and more than 8 bits a sample."""
    if layout.frame_marker == JPEG_LS_SOF_MARKER:
        raise UnsupportedImageFormat(
            "JPEG-LS images are not supported; send PNG or a baseline JPEG."
        )
    if layout.frame_marker in HIERARCHICAL_SOF_MARKERS:
        raise UnsupportedImageFormat(
            "Hierarchical JPEGs are not supported; save it as a baseline or progressive JPEG."
        )
    if layout.frame_marker in ARITHMETIC_SOF_MARKERS:
        raise UnsupportedImageFormat(
            "Arithmetic-coded JPEGs are not supported; save it with Huffman coding "
            "(a baseline or progressive JPEG)."
        )
    if layout.precision not in (None, 8):
        kind = "lossless JPEGs" if layout.lossless else "JPEGs"
        raise UnsupportedImageFormat(
            f"{layout.precision}-bit {kind} are not supported; save it with 8 bits a sample."
        )


def _unsupported_tiff_layout(data: bytes) -> str | None:
    """The pixel layout of a TIFF that Pillow refused for it ("unknown pixel mode": float
    or 32-bit RGB, 16-bit Lab, 16-bit grey with alpha), in words; ``None`` when Pillow
    refused it for anything else, so it is corrupt. Only runs after Pillow refused it."""
    try:
        TiffImagePlugin.TiffImageFile(io.BytesIO(data)).close()
    except SyntaxError as exc:
        return tiff_sample_layout(data) if "unknown pixel mode" in str(exc) else None
    except DECODE_ERRORS:
        return None
    return None


def _oversized_metadata(exc: BaseException) -> ImageTooComplex | None:
    """Pillow's guard against a PNG whose compressed text or colour profile inflates to
    more than it reads (a metadata bomb, or a very large comment): not corruption."""
    text = str(exc)
    if "MAX_TEXT_CHUNK" not in text and "MAX_TEXT_MEMORY" not in text:
        return None
    return ImageTooComplex(
        "The PNG's text or colour-profile chunks inflate to more than is read "
        f"({PngImagePlugin.MAX_TEXT_CHUNK // 2**20} MB each, "
        f"{PngImagePlugin.MAX_TEXT_MEMORY // 2**20} MB in all); save it without that metadata."
    )


def _describe(exc: BaseException) -> str:
    """One line about a decoder error, ending in a full stop."""
    if isinstance(exc, OverflowError):  # Python's words name no part of the file
        return "an offset or size in it is larger than any file."
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if text.endswith(".") else text + "."
