"""``scones bench memory``: the serialize step's peak memory on the largest images it accepts.

Each supported format and colour mode is generated at the template's ``MaxImagePixels``
(smooth content, so the file stays under ``MaxImageBytes`` as a hostile upload would) and
decoded in a fresh interpreter twice: by ``normalise_image`` with SerializeImage's deployed
settings and memory, and by the bare Pillow a naive handler would write (open, load,
convert to RGB, resize). Each row prints the rise in peak RSS over the interpreter's own,
the CPU time of the decode, and the image rules' estimate (``image_rules.decode_bytes``)
that decides, before decoding, whether an image fits the function's memory. ``--compare``
runs another checkout's ``layers/shared`` on the same files too.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scones.cli.arguments import check_writable_file, file_or_folder, output_file
from scones.cli.cost import LAMBDA_MEMORY_MB
from scones.cli.errors import CommandError
from scones.safe_files import write_json_file

# WebP's largest side (libwebp's WEBP_MAX_DIMENSION): the largest square image the
# benchmark can make in every one of its formats.
WEBP_MAX_SIDE = 16383
MAX_PIXELS = WEBP_MAX_SIDE**2

_CHILD = """
import io, json, sys, time
from PIL import Image
from scones_core.errors import ImageRejected
from scones_core.images import normalise_image
from scones_core.settings import ImageLimits
def peak_mb():  # this process's own high-water mark (ru_maxrss survives exec from the parent)
    with open("/proc/self/status") as status:
        return next(int(l.split()[1]) for l in status if l.startswith("VmHWM")) / 1024
path, how = sys.argv[1], sys.argv[2]
data = open(path, "rb").read()
limits = ImageLimits.from_env()
before = peak_mb()
started = time.process_time()
outcome = "decoded"
try:
    if how == "serialize":
        normalise_image(data, limits)
    else:
        Image.MAX_IMAGE_PIXELS = None  # the naive handler has no pixel limit
        if path.endswith(".heic"):  # with pi-heif's plugin as its documentation registers it
            import pi_heif
            pi_heif.register_heif_opener()
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            image.convert("RGB").resize(limits.model_input_size, Image.Resampling.BICUBIC)
except ImageRejected as exc:
    outcome = f"refused: {exc.code}"
