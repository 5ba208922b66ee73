"""``scones bench serialize``: the serialize step's image work against bare Pillow.

Same bytes, same process, alternating runs: ``normalise_image`` (image rules, PNG CRC check,
JPEG draft, EXIF, crop, resize, PNG encode) against the bare Pillow baseline a naive handler
would write (open, load, convert to RGB, resize to the model's size, encode PNG). Two rows
carry a colour profile seen for the first time (the kept transforms are dropped before each
run): an sRGB one, and a hostile one whose floating-point pipeline repeats one element
20,000 times, which LittleCMS would evaluate at every point of its grid if it were read.
"""

from __future__ import annotations

import argparse
import io
import statistics
import struct
import time
from collections.abc import Callable
from typing import Any

from scones.cli.arguments import positive_int


def register(benchmarks: Any) -> None:
    parser = benchmarks.add_parser(
        "serialize", help="serialize step vs bare Pillow on a small PNG and a 4000x3000 JPEG"
    )
    parser.add_argument(
        "--repeat", type=positive_int, default=30, help="timed runs per file and path"
    )
    parser.set_defaults(handler=_run)


def _bare(data: bytes, size: tuple[int, int]) -> bytes:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image.load()
        small = image.convert("RGB").resize(size, Image.Resampling.BICUBIC)
    out = io.BytesIO()
    small.save(out, format="PNG")
    return out.getvalue()


def float_pipeline(matrix: tuple[float, ...], repeat: int = 1) -> bytes:
    """An ICC multiProcessElementsType ("mpet") of 3 channels: one 3x3 matrix element
    (no offsets), listed ``repeat`` times (every position names the same element)."""
    element = b"matf" + bytes(4) + struct.pack(">HH9f3f", 3, 3, *matrix, 0.0, 0.0, 0.0)
    head = b"mpet" + bytes(4) + struct.pack(">HHI", 3, 3, repeat)
    first = len(head) + 8 * repeat
    return head + struct.pack(">II", first, len(element)) * repeat + element


def with_tag(profile: bytes, signature: bytes, data: bytes) -> bytes:
    """``profile`` with one more tag, its data at the end (every offset moved by the one
    table entry added, the header's size made the new size)."""
    (count,) = struct.unpack_from(">I", profile, 128)
    table_end = 132 + 12 * count
    entries = b""
    for index in range(count):
        signature_at = 132 + 12 * index
        offset, size = struct.unpack_from(">II", profile, signature_at + 4)
        entries += profile[signature_at : signature_at + 4] + struct.pack(">II", offset + 12, size)
    body = profile[table_end:] + bytes(-len(profile) % 4)
    offset = 132 + 12 * (count + 1) + len(body)
    entries += signature + struct.pack(">II", offset, len(data))
    tagged = profile[4:128] + struct.pack(">I", count + 1) + entries + body + data
    return struct.pack(">I", len(tagged) + 4) + tagged


def _profiled_png(profile: bytes) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 60, 40)).save(out, format="PNG", icc_profile=profile)
    return out.getvalue()


def _time(fn: Any, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return times


def _run(args: argparse.Namespace) -> int:
    from PIL import ImageCms
    from scones_core.images import normalise_image
    from scones_core.preprocess import forget_transforms
    from scones_core.settings import ImageLimits

    from scones.cli.bench import DEFAULT_IMAGES
    from scones.costs.measure import photo_jpeg
    from scones.template_params import function_environment

    # The serialize function's limits as deployed with the template's defaults.
    limits = ImageLimits.from_env(function_environment("SerializeImageFunction"))
    size = limits.model_input_size
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    hostile = with_tag(srgb, b"D2B0", float_pipeline((1, 0, 0, 0, 1, 0, 0, 0, 1), 20_000))
    files: dict[str, tuple[bytes, Callable[[], None]]] = {
        "small PNG (32x32, CIFAR)": (
            sorted(DEFAULT_IMAGES.glob("*/*.png"))[0].read_bytes(),
            lambda: None,
        ),
        "photo JPEG (4000x3000)": (photo_jpeg(0), lambda: None),
        "PNG, new sRGB profile": (_profiled_png(srgb), forget_transforms),
        "PNG, new hostile profile": (_profiled_png(hostile), forget_transforms),
    }
    print(f"{'file':<28}{'bytes':>9}{'serialize p50':>15}{'Pillow p50':>12}{'ratio':>8}")
    for name, (data, before) in files.items():

        def serialize(d: bytes = data, prepare: Callable[[], None] = before) -> None:
            prepare()
            normalise_image(d, limits)

        _time(serialize, 2)
        _time(lambda d=data: _bare(d, size), 2)
        ours: list[float] = []
        bare: list[float] = []
        for _ in range(args.repeat):  # alternate, so load on the machine hits both alike
            ours += _time(serialize, 1)
            bare += _time(lambda d=data: _bare(d, size), 1)
        a, b = statistics.median(ours), statistics.median(bare)
        print(f"{name:<28}{len(data):>9}{a:>12.2f} ms{b:>9.2f} ms{a / b:>7.2f}x")
    return 0
