"""``scones classify PATH...``: send files through the running offline stack."""

from __future__ import annotations

import argparse
import contextlib
import json

from botocore.exceptions import ClientError
from scones_core.settings import parse_labels

from scones.cli.arguments import file_or_folder, seconds
from scones.cli.display import (
    exit_status,
    make_console,
    print_not_uploaded,
    print_summary,
    records_table,
    stack_progress,
    summarise,
)
from scones.cli.errors import CommandFailed
from scones.cli.inputs import collect_inputs
from scones.cli.stack_state import client_from_state, read_state
from scones.offline.client import StackClientError, Upload, stack_stopped
from scones.template_params import parameter_default


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "classify",
        help="upload files to the running stack and show their records",
        description=(
            "Upload files to the stack that `scones up` runs and wait for their records. A "
            "folder named after one of the stack's labels (ModelLabels) gives its files that "
            "true label, as in `scones run`."
        ),
    )
    parser.add_argument("paths", nargs="+", type=file_or_folder, help="image files or folders")
    parser.add_argument(
        "--timeout",
        type=seconds,
        default=120,
        help="seconds to wait while no new record comes in (default 120)",
    )
    parser.add_argument("--json", action="store_true", help="print the records as JSON")
    parser.set_defaults(handler=classify_command)


def classify_command(args: argparse.Namespace) -> int:
    state = read_state()
    prefix = str(state.get("incoming_prefix") or parameter_default("IncomingPrefix"))
    inputs = collect_inputs(args.paths, labels=_labels(state), prefix=prefix)  # checked first
    api = client_from_state()
    uploads: list[Upload] = []
    errors = make_console(stderr=True)
    # Progress on a terminal only, on standard error: --json's output stays the records.
    progress = stack_progress(errors, disable=not errors.is_terminal)
    try:
        with progress:
            sending = progress.add_task("uploading", total=len(inputs))
            for item in inputs:
                try:
                    uploads.append(api.upload_file(item.path, item.key))
                except KeyboardInterrupt:  # those sent are the stack's: `scones results`
                    left = [i.path for i in inputs[len(uploads) :]]
                    with contextlib.suppress(OSError):
                        print_not_uploaded(errors, left, len(inputs))
                    raise
                progress.advance(sending)
            waiting = progress.add_task("classifying", total=len(uploads))
            records = api.wait_for_records(
                uploads,
                timeout=args.timeout,
                on_progress=lambda done, _total: progress.update(waiting, completed=done),
            )
    except StackClientError as exc:
        # The uploads are the stack's: records that come later are read with `results`.
        raise CommandFailed(
            f"{exc} (they may still come: `scones results` lists what the stack recorded; "
            "a longer --timeout waits for them)"
        ) from exc
    except OSError as exc:
        raise CommandFailed(f"cannot read input: {exc}") from exc
    except Exception as exc:
        if not stack_stopped(exc):
            raise
        # Not botocore's NoSuchBucket or connection error: the stack is gone, not the bucket.
        sent = f"{len(uploads)} of {len(inputs)} uploads sent"
        if isinstance(exc, ClientError):  # its 503: it is stopping, and names what it lacks
            raise CommandFailed(
                f"the stack stopped while classifying: {sent} (the stop names those it has "
                "no record of: `scones down`, or the output of `scones up`)"
            ) from exc
        raise CommandFailed(
            f"the stack could not be reached while classifying (stopped, or killed): {sent} "
            "(a stop names those it had no record of in `scones down` or the output of "
            "`scones up`; a killed stack kept none)"
        ) from exc
    rows = [
        {**records[u], "true_label": item.true_label, "source": str(item.path)}
        for u, item in zip(uploads, inputs, strict=True)
    ]
    summary = summarise(rows)
    if args.json:
        print(json.dumps(rows, indent=2))
        return exit_status(None, summary)
    console = make_console()
    console.print(
        records_table(rows, title="Classified", strip_prefix=api.endpoints.incoming_prefix)
    )
    print_summary(console, summary)
    return exit_status(console, summary)


def _labels(state: dict[str, object]) -> tuple[str, ...]:
    """The running stack's ModelLabels: a folder named after one gives its files that true
    label, as in ``scones run``."""
    return parse_labels(str(state.get("model_labels") or parameter_default("ModelLabels")))
