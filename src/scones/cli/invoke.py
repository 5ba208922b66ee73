"""``scones invoke FUNCTION -e EVENT.json``: one function of the offline stack, as
``sam local invoke`` runs it.

The function runs from its deployed zip and layer in a local Lambda worker (the same
path as every invocation of the offline stack), against the stack's bucket, table and
endpoint. The stack is the one ``scones up`` keeps running when there is one; otherwise
a stack is started for this call and stopped after it. The result (or the error) is
printed on stdout, the invocation's log on stderr, as ``sam local invoke`` does.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path
from typing import Any

from scones_core.json_text import NotJSON, load_json

from scones.cli.errors import CommandError, CommandFailed
from scones.cli.model_check import check_model_option
from scones.cli.stack_state import (
    STATE_FILE,
    StackNotRunning,
    add_stack_options,
    client_from_state,
    read_state,
    stack_params,
)
from scones.template_params import LOCAL_STACK_NAME, template_functions


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "invoke",
        help="run one function (its deployed zip and layer) on an event, like sam local invoke",
        description=(
            "Invoke one function of the offline stack with an event, as `sam local invoke "
            "FUNCTION -e EVENT` does: from its deployed zip and layer, against the stack that "
            "`scones up` runs (or a stack started for this call). Prints the result on "
            "stdout and the function's log on stderr; exits 1 when the function errors."
        ),
    )
    parser.add_argument(
        "function",
        metavar="FUNCTION",
        help="the function's logical id in template.yaml (e.g. SerializeImageFunction)",
    )
    parser.add_argument(
        "-e",
        "--event",
        metavar="EVENT.json",
        help="the event as a JSON file, or - for stdin (default: {})",
    )
    add_stack_options(parser)
    parser.set_defaults(handler=invoke_command)


# Lambda's quota for a synchronous invocation's request (and response) payload: 6 MB.
MAX_SYNC_PAYLOAD_BYTES = 6 * 1024 * 1024


def read_event(source: str | None) -> Any:
    if source is None:
        return {}
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise CommandError(f"{source}: cannot read the event: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise CommandError(f"{source}: not a JSON event: it is not UTF-8 text ({exc})") from exc
    try:
        event = load_json(text)
    except NotJSON as exc:
        raise CommandError(f"{source}: not a JSON event: {exc}") from exc
    size = len(json.dumps(event).encode("utf-8"))
    if size >= MAX_SYNC_PAYLOAD_BYTES:  # "Request must be smaller than 6291456 bytes"
        raise CommandError(
            f"{source}: the event is {size} bytes; Lambda takes at most "
            f"{MAX_SYNC_PAYLOAD_BYTES - 1} (under 6 MB) in a synchronous invocation"
        )
    return event


def invoke_command(args: argparse.Namespace) -> int:
    # Everything the user gave is checked before a stack is reached or started.
    functions = template_functions()
    if args.function not in functions:
        raise CommandError(
            f"{args.function}: template.yaml has no such function (functions: "
            f"{', '.join(functions)})"
        )
    event = read_event(args.event)
    overrides = stack_params(args.param)
    running = _running_stack()
    if running is not None:
        given = [
            option
            for option, value in (
                ("--param", args.param),
                ("--model", args.model),
                ("--port", args.port),
                ("--model-port", args.model_port),
            )
            if value
        ]
        if given:
            options = " and ".join(given)
            raise CommandError(
                f"{options} apply to a stack that `scones invoke` starts, and one is already "
                f"running (pid {running['pid']}); stop it with `scones down`, or drop {options}"
            )
        api = client_from_state()
        name = (running.get("physical_ids") or {}).get(args.function) or _physical_name(
            api.client("cloudformation"), str(running.get("stack_name") or LOCAL_STACK_NAME), args
        )
        return _invoke(api.client("lambda"), str(name), event)
    check_model_option(args.model, overrides)
    return _invoke_on_new_stack(args, overrides, event)


def _running_stack() -> dict[str, Any] | None:
    if not STATE_FILE.exists():
        return None
    try:
        return read_state()
    except StackNotRunning:
        return None  # a stale state file: no stack is running


def _physical_name(cloudformation: Any, stack_name: str, args: argparse.Namespace) -> str:
    try:
        pages = cloudformation.get_paginator("list_stack_resources").paginate(StackName=stack_name)
        for page in pages:
            for resource in page["StackResourceSummaries"]:
                if resource["LogicalResourceId"] == args.function:
                    return str(resource["PhysicalResourceId"])
    except Exception as exc:
        raise CommandFailed(f"{args.function}: cannot list the running stack: {exc}") from exc
    raise CommandFailed(f"{args.function}: not found in the running stack {stack_name}")


def _invoke_on_new_stack(args: argparse.Namespace, overrides: dict[str, str], event: Any) -> int:
    from scones.offline.deploy import DeployError
    from scones.offline.stack import OfflineStack, StackError, StackOptions
    from scones.paths import SHIPPED_MODEL_DIR

    print("no offline stack is running: starting one for this call...", file=sys.stderr)
    options = StackOptions(
        model_dir=args.model or SHIPPED_MODEL_DIR,
        moto_port=args.port,
        model_port=args.model_port,
        overrides=overrides,
    )
    stack = OfflineStack(options)
    try:
        try:
            stack.start()
        except (StackError, DeployError) as exc:
            raise CommandFailed(str(exc)) from exc
        return _invoke(stack.client("lambda"), stack.function_name(args.function), event)
    finally:
        stack.stop()


def _invoke(lam: Any, name: str, event: Any) -> int:
    response = lam.invoke(FunctionName=name, Payload=json.dumps(event).encode(), LogType="Tail")
    logs = base64.b64decode(response.get("LogResult") or b"").decode("utf-8", "replace")
    if logs:
        print(logs.rstrip("\n"), file=sys.stderr)
    raw = response["Payload"].read()
    try:
        print(json.dumps(load_json(raw), indent=2))
    except NotJSON:
        print(raw.decode("utf-8", "replace"))
    sys.stdout.flush()
    return 1 if response.get("FunctionError") else 0
