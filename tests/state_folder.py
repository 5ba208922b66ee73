"""Point the offline stack's state files at a folder of a test's own (imported by name)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


def use_state_folder(monkeypatch: pytest.MonkeyPatch, folder: Path) -> Any:
    """``scones.cli.stack_state`` with every state file in ``folder``; the module."""
    from scones.cli import stack_state

    for name, path in {
        "STATE_DIR": folder,
        "STATE_FILE": folder / "stack.json",
        "STOPPED_FILE": folder / "stopped.json",
        "UP_LOCK_FILE": folder / "up.lock",
        "STACK_WORK_DIR": folder / "stack",
    }.items():
        monkeypatch.setattr(stack_state, name, path)
    return stack_state
