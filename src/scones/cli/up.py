"""``scones up``: keep the offline stack running for other tools, until ``scones down``.

The stack lives in this process's memory. When it stops (``scones down``, Ctrl-C,
SIGTERM) every record of its results table is first saved to
``<out>/records-<stack>-<UTC time>.json`` (where ``<out>`` cannot take them, to a folder
of the user's own instead: ``OfflineStack._save_records``), and where they went is printed
whatever else fails, a stop report the state folder cannot take included.
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from scones.cli.arguments import check_writable_folder, output_folder
from scones.cli.display import STOPPING, make_console, print_saved, scones_command
from scones.cli.env import export_lines
from scones.cli.errors import CommandError, CommandFailed
from scones.cli.model_check import check_model_option
from scones.cli.signals import handling_stop_signals
from scones.cli.stack_state import (
    STATE_FILE,
    add_stack_options,
    clear_state,
    make_stack_work_dir,
    model_identity,
    stack_params,
    up_lock,
    write_state,
    write_stopped,
)

IN_MEMORY_NOTE = (
    "The offline stack lives in memory: its bucket, queues and results table are gone "
    "when it stops."
)
# How often the main thread looks at the stop flag. A signal handler only runs in the
# main thread, and a process-wide signal may be delivered to any thread: a main thread
# blocked without a timeout (an Event.wait(), a join) may never see it. Sleeping in
# short steps bounds the delay instead.
_STOP_POLL_SECONDS = 0.2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "up",
        help="start the offline stack and keep it running",
        description="Start the offline stack and print how to reach it with the AWS CLI and boto3.",
    )
    add_stack_options(parser)
    parser.add_argument(
        "--enable-faults", action="store_true", help="expose the endpoint's /_faults admin route"
    )
    parser.add_argument(
        "--out",
        type=output_folder,
        default=Path("out"),
        help="folder where the records are saved when the stack stops (default: out/)",
    )
    parser.set_defaults(handler=up_command)


def up_command(args: argparse.Namespace) -> int:
    overrides = stack_params(args.param)  # checked before anything starts
    # A plain list, not a threading.Event: Event.set() takes a lock, and a handler that
    # runs while the main thread holds that same lock (inside Event.wait) deadlocks.
    signals: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        signals.append(signum)

    # SIGHUP too: closing the terminal (or a dropped ssh session) stops it as Ctrl-C does,
    # unless it was started ignoring SIGHUP (nohup). The handler only records: nothing
    # can interrupt the stop and the saving of the records. Installed before the lock,
    # which names this process to `scones down`: a stop while it loads is said, not fatal.
    # Refused first: a second `scones up` loads no model and makes no --out folder.
    with handling_stop_signals(on_signal), up_lock():
        check_model_option(args.model, overrides)
        check_writable_folder(args.out)  # where the records go when it stops
        return _up(args, overrides, signals)


def _stopped_while_starting(signals: list[int]) -> int:
    print(
        f"scones up: stopped ({signal.Signals(signals[0]).name}) before the offline stack "
        "came up: nothing was served",
        file=sys.stderr,
    )
    return 128 + signals[0]


def _up(args: argparse.Namespace, overrides: dict[str, str], signals: list[int]) -> int:
    from scones.offline.stack import OfflineStack, StackOptions
    from scones.paths import SHIPPED_MODEL_DIR

    console = make_console()
    if STATE_FILE.exists():
        try:
            from scones.cli.stack_state import read_state

            state = read_state()
        except CommandError:
            state = None  # a stale file from a stack that is gone
        if state is not None:
            raise CommandFailed(
                f"an offline stack is already running (pid {state['pid']}); "
                "use it, or stop it with `scones down`"
            )
    if signals:  # stopped while the model and the modules loaded: nothing started yet
        return _stopped_while_starting(signals)
    options = StackOptions(
        model_dir=args.model or SHIPPED_MODEL_DIR,
        work_dir=make_stack_work_dir(),
        moto_port=args.port,
        model_port=args.model_port,
        overrides=overrides,
        enable_faults=args.enable_faults,
        records_dir=args.out,
    )
    stack = OfflineStack(options)
    return _serve(stack, options, signals, console, args)


def _serve(
    stack: Any, options: Any, signals: list[int], console: Any, args: argparse.Namespace
) -> int:
    from scones.offline.deploy import DeployError
    from scones.offline.stack import StackError

    try:
        with console.status("starting the offline stack (deploying template.yaml)..."):
            stack.start()
    except (StackError, DeployError) as exc:
        raise CommandFailed(str(exc)) from exc
    if signals:  # stopped while it was starting: no banner, no state file
        stack.stop()
        print_saved(console, stack)
        return _stopped_while_starting(signals)
    try:
        write_state(
            stack.endpoints,
            os.getpid(),
            stack.work_dir,
            stack_name=options.stack_name,
            labels=stack.parameters["ModelLabels"],
            model=model_identity(options.model_dir),
            physical_ids=stack.stack.physical_ids,
            records_dir=args.out,
        )
        console.print(_instructions(stack, args.out))
        sys.stdout.flush()
        wait_for_signal(signals)
        console.print(STOPPING)
    finally:
        stack.stop()
        # The stop report can fail (its folder full); the state file must still go, and
        # where the records went must still be said: they are nowhere else in memory.
        reported = _write_stop_report(stack)
        clear_state(os.getpid())
        print_saved(console, stack)
    # moto's state is hundreds of thousands of objects; the interpreter's final garbage
    # collection would walk them all (seconds after a few hundred images) for nothing.
    gc.freeze()
    saved = stack.saved_records is not None and stack.save_error is None
    return 0 if saved and reported else 1


def _write_stop_report(stack: Any) -> bool:
    """Leave ``scones down`` the stop report; say so on standard error when it cannot be
    written (then ``scones down`` looks for the records file itself)."""
    try:
        write_stopped(
            os.getpid(),
            stack.saved_records,
            stack.save_error,
            stack.unfinished,
            stack.model_server_report,
        )
    except CommandError as exc:
        print(
            f"scones: error: {exc}; `scones down` cannot read where the records went "
            "(this output says it)",
            file=sys.stderr,
        )
        return False
    return True


def wait_for_signal(received: list[int], poll_seconds: float = _STOP_POLL_SECONDS) -> int:
    """Block until a handler appended a signal number to ``received``; return it.

    Never a blocking wait without a timeout: the kernel may deliver the signal to any
    thread, and then only the main thread's next bytecode runs the Python handler.
    """
    while not received:
        time.sleep(poll_seconds)
    return received[0]


def _instructions(stack: Any, out_dir: Path) -> str:
    e = stack.endpoints
    logs = Path(stack.work_dir) / "logs"
    saved = out_dir / f"records-{stack.options.stack_name}-<UTC time>.json"
    me = scones_command()
    return f"""[bold green]offline stack is up[/] (Ctrl-C or `{me} down` stops it)