cpu_ms = (time.process_time() - started) * 1000
print(json.dumps({"rise_mb": peak_mb() - before, "cpu_ms": cpu_ms, "outcome": outcome}))
"""


def register(benchmarks: Any) -> None:
    parser = benchmarks.add_parser(
        "memory",
        help="serialize step's peak memory on the largest accepted image of every format",
    )
    parser.add_argument(
        "--pixels", type=int, help="image size in pixels (default: the template's MaxImagePixels)"
    )
    parser.add_argument(
        "--memory-mb",
        type=int,
        help="SerializeImage's memory (default: its MemorySize in the template)",
    )
    parser.add_argument(
        "--compare",
        type=file_or_folder,
        metavar="DIR",
        help="also run another checkout's layers/shared (DIR/layers/shared) on the same files",
    )
    parser.add_argument("--json", type=output_file, help="also write the results as JSON here")
    parser.set_defaults(handler=_run)


def _cases(max_bytes: int) -> dict[str, tuple[str, str, Callable[[Any], Any], dict[str, Any]]]:
    """name -> (format, mode, make(rgba gradient) -> image, save options)."""
    return {
        "PNG RGB": ("PNG", "RGB", lambda im: im.convert("RGB"), {}),
        "PNG RGBA": ("PNG", "RGBA", lambda im: im, {}),
        "PNG RGBA, 8 pixels wide": ("PNG", "RGBA", _long, {}),
        "PNG 16-bit grey": ("PNG", "I;16", _sixteen_bit, {}),
        "PNG palette + transparency": ("PNG", "P", _palette, {"transparency": 0}),
        "TIFF RGBA (deflate)": ("TIFF", "RGBA", lambda im: im, {"compression": "tiff_deflate"}),
        "TIFF CMYK (deflate)": (
            "TIFF",
            "CMYK",
            lambda im: im.convert("CMYK"),
            {"compression": "tiff_deflate"},
        ),
        "TIFF float (deflate)": (
            "TIFF",
            "F",
            lambda im: im.getchannel(0).convert("F"),
            {"compression": "tiff_deflate"},
        ),
        "WEBP RGBA (lossless)": ("WEBP", "RGBA", lambda im: im, {"lossless": True}),
        # The same pixels with scattered noise, so the file nears MaxImageBytes: the
        # function then holds the upload's bytes beside the largest decode.
        "WEBP lossless, ~MaxImageBytes": (
            "WEBP",
            "RGBA",
            lambda im: _noisy(im, int(max_bytes * 0.95)),
            {"lossless": True, "method": 0},
        ),
        "GIF palette": ("GIF", "P", _palette, {}),
        "JPEG RGB": ("JPEG", "RGB", lambda im: im.convert("RGB"), {"quality": 90}),
        "JPEG RGB progressive": (
            "JPEG",
            "RGB",
            lambda im: im.convert("RGB"),
            {"quality": 90, "progressive": True},
        ),
        # A phone's layout: a grid of 512x512 HEVC tiles (scones.heic_writer), each a
        # copy of one real coded photo tile, cropped to the size measured.
        "HEIC grid of 512x512 tiles": ("HEIC", "RGB", _unused, {}),
    }


def _unused(image: Any) -> Any:
    raise AssertionError("a HEIC is written by scones.heic_writer, not by Pillow")


def _heic_grid(side: tuple[int, int]) -> tuple[bytes, Any]:
    """A HEIC grid of ``side`` made of the shipped 512x512 tile, and its layout."""
    from scones_core.heif_structure import heif_layout

    from scones.heic_writer import HEIC_TILE, grid_heic, tile_from_heic

    tile = tile_from_heic(HEIC_TILE.read_bytes())
    columns, rows = -(-side[0] // tile.width), -(-side[1] // tile.height)
    data = grid_heic(tile, rows, columns, side)
    return data, heif_layout(data)


def _noisy(image: Any, target_bytes: int) -> Any:
    """``image`` with random pixels scattered over it, as many as make a lossless WebP of
    about ``target_bytes`` (its size grows about in proportion to the noise)."""
    import numpy as np
    from PIL import Image

    pixels = np.asarray(image).copy()
    rng = np.random.default_rng(0)

    def scattered(share: float) -> Any:
        noisy = pixels.copy()
        hit = rng.random(pixels.shape[:2]) < share
        noisy[hit, :3] = rng.integers(0, 256, (int(hit.sum()), 3), dtype=np.uint8)
        return Image.fromarray(noisy, "RGBA")

    share = 0.01
    for _ in range(3):  # the size is not quite proportional: more trials correct it
        trial = io.BytesIO()
        scattered(share).save(trial, format="WEBP", lossless=True, method=0)
        share = min(1.0, share * target_bytes / len(trial.getvalue()))
    return scattered(share)


def _sixteen_bit(image: Any) -> Any:
    return image.getchannel(0).convert("I").point(lambda v: v * 200).convert("I;16")


def _long(image: Any) -> Any:
    """The same pixels as one column 8 wide: only its centre is cropped for the model."""
    return image.resize((8, image.width * image.height // 8))


def _palette(image: Any) -> Any:
    return image.convert("RGB").quantize(64)


def _gradient(side: tuple[int, int]) -> Any:
    """Smooth RGBA content of ``side``: compresses like a hostile flat upload."""
    from PIL import Image

    ramp = Image.linear_gradient("L")
    bands = [
        ramp.resize(side),
        ramp.rotate(90).resize(side),
        ramp.transpose(Image.Transpose.FLIP_TOP_BOTTOM).resize(side),
        ramp.rotate(45).resize(side),
    ]
    return Image.merge("RGBA", bands)


def _measure(path: Path, how: str, env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), how],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        crashed = f"crashed ({done.stderr.strip()[-200:]})"
        return {"rise_mb": math.nan, "cpu_ms": math.nan, "outcome": crashed}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _checked(args: argparse.Namespace, function_env: dict[str, str]) -> tuple[int, int]:
    """The pixels and memory to measure (the template's unless given), and every option
    checked before the first image is made."""
    from scones.costs.model import Settings

    pixels = int(function_env["MAX_IMAGE_PIXELS"]) if args.pixels is None else args.pixels
    memory = (
        Settings.from_template().memory_mb["SerializeImageFunction"]
        if args.memory_mb is None
        else args.memory_mb
    )
    if not 64 <= pixels <= MAX_PIXELS:
        raise CommandError(
            f"--pixels must be at least 64 and at most {MAX_PIXELS} "
            f"({WEBP_MAX_SIDE}x{WEBP_MAX_SIDE}, the largest WebP image), got {pixels}"
        )
    low, high = LAMBDA_MEMORY_MB
    if not low <= memory <= high:
        raise CommandError(f"--memory-mb must be {low} to {high} (Lambda's bounds), got {memory}")
    if args.compare is not None and not (args.compare / "layers" / "shared").is_dir():
        raise CommandError(f"--compare {args.compare}: no layers/shared there")
    if args.json:
        check_writable_file(args.json)
    return pixels, memory


def _run(args: argparse.Namespace) -> int:
    import os

    from scones_core.image_rules import decode_bytes

    from scones.paths import PROJECT_ROOT
    from scones.template_params import function_environment

    function_env = function_environment("SerializeImageFunction")
    pixels, memory = _checked(args, function_env)
    side = (math.isqrt(pixels), math.isqrt(pixels))
    env = {
        **os.environ,
        **function_env,
        "MAX_IMAGE_PIXELS": str(max(pixels, int(function_env["MAX_IMAGE_PIXELS"]))),
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory),
    }
    paths = {"serialize": PROJECT_ROOT}
    if args.compare is not None:
        paths = {"compared": args.compare, **paths}
    columns = ["bare", *paths]
    gradient = _gradient(side)
    rows: list[dict[str, Any]] = []
    print(
        f"{side[0]}x{side[1]} images ({side[0] * side[1]:,} pixels); SerializeImage at {memory} MB."
        " Rise of peak RSS over the interpreter's own (MB), CPU of the decode (ms); bare is"
        " bare Pillow, estimate is image_rules.decode_bytes."
    )
    header = "".join(f"{c + ' MB':>13}" for c in columns) + f"{'estimate':>10}"
    header += "".join(f"{c + ' ms':>14}" for c in columns)
    print(f"{'image':<28}{'file KB':>8}{header}  outcome")
    with tempfile.TemporaryDirectory(prefix="scones-bench-memory-") as tmp:
        for name, (fmt, mode, make, options) in _cases(
            int(function_env["MAX_IMAGE_BYTES"])
        ).items():
            heif = None
            if fmt == "HEIC":
                data, heif = _heic_grid(side)
            else:
                out = io.BytesIO()
                make(gradient).save(out, format=fmt, **options)
                data = out.getvalue()
            path = Path(tmp) / f"{len(rows)}.{fmt.lower()}"
            path.write_bytes(data)
            measured = {
                column: _measure(
                    path,
                    "bare" if column == "bare" else "serialize",
                    {**env, "PYTHONPATH": str(paths.get(column, PROJECT_ROOT) / "layers/shared")},
                )
                for column in columns
            }
            # JPEG decodes at an eighth (its draft); progressive keeps full-size coefficients.
            decoded = (side[0] // 8, side[1] // 8) if fmt == "JPEG" else side
            progressive = side if options.get("progressive") else None
            estimate = decode_bytes(fmt, mode, decoded, progressive, heif=heif) / 2**20
            row: dict[str, Any] = {"image": name, "file_bytes": path.stat().st_size}
            for column, result in measured.items():
                row[f"{column}_rise_mb"] = round(result["rise_mb"], 1)
                row[f"{column}_cpu_ms"] = round(result["cpu_ms"], 1)
            row["estimate_mb"] = round(estimate, 1)
            row["outcome"] = measured["serialize"]["outcome"]
            rows.append(row)
            line = "".join(f"{measured[c]['rise_mb']:>13.1f}" for c in columns)
            line += f"{estimate:>10.1f}" + "".join(
                f"{measured[c]['cpu_ms']:>14.0f}" for c in columns
            )
            print(f"{name:<28}{row['file_bytes'] / 1024:>8.0f}{line}  {row['outcome']}", flush=True)
    if args.json:
        payload = {"pixels": pixels, "memory_mb": memory, "rows": rows}
        write_json_file(args.json, payload)
    return 0
