"""``scones run``: the whole workflow offline, on the bundled images or on yours."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from scones_core.records import KEY_ATTRIBUTE
from scones_core.settings import parse_labels

from scones.cli.arguments import check_writable_folder, file_or_folder, output_folder, seconds
from scones.cli.display import (
    STOPPING,
    Summary,
    exit_status,
    make_console,
    monitor_line,
    print_not_uploaded,
    print_saved,
    print_summary,
    records_table,
    rows_to_list,
    stack_progress,
    summarise,
)
from scones.cli.errors import CommandError, CommandFailed
from scones.cli.inputs import SAMPLES_DIR, InputFile, collect_inputs
from scones.cli.model_check import check_model_option
from scones.cli.signals import stop_signals_interrupt, stop_signals_recorded
from scones.cli.stack_state import (
    add_stack_options,
    effective_params,
    model_identity,
    stack_params,
)
from scones.cli.up import IN_MEMORY_NOTE
from scones.offline.client import StackClient, StackClientError, Upload
from scones.shown_text import shown


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run the whole workflow offline and show the results",
        description=(
            "Start the offline stack (template.yaml deployed into a local AWS emulator, the "
            "real state machine and handlers, the shipped model behind a SageMaker-compatible "
            "endpoint), upload images, wait for every record, print them (past 100, those "
            "the workflow did not accept), run the monitor and write a report. The stack "
            "lives in memory and stops at the end; every record is saved to "
            "OUT/records-<stack>-<UTC time>.json first."
        ),
    )
    parser.add_argument(
        "paths",
        nargs="*",
        type=file_or_folder,
        help=f"image files or folders (default: {SAMPLES_DIR.name}/, held-out images with "
        "known labels; a folder named after a label gives its images that true label)",
    )
    parser.add_argument(
        "--out",
        type=output_folder,
        default=Path("out"),
        help="folder for the report and the saved records (default: out/)",
    )
    parser.add_argument(
        "--timeout",
        type=seconds,
        default=300,
        help="seconds to wait while no new record comes in (default 300)",
    )
    parser.add_argument("--json", action="store_true", help="print records and summary as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the stack's work folder (function logs, capture files) in OUT/work-<time>/",
    )
    add_stack_options(parser)
    parser.set_defaults(handler=run_command)


def run_command(args: argparse.Namespace) -> int:
    # Everything the user gave is checked before anything starts (in well under a second).
    overrides = stack_params(args.param)
    check_model_option(args.model, overrides)
    parameters = effective_params(overrides)
    labels = parse_labels(parameters["ModelLabels"])
    inputs = collect_inputs(
        args.paths or [SAMPLES_DIR], labels, prefix=parameters["IncomingPrefix"]
    )
    check_writable_folder(args.out)
    started_at = datetime.now(UTC)
    stamp = _reserve_stamp(args.out, started_at.strftime("%Y%m%d-%H%M%S"))
    plan = _Plan(args, overrides, parameters, labels, inputs, started_at, stamp)
    # Standard output failing (a closed pipe, a full disk) loses what is printed, never
    # the run: the records and report files are written all the same (main's
    # GuardedStdout keeps the error for the end).
    try:
        return _run(plan)
    finally:
        _drop_if_empty(args.out / f"run-{stamp}.json")


@dataclass(frozen=True)
class _Plan:
    """What the user asked for, checked before the stack starts."""

    args: argparse.Namespace
    overrides: dict[str, str]
    parameters: dict[str, str]
    labels: tuple[str, ...]
    inputs: list[InputFile]
    started_at: datetime
    stamp: str


def _run(plan: _Plan) -> int:
    args, stamp = plan.args, plan.stamp
    # moto and the model runtime are heavy: import them only when the command runs.
    from scones.offline.deploy import DeployError
    from scones.offline.stack import OfflineStack, StackError, StackOptions
    from scones.paths import SHIPPED_MODEL_DIR

    console = make_console(stderr=args.json)
    # --keep: the work folder (function logs, unpacked code, the capture files) outlives
    # the run; otherwise it is a temporary folder that goes with the stack. Either way it
    # is its owner's only: the capture files hold the uploaded images.
    keep_dir = _private_work_dir(args.out / f"work-{stamp}") if args.keep else None
    options = StackOptions(
        work_dir=keep_dir,
        model_dir=args.model or SHIPPED_MODEL_DIR,
        moto_port=args.port,
        model_port=args.model_port,
        overrides=plan.overrides,
        records_dir=args.out,
    )
    stack = OfflineStack(options)
    with stop_signals_interrupt() as received:
        # One try from the start on: a Ctrl-C the moment start() returns still stops the
        # stack (its temporary folder and its processes go with it).
        started = False
        try:
            with console.status("starting the offline stack (deploying template.yaml)..."):
                stack.start()
                started = True
            results = _use(plan, stack, console)
        except (StackError, DeployError) as exc:  # start() stopped what it had started
            raise CommandFailed(str(exc)) from exc
        finally:
            # stop() is a no-op on a stack that start() already stopped.
            interrupted = sys.exc_info()[0] is not None
            _stop(stack, console, received, interrupted=interrupted, started=started)
        return _report(plan, stack, options, console, results)


@dataclass(frozen=True)
class _Results:
    rows: list[dict[str, Any]]
    summary: Summary
    monitor: dict[str, Any]


def _use(plan: _Plan, stack: Any, console: Console) -> _Results:
    args, inputs = plan.args, plan.inputs
    try:
        console.print(
            f"stack up in {stack.timings['start_s']:.1f} s: bucket [bold]{stack.bucket}[/], "
            f"endpoint {stack.model_url}; uploading {len(inputs)} file(s)"
        )
        console.print(
            f"[yellow]{IN_MEMORY_NOTE}[/] Every record is saved to {args.out}/ as it stops."
        )
        rows, wall = _classify(stack.api(), inputs, args, console)
        summary = summarise(rows, wall)
        stack.flush_capture()
        monitor = stack.api().invoke_monitor()
        if args.keep:
            _keep_capture(stack, stack.work_dir / "capture")
    except StackClientError as exc:
        raise CommandFailed(str(exc)) from exc
    return _Results(rows, summary, monitor)


def _stop(
    stack: Any, console: Console, received: list[int], *, interrupted: bool, started: bool
) -> None:
    """Stop the stack and save its records, whatever arrives meanwhile: every stop signal
    is only recorded (the first one included, on a run that ended by itself), and output
    that cannot be written (the terminal closed: EIO) does not keep the stop from running.
    A stop signal that arrived during a normal stop interrupts the run once it is over."""
    already = len(received)
    with stop_signals_recorded(received):
        if interrupted and started:
            with contextlib.suppress(OSError):
                console.print(STOPPING)
        stack.stop()
    print_saved(console, stack)
    if not interrupted and len(received) > already:
        raise KeyboardInterrupt(signal.Signals(received[already]).name)


def _report(
    plan: _Plan,
    stack: Any,
    options: Any,
    console: Console,
    results: _Results,
) -> int:
    args, parameters = plan.args, plan.parameters
    rows, summary, monitor = results.rows, results.summary, results.monitor
    keep_dir = options.work_dir
    details = {
        "started_at": plan.started_at.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "model": model_identity(options.model_dir),
        "stack_timings_s": {k: round(v, 2) for k, v in stack.timings.items()},
        "parameters": {k: parameters[k] for k in ("ConfidenceThreshold", "EndpointName")},
    }
    # The results are printed and the report files written whatever becomes of the other:
    # a full --out disk does not take the printed results with it, and printing that fails
    # (stdout a closed pipe or a full disk, an encoding error) does not take the files.
    try:
        if args.json:
            document = {"summary": summary.to_json(), "records": rows, "monitor": monitor}
            sys.stdout.write(json.dumps(document) + "\n")
            sys.stdout.flush()
        else:
            listed, title = rows_to_list(rows)
            if listed:
                console.print(records_table(listed, title, strip_prefix=stack.incoming_prefix))
            if len(listed) < len(rows):
                console.print(
                    f"{len(rows) - len(listed)} of {len(rows)} records are not listed here: "
                    "every one is in the run's report and records files (below)"
                )
            print_summary(console, summary)
            _print_monitor(console, monitor)
    finally:
        written = _write_report(plan, results, details)
    if isinstance(written, OSError):
        console.print(f"[red]the report could not be written to {args.out}/:[/] {written}")
        return 1
    if args.json:
        return exit_status(None, summary)
    console.print(f"report: [bold]{written}[/] (records: {written.with_suffix('.json')})")
    if keep_dir is not None:
        console.print(
            f"work folder kept: [bold]{keep_dir}[/] (function logs in logs/, capture files "
            "in capture/, unpacked functions and layers in lambda/)"
        )
    return exit_status(console, summary)


def _write_report(plan: _Plan, results: _Results, details: dict[str, Any]) -> Path | OSError:
    """``run-<stamp>.html`` and ``run-<stamp>.json``; the path of the page, or the error
    that kept them from being written."""
    from scones.reports.run_report import write_run_report
    from scones.safe_files import write_text_atomically

    args, parameters, stamp = plan.args, plan.parameters, plan.stamp
    try:
        report = write_run_report(
            args.out / f"run-{stamp}.html",
            results.rows,
            results.summary.to_json(),
            plan.labels,
            float(parameters["ConfidenceThreshold"]),
            details=details,
            parameters=parameters,
        )
        document = {
            "run": details,
            "summary": results.summary.to_json(),
            "records": results.rows,
            "monitor": results.monitor,
        }
        write_text_atomically(args.out / f"run-{stamp}.json", json.dumps(document, indent=2) + "\n")
    except OSError as exc:
        return exc
    return report


def _reserve_stamp(out: Path, stamp: str) -> str:
    """``stamp``, or ``stamp-2``, ``-3``...: the first whose ``run-<stamp>.json`` this
    process creates, so two runs started in the same second never share report files or
    a kept work folder."""
    from scones.safe_files import create_first_free

    suffix = create_first_free(
        out,
        lambda suffix: f"run-{stamp}{suffix}.json",
        taken=lambda suffix: (out / f"work-{stamp}{suffix}").exists(),
    )
    return stamp + suffix


def _private_work_dir(folder: Path) -> Path:
    from scones.safe_files import private_folder

    try:
        return private_folder(folder, elsewhere="name a folder of your own with --out").resolve()
    except OSError as exc:
        raise CommandFailed(f"the work folder to keep cannot be made: {exc}") from None


def _drop_if_empty(path: Path) -> None:
    """Remove the reserved report file of a run that ended before writing it."""
    with contextlib.suppress(OSError):
        if path.stat().st_size == 0:
            path.unlink()


def _keep_capture(stack: Any, dest: Path) -> None:
    """Copy the endpoint's data-capture files out of the in-memory bucket."""
    s3 = stack.client("s3")
    prefix = stack.parameters["DataCapturePrefix"].rstrip("/") + "/"
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=stack.bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            target = dest / item["Key"][len(prefix) :]
            target.parent.mkdir(parents=True, exist_ok=True)
            body = s3.get_object(Bucket=stack.bucket, Key=item["Key"])["Body"].read()
            target.write_bytes(body)


