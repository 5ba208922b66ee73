"""ruff and mypy over the whole project, as part of the test run."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "."],
        ["mypy", "src", "layers/shared", "functions"],
    ],
    ids=["ruff-check", "ruff-format", "mypy"],
)
def test_static_checks_pass(command: list[str]) -> None:
    result = subprocess.run(
        [str(BIN / command[0]), *command[1:]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def _is_main_guard(node: ast.stmt) -> bool:
    return (
        isinstance(node, ast.If)
        and isinstance(node.test, ast.Compare)
        and isinstance(node.test.left, ast.Name)
        and node.test.left.id == "__name__"
    )


def test_a_modules_main_guard_is_its_last_statement() -> None:
    """``python -m MODULE`` runs the guard where it stands: a function defined after it
    does not exist yet when the command runs (every error of ``python -m scones.cli.main``
    once ended in a NameError), though importing the module hides that."""
    late = []
    for folder in ("src", "functions", "layers", "scripts"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            body = ast.parse(path.read_text(encoding="utf-8")).body
            guards = [i for i, node in enumerate(body) if _is_main_guard(node)]
            if guards and guards[-1] != len(body) - 1:
                late.append(str(path.relative_to(ROOT)))
    assert late == []
