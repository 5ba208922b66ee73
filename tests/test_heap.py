"""The garbage collector around the stack's long-lived heap (``scones.heap``).

The stack's own freeze and release are checked on a real stack in
``tests/offline/test_offline_stack_lifecycle.py``.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scones import heap


def test_the_collector_is_on_again_after_building_even_when_the_build_fails() -> None:
    assert gc.isenabled()
    with pytest.raises(RuntimeError, match="the build failed"), heap.building_long_lived_heap():
        assert not gc.isenabled()
        raise RuntimeError("the build failed")
    assert gc.isenabled()


def test_a_collector_someone_had_turned_off_stays_off() -> None:
    gc.disable()
    try:
        with heap.building_long_lived_heap():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


# An exit hook registered before the command's runs after it (atexit is last in, first out).
AT_EXIT = """
import atexit, gc, sys
atexit.register(lambda: print("frozen at exit:", gc.get_freeze_count() > 0))
from scones.cli.main import main
code = main(sys.argv[1:])
print("frozen before exit:", gc.get_freeze_count() > 0)
sys.exit(code)
"""


@pytest.mark.parametrize("args", [["--help"], ["report", "--no-such-option"], ["env"]])
def test_a_command_leaves_the_heap_frozen_for_the_exit_and_only_then(
    args: list[str], tmp_path: Path
) -> None:
    """Whatever the command and however it ends (help, a usage error, its own work), the
    interpreter's exit does not walk the heap a last time, and nothing is frozen before
    the command has returned."""
    env = {**os.environ, "SCONES_STATE_DIR": str(tmp_path)}  # `env`: no stack runs
    done = subprocess.run(
        [sys.executable, "-c", AT_EXIT, *args], capture_output=True, text=True, timeout=120, env=env
    )
    assert "frozen at exit: True" in done.stdout, (done.stdout, done.stderr)
    if args == ["env"]:  # --help and usage errors end in SystemExit, not a return
        assert "no offline stack is running" in done.stderr
        assert "frozen before exit: False" in done.stdout
