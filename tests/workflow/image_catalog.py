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
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

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


def png_with_bad_crc(data: bytes) -> bytes:
    broken = bytearray(data)
    at = broken.find(b"IDAT")
    length = int.from_bytes(broken[at - 4 : at], "big")
    broken[at + 4 + length] ^= 0xFF  # first byte of the IDAT chunk's CRC
    return bytes(broken)


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG of ``width`` x ``height`` black 1-bit pixels: tiny on disk, huge decoded."""
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload).to_bytes(4, "big")
        return len(payload).to_bytes(4, "big") + kind + payload + crc

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([1, 0, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
    )


def rejected(name: str, data: bytes, code: str, words: str, key: str | None = None) -> Entry:
    return Entry(name, key or f"catalog/{name}", data, "REJECTED", code, words)


def bad_inputs(source: Path, max_bytes: int, max_pixels: int) -> list[Entry]:
    """One upload per image rule (and per kind of non-raster file)."""
    png = source.read_bytes()
    jpeg = encode(Image.open(source).convert("RGB"), "JPEG", quality=90)
    side = int(max_pixels**0.5) + 1
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("photo.png", png)
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
        rejected("photo.png.gz", gzip.compress(png), "NotARasterImage", "gzip"),
        rejected(
            "iphone.heic",
            b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + b"\0" * 64,
            "UnsupportedImageFormat",
            "HEIC",
        ),
        rejected("layers.psd", b"8BPS\0\x01" + b"\0" * 64, "UnsupportedImageFormat", "PSD"),
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
        valid("scan.tiff", encode(rgb, "TIFF", compression="tiff_lzw"), SAME_INPUT),
        valid("cmyk.tiff", encode(cmyk, "TIFF"), SAME_INPUT),
        valid("exif-rotated.png", encode(rotated, exif=exif.tobytes()), SAME_INPUT),
        valid("gray16.png", encode(sixteen), SAME_INPUT, src=encode(gray)),
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