[bold yellow]{IN_MEMORY_NOTE}[/]
When it stops, every record is saved to {saved}.

  AWS emulator  {e.endpoint_url}     (S3, SQS, Lambda, Step Functions, DynamoDB, ...)
  model endpoint {e.model_url}       (SageMaker runtime: POST /endpoints/<name>/invocations)
  bucket        {e.bucket}   uploads go under {e.incoming_prefix}
  results table {e.table}
  state machine {e.state_machine_arn}
  function logs {logs}/

[bold]Environment[/] for the AWS CLI, boto3 and any SDK (or: eval "$({me} env)"):
{export_lines(e.aws_environment())}

[bold]AWS CLI[/] (with the variables above):
  aws s3 cp photo.png s3://{e.bucket}/{e.incoming_prefix}photo.png
  aws dynamodb scan --table-name {e.table}
  aws sagemaker-runtime invoke-endpoint --endpoint-name {stack.parameters["EndpointName"]} \\
      --content-type image/png --body fileb://photo.png out.json

[bold]boto3[/] (with the variables above, unchanged code reaches the stack):
  import boto3
  boto3.client("s3").upload_file("photo.png", "{e.bucket}", "{e.incoming_prefix}photo.png")

[bold]scones[/]: `{me} classify photo.png`, `{me} results`, `{me} invoke FUNCTION -e EVENT.json`,
  `{me} report --capture s3://{e.bucket}/{stack.parameters["DataCapturePrefix"]} --out traffic.png`,
  `{me} down`
"""