def _classify(
    api: StackClient, inputs: list[InputFile], args: argparse.Namespace, console: Console
) -> tuple[list[dict[str, Any]], float]:
    started = time.perf_counter()
    uploads: list[tuple[Upload, InputFile]] = []
    # Uploading thousands of files takes minutes: both halves show their progress.
    with stack_progress(console, disable=args.no_progress) as progress:
        sending = progress.add_task("uploading", total=len(inputs))
        for sent, item in enumerate(inputs):
            try:
                uploads.append((api.upload_file(item.path, item.key), item))
            except OSError as exc:
                # Gone or changed since the folder was listed (a camera's sync at work):
                # named, and the run goes on with the others.
                console.print(
                    f"[yellow]left out {escape(shown(str(item.path)))}:[/] cannot read it any "
                    f"more ({escape(str(exc.strerror or exc))})"
                )
            except KeyboardInterrupt:
                # The stop names the uploads without a record; the files not sent are named.
                with contextlib.suppress(OSError):
                    print_not_uploaded(console, [i.path for i in inputs[sent:]], len(inputs))
                raise
            progress.advance(sending)
        if not uploads:
            raise CommandError("none of the files could be read any more; nothing was uploaded")
        waiting = progress.add_task("classifying", total=len(uploads))
        records = api.wait_for_records(
            [u for u, _ in uploads],
            timeout=args.timeout,
            on_progress=lambda done, _total: progress.update(waiting, completed=done),
        )
    by_upload = dict(uploads)
    wall = time.perf_counter() - started
    rows = []
    for upload, record in records.items():
        item = by_upload[upload]
        rows.append({**record, "true_label": item.true_label, "source": str(item.path)})
    rows.sort(key=lambda r: str(r.get(KEY_ATTRIBUTE)))
    return rows, wall


def _print_monitor(console: Console, monitor: dict[str, Any]) -> None:
    if monitor:
        console.print("monitor: " + monitor_line(monitor), highlight=False, soft_wrap=True)
