"""``--model`` is checked before the offline stack starts: a folder the model server could
not load, a model whose classes are not the stack's ``ModelLabels`` in order (every
record would name the other class), or one whose ``baseline.json`` (published as the
monitor's drift baseline) is not a usable baseline of that model, is a usage error, not a
stack that fails after starting or, worse, runs."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scones.paths import SHIPPED_MODEL_DIR
from scones.template_params import PROJECT_ROOT
from tests import crafted_graphs as crafted

COMMANDS = {
    "run": ["run", "--out", "{out}"],
    "up": ["up", "--out", "{out}"],
    "invoke": [
        "invoke",
        "SerializeImageFunction",
        "-e",
        str(PROJECT_ROOT / "events/serialize_image.json"),
    ],
}


def run_command(tmp_path: Path, command: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """``scones COMMAND ... EXTRA`` in ``tmp_path``, its run going to ``tmp_path/out``."""
    args = [a.format(out=tmp_path / "out") for a in COMMANDS[command]]
    return subprocess.run(
        [sys.executable, "-m", "scones.cli.main", *args, *extra],
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "200", "SCONES_STATE_DIR": str(tmp_path / ".scones")},
        capture_output=True,
        text=True,
        timeout=60,
    )


def spoil(model: Path, how: str) -> str:
    """Make the copied model in ``model`` unservable ``how``; the message that names it."""
    manifest = json.loads((model / "model.json").read_text())
    if how == "swapped labels":
        manifest["labels"] = list(reversed(manifest["labels"]))
        (model / "model.json").write_text(json.dumps(manifest))
        return (
            "answers motorcycle,bicycle, in that order, "
            "but the stack's ModelLabels is bicycle,motorcycle"
        )
    if how == "other graph":
        (model / "model.onnx").write_bytes(b"not the graph model.json names")
        return "model.onnx has sha256"
    if how == "no graph":
        (model / "model.onnx").unlink()
        return "model graph not found"
    if how == "truncated graph, its digest updated":
        graph = model / "model.onnx"
        graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 2])
        manifest["onnx_sha256"] = hashlib.sha256(graph.read_bytes()).hexdigest()
        (model / "model.json").write_text(json.dumps(manifest))
        return "is not a graph onnxruntime can load"
    if how == "answers logits":
        graph = model / "model.onnx"
        graph.write_bytes(crafted.logits().SerializeToString())
        manifest["onnx_sha256"] = hashlib.sha256(graph.read_bytes()).hexdigest()
        (model / "model.json").write_text(json.dumps(manifest))
        return "synthetic images: the answer for image 1 of 2 is [7.5"
    if how == "another model's baseline":
        # The stack publishes it as the monitor's: drift would be measured against that
        # model's mix and name it.
        baseline = json.loads((model / "baseline.json").read_text())
        (model / "baseline.json").write_text(
            json.dumps({**baseline, "model_version": "0123456789ab"})
        )
        return (
            "its baseline.json cannot be the monitor's drift baseline: the baseline was made "
            f"for model version 0123456789ab, not this model's {manifest['version']}"
        )
    if how == "unusable baseline":
        # The monitor would log it as unusable every hour and measure no drift.
        (model / "baseline.json").write_text("<html>not a baseline</html>")
        return "its baseline.json cannot be the monitor's drift baseline: the baseline is not JSON"
    (model / "model.json").write_text(json.dumps({**manifest, "labels": "bicycle"}))
    return "labels must be a list of 2+ names"


@pytest.mark.parametrize(
    ("command", "how"),
    [(command, "swapped labels") for command in sorted(COMMANDS)]
    + [
        ("run", how)
        for how in (
            "other graph",
            "no graph",
            "truncated graph, its digest updated",
            "answers logits",
            "bad manifest",
            "another model's baseline",
            "unusable baseline",
        )
    ],
)
def test_an_unservable_model_is_refused_before_the_stack_starts(
    tmp_path: Path, command: str, how: str
) -> None:
    model = tmp_path / "model"
    shutil.copytree(SHIPPED_MODEL_DIR, model)
    named = spoil(model, how)
    out = tmp_path / "out"
    result = run_command(tmp_path, command, "--model", str(model))
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("scones: error: --model: "), result.stderr
    assert named in result.stderr
    assert "Traceback" not in result.stderr
    # Nothing started: no stack recorded, no run written.
    assert not (tmp_path / ".scones" / "stack.json").exists()
    assert not out.exists() or not any(out.iterdir())


def test_the_same_model_runs_when_modellabels_names_its_order(tmp_path: Path) -> None:
    """The check compares with the stack's ModelLabels, overrides included."""
    from scones.offline.stack_model import check_model

    model = tmp_path / "model"
    shutil.copytree(SHIPPED_MODEL_DIR, model)
    spoil(model, "swapped labels")
    check_model(model, {"ModelLabels": "motorcycle,bicycle"})
    check_model(SHIPPED_MODEL_DIR, {})


