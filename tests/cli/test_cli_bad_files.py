"""Files the CLI reads that are damaged or hand-edited wrongly: each is named, with what is
wrong in it, as one ``scones: error:`` line; never a traceback from deep inside a library."""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import scones.deploy
import scones.template_params
from scones.cli.main import main
from scones.paths import PROJECT_ROOT, SHIPPED_MODEL_DIR
from scones.serving.capture import build_capture_record
from scones.template_params import TEMPLATE_PATH

BUNDLED_IMAGES = PROJECT_ROOT / "data" / "cifar100-bicycle-motorcycle" / "train"
LABELS = ("bicycle", "motorcycle")


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """The exit code and standard error of one in-process ``scones`` call."""
    code = main(argv)
    return code, capsys.readouterr().err


def write_capture(folder: Path, requests: int = 3) -> Path:
    """A capture file of ``requests`` records, as the model server writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    start = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    lines = [
        json.dumps(
            build_capture_record(
                input_body=b"png",
                input_content_type="image/png",
                output_body=json.dumps([0.9, 0.1] if index % 2 else [0.2, 0.8]),
                output_content_type="application/json",
                event_id=f"event-{index}",
                inference_time=start + timedelta(minutes=index),
            )
        )
        for index in range(requests)
    ]
    path = folder / "capture.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def model_with_split(tmp_path: Path) -> Callable[[dict[str, Any]], Path]:
    """A copy of the shipped model whose model.json records ``split`` instead."""

    def make(split: dict[str, Any]) -> Path:
        model = tmp_path / "model"
        shutil.copytree(SHIPPED_MODEL_DIR, model)
        manifest = json.loads((model / "model.json").read_text(encoding="utf-8"))
        manifest["split"] = split
        (model / "model.json").write_text(json.dumps(manifest), encoding="utf-8")
        return model

    return make


@pytest.fixture
def small_data(tmp_path: Path) -> Path:
    """Four bundled images per class: the split is refused before they matter."""
    data = tmp_path / "data"
    for label in LABELS:
        (data / label).mkdir(parents=True)
        for source in sorted((BUNDLED_IMAGES / label).glob("*.png"))[:4]:
            shutil.copy2(source, data / label / source.name)
    return data


@pytest.mark.parametrize("command", [["evaluate"], ["bench", "model", "--images", "1"]])
@pytest.mark.parametrize(
    ("split", "problem"),
    [
        ({"seed": 0}, "split.validation_fraction is missing"),
        ({"seed": None, "validation_fraction": 0.2}, "split.seed is None"),
        ({"seed": True, "validation_fraction": 0.2}, "split.seed is True"),
        ({"seed": -1, "validation_fraction": 0.2}, "split.seed is -1"),
        ({"seed": 0, "validation_fraction": "x"}, "split.validation_fraction is 'x'"),
        ({"seed": 0, "validation_fraction": 1.5}, "split.validation_fraction is 1.5"),
    ],
)
def test_a_model_json_split_that_cannot_be_recreated_names_the_file_and_field(
    model_with_split: Callable[[dict[str, Any]], Path],
    small_data: Path,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
    split: dict[str, Any],
    problem: str,
) -> None:
    model = model_with_split(split)
    argv = [*command, "--model", str(model), "--data", str(small_data), "--threshold", "0.9"]
    code, err = run_cli(argv, capsys)
    assert code == 2
    assert err.startswith("scones: error: ") and err.count("\n") == 1, err
    assert "model.json" in err and problem in err
    if command == ["evaluate"]:
        assert str(model / "model.json") in err


@pytest.mark.parametrize("command", ["deploy-preflight", "deploy-baseline"])
@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (b"version = 0.1\n[default\nregion = 1\n", "Unexpected character: '\\n' at line 2 col 8"),
        (b"\xff\xfe\x00binary", "UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff"),
        (b"x = " + b"[" * 5000 + b"]" * 5000, "TOML value nested more than 100 levels deep"),
        (
            b"version = 0.1\n[default.deploy.parameters]\n"
            b'parameter_overrides = "EndpointName=\\"x"\n',
            "Invalid value for '--parameter-overrides': EndpointName=\"x is not a valid format",
        ),
        (
            b"version = 0.1\n[default.deploy.parameters]\nparameter_overrides = 5\n",
            "Invalid value for '--parameter-overrides': 5 is invalid",
        ),
        (b"version = 0.1\ndefault = 3\n", "Error reading configuration: "),
        (
            b"version = 0.1\n[default.deploy.parameters]\nregion = 3\n",
            "Provided region: 3 doesn't match a supported format",
        ),
        (
            b"[default.deploy.parameters]\nregion = 'us-east-1'\n",
            "'version' key is not present or is in unrecognized format",
        ),
    ],
)
def test_a_malformed_samconfig_is_named_before_any_aws_call(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: str,
    text: bytes,
    problem: str,
) -> None:
    samconfig = tmp_path / "samconfig.toml"
    samconfig.write_bytes(text)
    read = scones.deploy.read_samconfig
    monkeypatch.setattr(
        scones.deploy, "read_samconfig", lambda sam_args=(): read(samconfig, sam_args)
    )
    code, err = run_cli([command, "--stack", "scones"], capsys)
    assert code == 2
    assert (
        err.startswith("scones: error: sam deploy would refuse its config file or options: ")
        and err.count("\n") == 1
    ), err
    assert problem in err and f"(config file: {samconfig})" in err


def _unclosed_flow_sequence(text: str) -> str:
    return text.replace(
        "  ConfidenceThreshold:\n    Type: Number\n",
        "  ConfidenceThreshold:\n    Type: [Number\n",
        1,
    )


def _threshold_default_high(text: str) -> str:
    return text.replace(
        "  ConfidenceThreshold:\n    Type: Number\n    Default: 0.93\n",
        "  ConfidenceThreshold:\n    Type: Number\n    Default: high\n",
        1,
    )


@pytest.mark.parametrize(
    ("command", "edit", "problem"),
    [
        ("report", _unclosed_flow_sequence, "template.yaml is not valid YAML: line {line}, "),
        ("evaluate", _unclosed_flow_sequence, "template.yaml is not valid YAML: line {line}, "),
        (
            "report",
            _threshold_default_high,
            "ConfidenceThreshold default in template.yaml: 'high' is not a number; "
            "pass --threshold",
        ),
    ],
)
def test_a_broken_template_is_named_with_the_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: str,
    edit: Callable[[str], str],
    problem: str,
) -> None:
    original = TEMPLATE_PATH.read_text(encoding="utf-8")
    broken = edit(original)
    assert broken != original
    template = tmp_path / "template.yaml"
    template.write_text(broken, encoding="utf-8")
    # The line after "Type: [Number": where the parser finds the sequence unclosed.
    line = original.splitlines().index("  ConfidenceThreshold:") + 3
    load = scones.template_params.load_template
    monkeypatch.setattr(scones.template_params, "load_template", lambda *a, **k: load(template))
    write_capture(tmp_path / "capture")
    argv = {
        "report": [
            "report",
            "--capture",
            str(tmp_path / "capture"),
            "--out",
            str(tmp_path / "r.png"),
        ],
        "evaluate": ["evaluate", "--model", str(SHIPPED_MODEL_DIR), "--data", str(tmp_path)],
    }[command]
    code, err = run_cli(argv, capsys)
    assert code == 2
    assert err.startswith("scones: error: ") and err.count("\n") == 1, err
    assert problem.format(line=line) in err
    assert not (tmp_path / "r.png").exists()


@pytest.mark.parametrize(
    "labels",
    [
        "a\udcff,b",  # what Python makes of the byte 0xff in a command-line argument
        "a\x1b[31m,b",
        "bicycle,motor\ncycle",
    ],
)
def test_report_refuses_labels_that_are_not_printable_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], labels: str
) -> None:
    write_capture(tmp_path / "capture")
    out = tmp_path / "r.png"
    argv = ["report", "--capture", str(tmp_path / "capture"), "--out", str(out)]
    code, err = run_cli([*argv, "--threshold", "0.9", "--labels", labels], capsys)
    assert code == 2
    assert err.startswith("scones: error: --labels ") and err.count("\n") == 1, err
    assert "is not printable text" in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x00binary", "is not UTF-8 text"),
        (b"split,class\n" + b"x" * 200_000 + b",bicycle\n", "is not a readable CSV file"),
    ],
    ids=["binary", "oversized-field"],
)
def test_prepare_data_names_a_manifest_it_cannot_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, problem: str
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    (source / "manifest.csv").write_bytes(content)
    argv = ["prepare-data", "--source", str(source), "--out", str(tmp_path / "out")]
    code, err = run_cli(argv, capsys)
    assert code == 2
    assert err.startswith("scones: error: ") and err.count("\n") == 1, err
    assert f"{source / 'manifest.csv'} {problem}" in err


@pytest.mark.parametrize("blocked", ["capture", "capture/hidden"])
def test_report_names_a_capture_folder_it_cannot_list(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    blocked: str,
) -> None:
    """The tests run as root, which chmod cannot lock out: listing the folder is refused."""
    write_capture(tmp_path / "capture" / "readable")
    write_capture(tmp_path / "capture" / "hidden")
    refused = tmp_path / blocked
    scandir = os.scandir

    def refusing_scandir(path: Any = ".") -> Any:
        if Path(path) == refused:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refusing_scandir)
    out = tmp_path / "r.png"
    argv = ["report", "--capture", str(tmp_path / "capture"), "--out", str(out)]
    code, err = run_cli([*argv, "--threshold", "0.9", "--labels", ",".join(LABELS)], capsys)
    assert code == 2
    assert err.startswith("scones: error: ") and err.count("\n") == 1, err
    assert f"cannot list capture folder {refused}: Permission denied" in err
    assert not out.exists()
