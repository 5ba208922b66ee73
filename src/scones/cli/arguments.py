"""Argument types shared by the subcommands: a bad value is named by argparse
(``scones: error: argument --port: ...``, exit 2) before any work starts."""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, so ``--help`` and docs/cli.md answer
    "what happens if I leave it out" for each; the help that already says it, and an
    empty default that only means "not given", are left as they are."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (
            not action.option_strings
            # ``is False``: a default of 0 equals False, and is a default to show.
            or action.default is False
            or action.default in (None, [], "", argparse.SUPPRESS)
            or "default" in text.lower()
        ):
            return action.help
        return f"{text} (default: %(default)s)".lstrip()


def show_defaults(parser: argparse.ArgumentParser) -> None:
    """Give ``parser`` and every subcommand's parser :class:`DefaultsHelpFormatter`, and a
    subcommand without a description its one-line help as one: its ``--help`` says what
    it does, as the list of commands does."""
    parser.formatter_class = DefaultsHelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            for name, sub in action.choices.items():
                if not sub.description and (text := helps.get(name)):
                    sub.description = f"{text[0].upper()}{text[1:]}."
                show_defaults(sub)


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def positive_int(text: str) -> int:
    """A whole number of at least 1."""
    value = _whole(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value


def int_up_to(maximum: int) -> Callable[[str], int]:
    """A whole number from 1 to ``maximum``."""

    def parse(text: str) -> int:
        value = positive_int(text)
        if value > maximum:
            raise argparse.ArgumentTypeError(f"{value} is more than {maximum}")
        return value

    return parse


def non_negative_int(text: str) -> int:
    """A whole number of at least 0."""
    value = _whole(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def whole_between(low: int, high: int) -> Callable[[str], int]:
    """A whole number from ``low`` to ``high``: the upper bound refuses a value that would
    otherwise fail deep inside the work (``time.sleep``, Pillow), after it started."""

    def parse(text: str) -> int:
        value = _whole(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is not between {low} and {high}")
        return value

    return parse


def labels(text: str) -> tuple[str, ...]:
    """A model's labels in its output order, comma-separated (``ModelLabels``' form)."""
    from scones_core.settings import parse_labels

    try:
        return parse_labels(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None


def port(text: str) -> int:
    """A TCP port, or 0 for any free one."""
    value = _whole(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port (0-65535; 0: any free one)")
    return value


def seconds(text: str) -> float:
    """A finite number of seconds greater than 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds above 0")
    return value


def check_writable_folder(path: Path, option: str = "--out", *, create: bool = True) -> None:
    """Check that files can be written in ``path`` (made first, unless ``create`` is
    false), so a command fails before it starts, not after its work, when its results
    could not be kept there."""
    from scones.cli.errors import CommandError
    from scones.serving.command import unwritable_folder

    if problem := unwritable_folder(path, create=create):
        raise CommandError(f"{option} {path}: {problem}; give a folder this user can write to")


def check_writable_file(path: Path, option: str = "--json") -> None:
    """Check that ``path`` can be written, its folder made if need be (as the benchmarks
    do when they write), so a long run does not fail at its last step. Nothing is made
    here: a run that fails for another reason leaves no folder behind."""
    from scones.cli.errors import CommandError
    from scones.serving.command import unwritable_folder

    if path.is_dir():
        problem: str | None = "it is a folder"
    elif path.exists() and not os.access(path, os.W_OK):
        problem = "the file cannot be written"
    else:
        problem = unwritable_folder(path.parent, create=False)
    if problem:
        raise CommandError(f"{option} {path}: {problem}; give a file this user can write")


def file_or_folder(text: str) -> Path:
    """A file or folder argument. An empty one (an unset shell variable) is refused: as a
    Path it is the current folder, which would be written into, or uploaded whole."""
    if not text.strip():
        raise argparse.ArgumentTypeError(
            "the path is empty (an unset variable?); give a file or folder"
        )
    return Path(text)


def output_file(text: str) -> Path:
    """A file to write. ``-`` is refused rather than made a file of that name: these
    commands print their own report on standard output, so it cannot take a second one."""
    if text.strip() == "-":
        raise argparse.ArgumentTypeError(
            "'-' would write a file named '-' (standard output carries the command's own "
            "report); give a file"
        )
    return file_or_folder(text)


def output_folder(text: str) -> Path:
    """A folder to write into: it may not exist yet, but must not be a file."""
    folder = file_or_folder(text)
    if folder.exists() and not folder.is_dir():
        raise argparse.ArgumentTypeError(f"{text} exists and is not a folder")
    return folder


def hyperparameters(pairs: list[str], option: str = "--hyperparameter") -> dict[str, Any]:
    """``NAME=VALUE`` pairs, each value read as JSON where it is JSON (``20``, ``0.5``,
    ``[1, 2]``) and kept as text where it is not, so ``recipe=distil`` needs no quotes."""
    from scones_core.json_text import NotJSON, load_json

    from scones.cli.errors import CommandError

    values: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name.strip():
            raise CommandError(f"{option} expects NAME=VALUE, got {pair!r}")
        try:
            values[name.strip()] = load_json(raw)
        except NotJSON:
            values[name.strip()] = raw
    return values


def key_prefix(given: str, incoming: str) -> str:
    """``--prefix`` as a key prefix: the tables show keys without the stack's incoming
    prefix (every record's key is under it), so ``misc/`` and ``incoming/misc/`` select
    the same records. A prefix that already starts with the incoming prefix, or is the
    start of it (``incoming``), is a key prefix as given; so is any with an unknown
    incoming prefix. (A key that itself repeats it, ``incoming/incoming/x``, is given in
    full.)"""
    if not given or not incoming or given.startswith(incoming) or incoming.startswith(given):
        return given
    return incoming + given


def refuse_deployed_options(given: dict[str, object], remedy: str) -> None:
    """``CommandError`` naming the options in ``given`` that were set: they are for a
    deployed stack, and the command is about to use the offline one (``remedy`` says how
    to name a deployed one)."""
    from scones.cli.errors import CommandError

    named = [option for option, value in given.items() if value]
    if named:
        verb, them = ("are", "them") if len(named) > 1 else ("is", "it")
        raise CommandError(
            f"{' and '.join(named)} {verb} for a deployed stack: {remedy}, or leave {them} out "
            "for the offline stack of `scones up`"
        )


_AGE = re.compile(r"^(\d+)([smhd])$")
_AGE_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_moment(text: str | None, now: datetime) -> datetime | None:
    """A ``--since``/``--until`` value: an age before ``now`` (``30m``, ``2h``, ``1d``) or
    an ISO 8601 time; ``CommandError`` names what is wrong with any other."""
    from scones_core.monitoring.timestamps import parse_timestamp

    from scones.cli.errors import CommandError

    if not text:
        return None
    age = _AGE.match(text.strip())
    if age:
        amount, unit = age.groups()
        try:
            return now - timedelta(**{_AGE_UNITS[unit]: int(amount)})
        except OverflowError:
            raise CommandError(f"{text!r} reaches back before the year 1") from None
    try:
        return parse_timestamp(text)  # names a time UTC cannot hold, near year 1 or 9999
    except ValueError as exc:
        raise CommandError(f"{exc}; or give an age such as 30m, 2h or 1d") from exc
