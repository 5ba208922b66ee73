"""Run a `scones` command in a child process and stop it with a signal part way (imported
by name): how a service manager, a timeout or a closed terminal ends a command."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path


def run_stopped(
    argv: list[str],
    *,
    after: str,
    stop: signal.Signals,
    env: dict[str, str],
    cwd: Path | None = None,
    after_s: float = 0.0,
) -> tuple[int, str, str]:
    """``scones argv``, sent ``stop`` ``after_s`` after it prints a line holding ``after``:
    its exit status, standard output (what followed that line) and standard error."""
    run = subprocess.Popen(
        [sys.executable, "-m", "scones.cli.main", *argv],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert run.stdout is not None
        for printed in run.stdout:
            if after in printed:
                break
        time.sleep(after_s)
        run.send_signal(stop)
        out, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    return run.returncode, out, err
