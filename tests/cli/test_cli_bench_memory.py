"""`scones bench memory` decodes every format at a size in fresh interpreters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scones.cli.main import main
from scones.template_params import parameter_defaults


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
    # 6.25 MP x 17 bytes; a progressive JPEG's 6.25 MP x 3 coefficients of 2 bytes; a
    # HEIC's 4:2:0 planes, libheif's RGB and Pillow's copy, about 10.5 bytes a pixel.
    refused = ["WEBP RGBA (lossless)", "WEBP lossless, ~MaxImageBytes", "JPEG RGB progressive"]
    refused.append("HEIC grid of 512x512 tiles")
    for name in refused:
        assert rows[name]["outcome"] == "refused: ImageTooManyPixels"
    decoded = [row for row in rows.values() if row["outcome"] == "decoded"]
    assert len(decoded) == len(rows) - len(refused)
    max_bytes = int(parameter_defaults()["MaxImageBytes"])
    for row in rows.values():
        assert 0 < row["file_bytes"] <= max_bytes  # under MaxImageBytes, as an upload must be
    for row in decoded:
        assert row["bare_rise_mb"] > 0 and row["serialize_rise_mb"] >= 0
    # The noisy WebP comes near the byte limit: the upload's bytes beside the largest decode.
    assert rows["WEBP lossless, ~MaxImageBytes"]["file_bytes"] > 0.7 * max_bytes
    assert "WEBP RGBA (lossless)" in capsys.readouterr().out


def test_bad_arguments_are_named(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "memory", "--pixels", "10"]) != 0
    assert "--pixels must be at least 64" in capsys.readouterr().err


def test_a_compare_folder_without_layers_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "memory", "--pixels", "4096", "--compare", str(tmp_path)]) != 0
    assert "no layers/shared there" in capsys.readouterr().err
