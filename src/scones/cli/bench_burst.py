"""``scones bench burst`` (``make burst``): thousands of uploads at once, then an audit.

Uploads N images to a fresh offline stack while delivery is paused (a fleet of
cameras syncing at once), lets the stack drain the backlog, then checks every
upload against the results table and the dead-letter queue: lost (no record),
duplicated and dead-lettered. The table keeps one item per object version, so a
duplicate shows elsewhere: a record for no upload, or an image classified twice (more
model invocations than classified records: an upload received twice runs twice). The
ingest queue must be empty. Prints the wall time and images/s. Exit code 1 when
anything was lost (also when the wait gives up: the audit still runs), duplicated,
dead-lettered, FAILED or left on the ingest queue.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from typing import Any

from scones.cli.arguments import (
    check_writable_file,
    file_or_folder,
    non_negative_int,
    output_file,
    positive_int,
    seconds,
)
from scones.safe_files import write_json_file

DEFAULT_IMAGES = 2000
# Generating a 12-megapixel JPEG takes about half a second: a few distinct ones serve.
PHOTO_VARIANTS = 8


def register(benchmarks: Any) -> None:
    from scones.cli.bench import DEFAULT_IMAGES as DATA
    from scones.paths import SHIPPED_MODEL_DIR

    parser = benchmarks.add_parser(
        "burst",
        help="N uploads at once, then count lost and duplicated records",
        description=__doc__,
    )
    parser.add_argument(
        "--images", type=positive_int, default=DEFAULT_IMAGES, help="uploads (default 2000)"
    )
    parser.add_argument(
        "--model", type=file_or_folder, default=SHIPPED_MODEL_DIR, help="artifact folder"
    )
    parser.add_argument(
        "--data", type=file_or_folder, default=DATA, help="folder of <label>/*.png images"
    )
    parser.add_argument(
        "--photos",
        type=non_negative_int,
        default=0,
        help="of the uploads, this many are camera-sized JPEGs (4000x3000, about 1.8 MB; "
        f"{PHOTO_VARIANTS} distinct pictures, each under its own key), spread through the burst",
    )
    parser.add_argument(
        "--timeout",
        type=seconds,
        default=300,
        help="seconds to wait while no new record comes in (default 300); the wait ends "
        "sooner once no S3 event is queued and no execution runs",
    )
    parser.add_argument("--json", type=output_file, help="also write the result as JSON here")
    parser.set_defaults(handler=run_burst)


def run_burst(args: argparse.Namespace) -> int:
    from scones.cli.errors import CommandError, CommandFailed
    from scones.cli.model_check import check_model_option

    if args.images < 1:
        raise CommandError("--images must be at least 1")
    if args.photos > args.images:
        raise CommandError(f"--photos {args.photos} is more than --images {args.images}")
    check_model_option(args.model, {})
    if args.json:
        check_writable_file(args.json)
    from scones.offline.deploy import DeployError
    from scones.offline.stack import StackError

    try:
        return _burst(args)
    except (StackError, DeployError) as exc:
        raise CommandFailed(str(exc)) from exc


def _burst(args: argparse.Namespace) -> int:
    """Upload with delivery paused, let the stack drain the backlog, then audit it."""
    from scones_core.records import (
        CLASSIFIED_STATUSES,
        KEY_ATTRIBUTE,
        STATUS_ATTRIBUTE,
        VERSION_ATTRIBUTE,
        classified_status,
    )

    from scones.offline.client import StackClientError
    from scones.offline.stack import OfflineStack, StackOptions
    from scones.offline.workflow_bench import load_images

    images = mix_photos(load_images(args.data, args.images), args.photos)
    with OfflineStack(StackOptions(model_dir=args.model)) as stack:
        api = stack.api()
        started = time.perf_counter()
        with stack.delivery_paused():
            uploads = [api.upload_bytes(name, data, media) for name, data, media in images]
        uploaded_s = time.perf_counter() - started
        drained = time.perf_counter()

        # On a terminal only, and on stderr: standard output is the measurement alone.
        live = sys.stderr.isatty()

        def progress(done: int, total: int) -> None:
            if live:
                print(f"\r{done}/{total} records", end="", file=sys.stderr, flush=True)

        try:
            api.wait_for_records(
                uploads,
                timeout=args.timeout,
                on_progress=progress,
                poll_seconds=2.0,
                in_flight=stack.in_flight,
            )
        except StackClientError as exc:  # some never got a record: the audit counts them
            print(f"\n{exc}", file=sys.stderr)
        if live:
            print(file=sys.stderr)
        wall_s = time.perf_counter() - drained
        # Let any late duplicate land before the audit.
        time.sleep(2.0)
        records = api.records()
        dead_letters = stack.queue_depth(api.endpoints.dead_letter_queue_url)
        ingest_left = stack.queue_depth(stack.stack.outputs["IngestQueueUrl"])
        invocations = _model_invocations(api.endpoints.model_url)
    wanted = {(u.key, u.version_id) for u in uploads}
    per_upload = Counter((r.get(KEY_ATTRIBUTE), r.get(VERSION_ATTRIBUTE)) for r in records)
    classified = sum(1 for r in records if classified_status(r) in CLASSIFIED_STATUSES)
    result = {
        "images": len(uploads),
        "photos": args.photos,
        "upload_s": round(uploaded_s, 1),
        "drain_s": round(wall_s, 1),
        "images_per_s": round(len(uploads) / wall_s, 2),
        "records": len(records),
        "lost": sum(1 for key in wanted if key not in per_upload),
        "duplicated": sum(1 for key in per_upload if key not in wanted)
        + max(0, invocations - classified),
        "model_invocations": invocations,
        "dead_letters": dead_letters,
        "ingest_queue_left": ingest_left,
        "statuses": dict(Counter(str(r.get(STATUS_ATTRIBUTE)) for r in records)),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        write_json_file(args.json, result)
    # Every upload recorded once, nothing left queued, and no infrastructure failure: a
    # FAILED image leaves a dead letter too (and a burst must not outrun its retries).
    clean = (
        result["lost"] == 0
        and result["duplicated"] == 0
        and ingest_left == 0
        and dead_letters == 0
        and result["statuses"].get("FAILED", 0) == 0
    )
    return 0 if clean else 1


def mix_photos(images: list[tuple[str, bytes]], photos: int) -> list[tuple[str, bytes, str]]:
    """``images`` as (key, bytes, Content-Type), every k-th replaced by a camera JPEG so
    that ``photos`` of them are photos, spread evenly through the upload order."""
    from scones_core.image_rules import MEDIA_TYPES

    from scones.costs.measure import photo_jpeg

    mixed = [(name, data, MEDIA_TYPES["PNG"]) for name, data in images]
    if photos == 0:
        return mixed
    pictures = [photo_jpeg(seed) for seed in range(min(photos, PHOTO_VARIANTS))]
    step = len(images) / photos
    for n in range(photos):
        i = int(n * step)
        name = mixed[i][0].rsplit("/", 1)[0] + f"/{i:06d}-camera-{n % len(pictures)}.jpg"
        mixed[i] = (name, pictures[n % len(pictures)], MEDIA_TYPES["JPEG"])
    return mixed


def _model_invocations(model_url: str) -> int:
    """Every invocation the model server answered (its ``/ping`` counts them per variant)."""
    import urllib.request

    with urllib.request.urlopen(f"{model_url}/ping", timeout=10) as response:  # noqa: S310
        ping = json.loads(response.read())
    return sum(int(variant["invocations"]) for variant in ping["variants"])
