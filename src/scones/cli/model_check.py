"""The ``--model`` of a command that starts the offline stack, checked before it starts."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

from scones.cli.errors import CommandError


def check_model_option(model: Path | None, overrides: Mapping[str, str]) -> None:
    """A model folder the server could not load, or one whose classes differ from the
    stack's ``ModelLabels``, is a usage error found in well under a second, not a stack
    that fails after starting (or, for the labels, records the wrong class). A folder
    without a drift baseline starts, saying once that the monitor measures no drift."""
    from scones.offline.stack_model import StackError, check_model
    from scones.paths import SHIPPED_MODEL_DIR

    try:
        note = check_model(model or SHIPPED_MODEL_DIR, overrides)
    except StackError as exc:
        raise CommandError(f"--model: {exc}") from None
    if note:
        print(f"scones: warning: {note}", file=sys.stderr)
