"""The shipped model's path has one home, ``scones.paths``; the code imports it."""

from __future__ import annotations

import re

from scones.paths import PROJECT_ROOT, SHIPPED_MODEL_DIR, SHIPPED_MODEL_NAME


def test_the_shipped_model_is_where_scones_paths_says() -> None:
    assert (SHIPPED_MODEL_DIR / "model.json").is_file()
    assert (SHIPPED_MODEL_DIR / "model.onnx").is_file()
    assert SHIPPED_MODEL_DIR == PROJECT_ROOT / "models" / SHIPPED_MODEL_NAME


def test_no_other_code_spells_out_the_shipped_model() -> None:
    spelled = re.compile(r"""["']models["']\s*/\s*["']|["']bicycle-motorcycle["']""")
    offenders = sorted(
        path.relative_to(PROJECT_ROOT).as_posix()
        for folder in ("src", "functions", "layers", "scripts")
        for path in (PROJECT_ROOT / folder).rglob("*.py")
        if spelled.search(path.read_text(encoding="utf-8"))
    )
    assert offenders == ["src/scones/paths.py"]


def test_the_offline_stack_serves_the_shipped_model_by_default() -> None:
    from scones.offline.stack import StackOptions

    assert StackOptions().model_dir == SHIPPED_MODEL_DIR
