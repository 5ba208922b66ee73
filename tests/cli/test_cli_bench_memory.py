"""`scones bench memory` decodes every format at a size in fresh interpreters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scones.cli.main import main


def test_each_format_is_measured_and_a_webp_too_large_for_the_memory_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "memory.json"
    # 6.25 MP at Lambda's least memory, 128 MB: 32 MB for the decode once the function's
    # own 96 MB is set aside.
    args = ["--pixels", "6250000", "--memory-mb", "128", "--json", str(out)]
    assert main(["bench", "memory", *args]) == 0
    result = json.loads(out.read_text())
    rows = {row["image"]: row for row in result["rows"]}
    assert {"PNG RGBA", "TIFF float (deflate)", "JPEG RGB"} <= set(rows)
    # 6.25 MP x 17 bytes; a progressive JPEG's 6.25 MP x 3 coefficients of 2 bytes.
    for refused in ["WEBP RGBA (lossless)", "JPEG RGB progressive"]:
        assert rows[refused]["outcome"] == "refused: ImageTooManyPixels"
    decoded = [row for row in rows.values() if row["outcome"] == "decoded"]
    assert len(decoded) == len(rows) - 2
    for row in decoded:
        assert row["bare_rise_mb"] > 0 and row["serialize_rise_mb"] >= 0
        assert 0 < row["file_bytes"] <= 5 * 2**20  # under MaxImageBytes, as an upload must be
    assert "WEBP RGBA (lossless)" in capsys.readouterr().out


def test_bad_arguments_are_named(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "memory", "--pixels", "10"]) != 0
    assert "--pixels must be at least 64" in capsys.readouterr().err


def test_a_compare_folder_without_layers_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "memory", "--pixels", "4096", "--compare", str(tmp_path)]) != 0
    assert "no layers/shared there" in capsys.readouterr().err
