"""``scones bench payload``: the largest state a classification execution can carry.

Builds the worst inputs the workflow accepts (a 1,024-byte key of bytes JSON escapes,
an image whose model input does not compress: noise at ``ModelInputSize``) and adds up the
execution state at its fullest (the input, SerializeImage's and ClassifyImage's results, and
the failure description), in UTF-8 bytes as Step Functions counts them. The batch level
too: a full SQS batch of worst-case keys, split into executions as the start function splits
it (``ingest.split_batch``), each with the Map's raw results (the record ids) and its
outcome. Limit: 256 KiB; the project keeps it under 64 KiB.
"""

from __future__ import annotations

import argparse
import json
import random
from typing import Any


def register(benchmarks: Any) -> None:
    parser = benchmarks.add_parser("payload", help="largest workflow state for any input")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a template parameter, e.g. --param ModelInputSize=224x224",
    )
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    import io

    from PIL import Image
    from scones_core.images import normalise_image
    from scones_core.objects import ObjectRef
    from scones_core.settings import ImageLimits

    from scones.cli.stack_state import parse_params
    from scones.template_params import function_environment

    # The serialize function's limits as deployed (the template's defaults + --param).
    overrides = parse_params(args.param, defaults={})
    limits = ImageLimits.from_env(
        function_environment("SerializeImageFunction", overrides=overrides)
    )
    width, height = limits.model_input_size
    rng = random.Random(0)
    noise = Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))
    buffer = io.BytesIO()
    noise.save(buffer, format="PNG")
    normalised = normalise_image(buffer.getvalue(), limits)
    state_image = normalised.to_state(123.456)
    key = "incoming/" + "\u0001" * (1024 - 9)  # 1,024 bytes; each control byte escapes to 6
    ref = ObjectRef("b" * 63, key, "v" * 32, "e" * 34, 5_242_880, "0" * 18)
    state: dict[str, Any] = {
        "object": ref.to_json(),
        "event_time": "2026-12-01T00:00:00.000Z",
        "attempt": 99,
        "image": state_image,
        "classification": {
            "label": "motorcycle",
            "confidence": 0.123456789,
            "probabilities": {"bicycle": 0.87654321, "motorcycle": 0.123456789},
            "probabilities_attribute": {
                "bicycle": {"N": "0.87654321"},
                "motorcycle": {"N": "0.123456789"},
            },
            "endpoint_name": "e" * 63,
            "variant": "AllTraffic",
            "duration_ms": 12345.678,
        },
        "error": {"Error": "E" * 256, "Cause": "c" * 32768},
        "failure": {"error_code": "E" * 256, "cause": {"errorMessage": "m" * 1024}},
    }
    size = len(json.dumps(state, ensure_ascii=False).encode())
    batch_size = _largest_batch_state(ref)
    print(
        f"model input {width}x{height}: normalised PNG {len(normalised.png)} B, "
        f"base64 {len(state_image['image_b64'])} B"
    )
    print(f"key {len(key.encode())} B, JSON-escaped {len(json.dumps(key).encode())} B")
    print(f"largest batch-level state: {batch_size} B = {batch_size / 1024:.1f} KiB")
    largest = max(size, batch_size)
    print(
        f"largest state: {largest} B = {largest / 1024:.1f} KiB "
        "(target <= 64 KiB, AWS limit 256 KiB)"
    )
    return 0 if largest <= 64 * 1024 else 1


def _largest_batch_state(worst: Any) -> int:
    """The batch level at its fullest: every image of a full SQS batch has a worst-case key;
    the start function splits them; a group's state holds its input, the Map's raw results
    (one record id per image) and the outcome."""
    from dataclasses import replace

    from scones_core.ingest import PendingImage, split_batch, workflow_input

    from scones.costs.model import Settings

    images = [
        PendingImage(replace(worst, version=f"{n:032d}"), "2026-12-01T00:00:00.000Z")
        for n in range(Settings.from_template().batch_size)
    ]
    largest = 0
    for group in split_batch(images):
        objects = [workflow_input(i.ref, i.event_time) for i in group]
        state = {
            "objects": objects,
            "results": [i.ref.record_id for i in group],
            "outcome": {"images": len(group), "any_failed": True},
        }
        largest = max(largest, len(json.dumps(state, ensure_ascii=False).encode()))
    return largest
