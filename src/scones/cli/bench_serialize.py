"""``scones bench serialize``: the serialize step's image work against bare Pillow.

Same bytes, same process, alternating runs: ``normalise_image`` (image rules, PNG CRC check,
JPEG draft, EXIF, crop, resize, PNG encode) against the bare Pillow baseline a naive handler
would write (open, load, convert to RGB, resize to the model's size, encode PNG).
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
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


def _time(fn: Any, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return times


def _run(args: argparse.Namespace) -> int:
    from scones_core.images import normalise_image
    from scones_core.settings import ImageLimits

    from scones.cli.bench import DEFAULT_IMAGES
    from scones.costs.measure import photo_jpeg
    from scones.template_params import function_environment

    # The serialize function's limits as deployed with the template's defaults.
    limits = ImageLimits.from_env(function_environment("SerializeImageFunction"))
    size = limits.model_input_size
    files = {
        "small PNG (32x32, CIFAR)": sorted(DEFAULT_IMAGES.glob("*/*.png"))[0].read_bytes(),
        "photo JPEG (4000x3000)": photo_jpeg(0),
    }
    print(f"{'file':<28}{'bytes':>9}{'serialize p50':>15}{'Pillow p50':>12}{'ratio':>8}")
    for name, data in files.items():
        _time(lambda d=data: normalise_image(d, limits), 2)
        _time(lambda d=data: _bare(d, size), 2)
        ours: list[float] = []
        bare: list[float] = []
        for _ in range(args.repeat):  # alternate, so load on the machine hits both alike
            ours += _time(lambda d=data: normalise_image(d, limits), 1)
            bare += _time(lambda d=data: _bare(d, size), 1)
        a, b = statistics.median(ours), statistics.median(bare)
        print(f"{name:<28}{len(data):>9}{a:>12.2f} ms{b:>9.2f} ms{a / b:>7.2f}x")
    return 0
