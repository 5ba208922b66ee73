"""`scones bench review` serves real uploads through the review server and times answers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from scones.cli.main import main


def test_the_page_gets_small_pngs_and_answers_go_through_a_burst(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "review.json"
    args = ["--pixels", "1000000", "--burst", "3", "--repeat", "1", "--json", str(out)]
    assert main(["bench", "review", *args]) == 0
    result = json.loads(out.read_text())
    rows = {row["upload"]: row for row in result["images"]}
    # A camera photo reaches the page as a PNG of a few tens of KB, not its megabytes.
    photo = rows["camera JPEG 4000x3000"]
    assert photo["upload_bytes"] > 1_000_000 and photo["served_bytes"] < 100_000
    assert photo["served_x_upload"] < 0.1
    # A TIFF, which browsers cannot show, is served as the PNG of the same pixels.
    assert rows["the same, as TIFF"]["served_bytes"] == rows["CIFAR PNG 32x32"]["served_bytes"]
    burst = result["burst"]
    assert burst["burst"] == 3 and burst["answer_ms_during_burst"] > 0
    assert "AWS_ACCESS_KEY_ID" not in os.environ or os.environ["AWS_ACCESS_KEY_ID"] != "bench"
    printed = capsys.readouterr().out
    assert "POST /api/answers" in printed and "camera JPEG 4000x3000" in printed
