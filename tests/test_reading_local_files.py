"""Local files are read only if they are regular files when opened: a FIFO never ends."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from scones.offline.client import StackClient, StackEndpoints
from scones.reports.capture_source import load_capture
from scones.safe_files import read_regular_file

LABELS = ("bicycle", "motorcycle")
T = TypeVar("T")


def within_seconds(seconds: float, action: Callable[[], T]) -> T:
    """``action()``, failed if it has not returned after ``seconds`` (a read that blocks)."""
    outcome: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(action())
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"still blocked after {seconds} s"
    if errors:
        raise errors[0]
    return outcome[0]


def test_a_fifo_or_a_device_is_named_not_read(tmp_path: Path) -> None:
    fifo = tmp_path / "z.png"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match=r"not a regular file: a FIFO: '.*z\.png'"):
        within_seconds(5, lambda: read_regular_file(fifo))
    with pytest.raises(OSError, match="not a regular file: a device"):
        read_regular_file(Path(os.devnull))
    with pytest.raises(OSError, match="not a regular file: a folder"):
        read_regular_file(tmp_path)
    (tmp_path / "a.png").write_bytes(b"\x89PNG")
    assert read_regular_file(tmp_path / "a.png") == b"\x89PNG"


def test_an_upload_swapped_for_a_fifo_after_listing_is_refused_not_waited_for(
    tmp_path: Path,
) -> None:
    """`scones run` lists the folder, starts the stack, then uploads: a file replaced by a
    FIFO in between blocked the run forever, past its --timeout."""
    fifo = tmp_path / "z.png"
    os.mkfifo(fifo)
    client = StackClient(StackEndpoints(*(["unused"] * 8)))
    with pytest.raises(OSError, match="a FIFO"):
        within_seconds(5, lambda: client.upload_file(fifo, "z.png"))


def test_a_fifo_among_the_capture_files_is_named_and_the_rest_reported(tmp_path: Path) -> None:
    """`scones report --capture DIR` hung on a FIFO named like a capture file."""
    line = (
        '{"captureData": {"endpointOutput": {"observedContentType": "application/json", '
        '"mode": "OUTPUT", "data": "[0.1, 0.9]", "encoding": "JSON"}}, "eventMetadata": '
        '{"eventId": "e1", "inferenceTime": "2026-11-25T12:00:00Z"}, "eventVersion": "0"}\n'
    )
    (tmp_path / "a.jsonl").write_text(line)
    os.mkfifo(tmp_path / "b.jsonl")

    series = within_seconds(5, lambda: load_capture(str(tmp_path), LABELS))

    assert len(series) == 1
    [warning] = series.warnings
    assert warning.source == str(tmp_path / "b.jsonl")
    assert "not a regular file" in warning.reason
