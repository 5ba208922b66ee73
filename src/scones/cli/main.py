"""``scones``: the project's command-line tool.

Each subcommand lives in its own module under ``scones.cli`` and exposes
``register(subparsers)``; this module only assembles them.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import re
import sys
from collections.abc import Sequence

from scones import heap
from scones.cli.arguments import show_defaults
from scones.cli.display import GuardedStdout
from scones.cli.errors import CommandError, with_aws_setup_advice
from scones.no_proxy import reach_loopback_directly

# Module name under scones.cli, in the order they appear in --help.
COMMAND_MODULES = (
    "run",
    "up",
    "classify",
    "results",
    "review",
    "redrive",
    "env",
    "invoke",
    "backfill",
    "down",
    "serve",
    "prepare_data",
    "train",
    "evaluate",
    "sagemaker",
    "retrain",
    "deploy",
    "report",
    "bench",
    "cost",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scones",
        description="Classify delivery images by the stack's labels (ModelLabels; bicycle or "
        "motorcycle by default), on AWS or fully offline.",
    )
    parser.add_argument("--version", action="version", version=f"scones {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"scones.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"scones.cli.{name}":
                continue
            raise
        module.register(subparsers)
    show_defaults(parser)
    return parser


def _version() -> str:
    """The installed package's version (pyproject.toml's), or "unknown" outside one."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("scones-unlimited")
    except PackageNotFoundError:
        return "unknown"


def _parse(parser: argparse.ArgumentParser, arguments: list[str]) -> argparse.Namespace:
    """The arguments, or argparse's exit: an option the command does not have is refused
    with that command's usage (``scones run --kepp``), not the top-level one's."""
    args, extras = parser.parse_known_args(arguments)
    if extras:
        # Blamed on the deepest (sub)command whose name comes before the first of them:
        # `scones bench burst --x` on `bench burst`, `scones --x run` on `scones`.
        first = arguments.index(extras[0])
        command, at = parser, -1
        while True:
            chooser = next(
                (
                    action
                    for action in command._actions  # argparse keeps its subparsers here
                    if isinstance(action, argparse._SubParsersAction)
                ),
                None,
            )
            chosen = getattr(args, chooser.dest, None) if chooser else None
            if chooser is None or chosen not in chooser.choices:
                break
            at = arguments.index(chosen, at + 1)
            if at > first:
                break
            command = chooser.choices[chosen]
        command.error(f"unrecognized arguments: {' '.join(extras)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    _printable_streams()
    # A command that ran a stack leaves a large heap that exiting would walk to free nothing.
    heap.skip_collection_at_exit()
    # The offline stack, the model server and the review page are on loopback, which a
    # proxy the environment names cannot reach; AWS's endpoints still go through it.
    reach_loopback_directly()
    # Standard output failing (a pipe its reader closed, a full disk) loses what is
    # printed, never the work: every command goes on to write its files, save its records
    # or stop its stack, then ends as GuardedStdout.status says.
    if sys.stdout is None:
        # Started with descriptor 1 closed: what is printed goes nowhere, as print() does
        # then; code that writes to sys.stdout itself (a JSON report, a flush) needs a
        # stream, or it ended in a traceback after the work.
        sys.stdout = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 (the process's)
    stdout = GuardedStdout(sys.stdout)
    try:
        with contextlib.redirect_stdout(stdout):
            code = _guarded_main(argv)
    except SystemExit as exc:  # argparse's own exits: --help, a bad option
        stdout.flush()  # what is still buffered fails now, not at interpreter exit
        if stdout.error is None:
            raise
        code = exc.code if isinstance(exc.code, int) else 1
    try:
        return stdout.status(code)
    except CommandError as exc:
        return _error(exc)


def _guarded_main(argv: Sequence[str] | None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # while the commands' modules load and the options are read
        _say("scones: interrupted")
        return 130
    except MemoryError:
        # The limit is the machine's or the shell's (`ulimit -v`), not a bug: a traceback
        # would only say where the last allocation happened to fail (an import, a parse).
        _say(
            "scones: error: out of memory (is a memory limit set, `ulimit -v`, or is the "
            "machine short of memory?)",
        )
        return 1


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = _parse(parser, arguments)
    try:
        return int(args.handler(args) or 0)
    except CommandError as exc:
        return _error(exc)
    except OSError as exc:
        # A path that is missing, a directory or not one, a port in use, a full disk:
        # the operating system's sentence names the file or the address.
        _say(f"scones: error: {exc}")
        return 1
    except Exception as exc:
        # AWS configuration and reachability (an unknown profile, no credentials, an
        # endpoint that does not answer): botocore's sentence says which.
        # botocore also raises a plain ValueError for configuration it cannot use (an
        # --endpoint-url or AWS_ENDPOINT_URL that is not a URL, AWS_MAX_ATTEMPTS=abc).
        # A modelled AWS error (NoSuchBucket, ResourceNotFoundException) is a ClientError
        # of botocore.errorfactory's making: its sentence names the call and the resource.
        if type(exc).__module__ in ("botocore.exceptions", "botocore.errorfactory"):
            _say(f"scones: error: {with_aws_setup_advice(exc)}")
            return 1
        if type(exc).__module__ == "botocore.parsers":
            # An answer that is not AWS's (a proxy's page, the model server's URL given
            # as --endpoint-url or AWS_ENDPOINT_URL).
            _say(
                f"scones: error: the AWS endpoint's answer is not an AWS API answer (is the "
                f"endpoint URL an AWS API's?): {exc}",
            )
            return 1
        if (
            isinstance(exc, UnicodeEncodeError)
            and _botocore_config_error(exc)
            and any(_SURROGATE.search(argument) for argument in arguments)
        ):
            # Python keeps bytes of an argument that are not UTF-8 as lone surrogates,
            # which no AWS request can carry (a credential's fall to the next branch).
            _say(
                "scones: error: an argument sent to AWS (a key, prefix, stack or bucket "
                f"name) is not UTF-8 text: {exc}",
            )
            return 2
        if not _botocore_config_error(exc):
            raise
        _say(
            f"scones: error: the AWS configuration (an endpoint URL, AWS_* variables or "
            f"~/.aws/config) is not usable: {exc}",
        )
        return 1
    except KeyboardInterrupt:
        _say("scones: interrupted")
        return 130


def _error(exc: CommandError) -> int:
    _say(f"scones: error: {exc}")
    return exc.exit_code


def _printable_streams() -> None:
    """Output that the terminal's encoding cannot spell (a file named ``vélo-ıİ.png`` under
    ``PYTHONIOENCODING=latin-1`` or an ASCII locale) is printed as escapes, not raised as
    ``UnicodeEncodeError`` midway through a command; the encoding itself is kept."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")


# How Python keeps an argument's bytes that are not UTF-8 (surrogateescape).
_SURROGATE = re.compile("[\udc80-\udcff]")


def _botocore_config_error(exc: BaseException) -> bool:
    """A ``ValueError`` raised inside botocore itself, not in code that called it."""
    if not isinstance(exc, ValueError) or exc.__traceback__ is None:
        return False
    last = exc.__traceback__
    while last.tb_next is not None:
        last = last.tb_next
    return str(last.tb_frame.f_globals.get("__name__", "")).startswith("botocore.")


def _say(text: str) -> None:
    """A line on standard error that may fail unheard: the terminal that closed (SIGHUP)
    took standard error with it, and the command still ends with its own status."""
    with contextlib.suppress(OSError):
        print(text, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