@pytest.mark.parametrize("command", ["run", "up"])
def test_a_model_input_size_other_than_the_models_is_refused_before_the_stack_starts(
    tmp_path: Path, command: str
) -> None:
    """Serialize resizes to ModelInputSize and the server to the model's own size: two
    resizes give other pixels than the one the model was trained on, and some answers
    change, without an error anywhere."""
    result = run_command(tmp_path, command, "--param", "ModelInputSize=64x64")
    assert result.returncode == 2, result.stderr
    assert "takes 32x32 images, but the stack's ModelInputSize is 64x64" in result.stderr
    assert "--param ModelInputSize=32x32" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / ".scones" / "stack.json").exists()


def test_the_model_input_size_check_reads_the_stacks_parameter() -> None:
    from scones.offline.stack_model import StackError, check_model

    check_model(SHIPPED_MODEL_DIR, {"ModelInputSize": "32x32"})
    with pytest.raises(StackError, match="ModelInputSize is 48x32"):
        check_model(SHIPPED_MODEL_DIR, {"ModelInputSize": "48x32"})


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["evaluate"], ["run"]])
def test_a_model_archive_given_as_model_is_told_to_be_unpacked(
    tmp_path: Path, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """One sentence for each command; it was "model.json cannot be read: [Errno 20] Not a
    directory" from serve and evaluate."""
    from scones.cli.main import main

    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(b"\x1f\x8b")
    assert main([*command, "--model", str(archive)]) == 2
    error = capsys.readouterr().err
    assert (
        f"no model at {archive}: it is a file; --model names a model's folder, not a file "
        "(unpack the archive first)\n"
    ) in error
    assert "Traceback" not in error


def test_retrain_refuses_a_model_json_it_cannot_parse_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nested deeper than the parser goes: a RecursionError traceback from `scones retrain`
    before it read model.json as every other command does."""
    from scones.cli.main import main

    model = tmp_path / "model"
    shutil.copytree(SHIPPED_MODEL_DIR, model)
    (model / "model.json").write_bytes(b"[" * 100_000 + b"]" * 100_000)
    assert main(["retrain", "--model", str(model), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (
        f"scones: error: --model: model manifest {model / 'model.json'} is not valid JSON: "
        "not readable JSON: nested deeper than the parser goes\n"
    )


def test_a_model_without_a_baseline_runs_and_says_once_that_drift_is_off(tmp_path: Path) -> None:
    """A folder with no baseline.json starts (docs/monitoring.md), but the stack then
    publishes no drift baseline and the monitor measures no drift for that model: the
    command says so once, before the stack starts, with how to give the model one. It was
    silent, and the monitor's summary only left the drift out."""
    model = tmp_path / "model"
    shutil.copytree(SHIPPED_MODEL_DIR, model)
    (model / "baseline.json").unlink()
    image = sorted((PROJECT_ROOT / "samples" / "bicycle").glob("*.png"))[0]
    options = ["--model", str(model), "--out", str(tmp_path / "out"), "--json", "--no-progress"]
    result = subprocess.run(
        [sys.executable, "-m", "scones.cli.main", "run", str(image), *options],
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "200", "SCONES_STATE_DIR": str(tmp_path / ".scones")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    warning = (
        f"scones: warning: the model at {model} has no baseline.json: the monitor measures "
        "no label drift for it"
    )
    assert result.stderr.startswith(warning), result.stderr
    assert result.stderr.count("scones: warning:") == 1, result.stderr
    assert "`scones train` writes one beside the model it trains" in result.stderr
    (run,) = (tmp_path / "out").glob("run-*.json")
    monitor = json.loads(run.read_text())["monitor"]
    assert monitor["request_count"] == 1 and monitor["label_drift"] is None, monitor


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "no/such/folder"],
        ["run", "--param", "ModelInputSize=64x64"],
        ["up", "--model", "no/such/model"],
    ],
)
def test_what_is_refused_before_the_stack_starts_is_refused_without_loading_it(
    argv: list[str],
) -> None:
    """The model and the options are judged apart from the stack (``stack_model``): a
    mistyped argument costs no import of moto and its interpreter (about a second)."""
    probe = (
        "import sys\n"
        "from scones.cli.main import main\n"
        f"status = main({argv!r})\n"
        "loaded = sorted(m for m in ('moto', 'scones.offline.stack') if m in sys.modules)\n"
        "print(status, loaded)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=PROJECT_ROOT, check=False
    )
    assert done.stdout.split("\n")[-2] == "2 []", done.stdout + done.stderr
    assert "scones: error: " in done.stderr
