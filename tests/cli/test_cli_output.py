"""What a command leaves behind does not depend on where its output goes: a disk that
fills keeps the earlier result files whole and the error names the file; standard output
that is a closed pipe or a full disk, or cannot spell a file's name, leaves ``scones run``'s
report files written; and a file name is judged by its bytes, whatever the locale."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from scones.cli.main import main
from scones.template_params import PROJECT_ROOT
from tests.full_disk import fill_disk

ONE_IMAGE = sorted((PROJECT_ROOT / "samples" / "bicycle").glob("*.png"))[0]
# Latin-1 can spell the é, not the dotless i and dotted capital I.
NAME = "vélo-ıİ.png"
CLOSED_PIPE_STATUS = 141  # 128 + SIGPIPE, as a shell reports `yes | head`


def test_bench_handlers_on_a_full_disk_keeps_the_earlier_measurements(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``scones bench handlers`` writes docs/cost-measurements.json by default: a disk that
    fills as it writes must not leave that file cut off."""
    from scones.costs import measure

    measured = json.loads((PROJECT_ROOT / "docs" / "cost-measurements.json").read_text())
    monkeypatch.setattr(measure, "run_measurement", lambda *args: measured)
    out = tmp_path / "cost.json"
    earlier = '{"note": "an earlier measurement"}\n'
    out.write_text(earlier)

    fill_disk(monkeypatch, tmp_path)
    assert main(["bench", "handlers", "--small", "1", "--photos", "1", "--json", str(out)]) == 1
    assert out.read_text() == earlier
    assert list(tmp_path.iterdir()) == [out]  # no partial file
    assert f"No space left on device: '{out}'" in capsys.readouterr().err


def _environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHONIO", "PYTHONUTF8"))}
    return {**env, "COLUMNS": "200", "SCONES_STATE_DIR": str(tmp_path / ".scones"), **extra}


def _scones_run(tmp_path: Path, *args: str, **popen: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "scones.cli.main", "run", *args, "--no-progress"],
        cwd=tmp_path,
        env=popen.pop("env", None) or _environment(tmp_path),
        stderr=subprocess.PIPE,
        **popen,
    )


def _reported(out: Path) -> list[dict[str, Any]]:
    """The records of the run's report files (the page and the JSON both written)."""
    [page] = out.glob("run-*.html")
    [document] = out.glob("run-*.json")
    assert page.stat().st_size > 0 and len(list(out.glob("records-*.json"))) == 1
    records: list[dict[str, Any]] = json.loads(document.read_text())["records"]
    return records


@pytest.mark.slow
@pytest.mark.xdist_group("cli")
def test_a_pipe_closed_mid_run_ends_it_quietly_with_its_report_written(tmp_path: Path) -> None:
    """``scones run ... | head -3``: the reader has gone before the results are printed.
    The run still writes its report files, says nothing on stderr, and exits as a writer
    SIGPIPE killed (it exited 1 silently, with no report)."""
    out = tmp_path / "out"
    process = _scones_run(tmp_path, str(ONE_IMAGE), "--out", str(out), stdout=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.readline().startswith(b"stack up in")
    process.stdout.close()
    error = process.stderr.read().decode()
    assert process.wait(timeout=300) == CLOSED_PIPE_STATUS, error
    assert "error" not in error and "Traceback" not in error  # quiet: no broken pipe named
    assert [record["source"] for record in _reported(out)] == [str(ONE_IMAGE)]


@pytest.mark.slow
@pytest.mark.xdist_group("cli")
def test_json_to_a_closed_pipe_still_writes_the_report(tmp_path: Path) -> None:
    """``--json`` to a reader that has gone (it ended in "[Errno 32] Broken pipe" with no
    report files)."""
    out = tmp_path / "out"
    process = _scones_run(
        tmp_path, str(ONE_IMAGE), "--out", str(out), "--json", stdout=subprocess.PIPE
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    error = process.stderr.read().decode()
    assert process.wait(timeout=300) == CLOSED_PIPE_STATUS, error
    assert "error" not in error and "Traceback" not in error
    assert len(_reported(out)) == 1


@pytest.mark.slow
@pytest.mark.xdist_group("cli")
@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full on this machine")
def test_stdout_on_a_full_disk_is_named_and_the_run_still_completes(tmp_path: Path) -> None:
    """``> /dev/full``: every write to stdout fails with ENOSPC. The run used to stop at its
    first line, before uploading anything, with an "[Errno 28]" naming no file."""
    out = tmp_path / "out"
    with open("/dev/full", "wb") as full:
        process = _scones_run(tmp_path, str(ONE_IMAGE), "--out", str(out), stdout=full)
        assert process.stderr is not None
        error = process.stderr.read().decode()
    assert process.wait(timeout=300) == 1, error
    assert (
        "scones: error: cannot write to standard output: [Errno 28] No space left on device"
        in error
    )
    assert "Traceback" not in error
    assert len(_reported(out)) == 1


@pytest.fixture
def named_image(tmp_path: Path) -> Path:
    """A folder holding ``bicycle/vélo-ıİ.png``, a valid UTF-8 name."""
    folder = tmp_path / "uploads"
    (folder / "bicycle").mkdir(parents=True)
    shutil.copy(ONE_IMAGE, folder / "bicycle" / NAME)
    return folder


@pytest.mark.slow
@pytest.mark.xdist_group("cli")
def test_a_name_the_output_encoding_cannot_spell_is_printed_escaped(
    tmp_path: Path, named_image: Path
) -> None:
    """``PYTHONIOENCODING=latin-1``: the name is printed with escapes for what Latin-1
    cannot spell (it was a UnicodeEncodeError traceback, and no report)."""
    out = tmp_path / "out"
    env = _environment(tmp_path, PYTHONIOENCODING="latin-1")
    process = _scones_run(
        tmp_path, str(named_image), "--out", str(out), stdout=subprocess.PIPE, env=env
    )
    printed, error = process.communicate(timeout=300)
    assert process.returncode == 0, error.decode("latin-1")
    assert "vélo-\\u0131\\u0130.png".encode("latin-1") in printed
    assert [record["key"] for record in _reported(out)] == [f"incoming/bicycle/{NAME}"]


@pytest.mark.slow
@pytest.mark.xdist_group("cli")
def test_an_ascii_locale_judges_a_name_by_its_bytes(tmp_path: Path, named_image: Path) -> None:
    """``LC_ALL=C`` without UTF-8 mode: Python reads a UTF-8 name as surrogate escapes. It
    is uploaded under its UTF-8 key (it was refused as "not UTF-8"); a name whose bytes are
    not UTF-8 is still refused."""
    env = _environment(tmp_path, LC_ALL="C", PYTHONUTF8="0", PYTHONCOERCECLOCALE="0")
    latin = tmp_path / "latin"
    latin.mkdir()
    (latin / os.fsdecode(b"caf\xe9.png")).write_bytes(ONE_IMAGE.read_bytes())
    refused = _scones_run(tmp_path, str(latin), stdout=subprocess.PIPE, env=env)
    _, error = refused.communicate(timeout=60)
    assert refused.returncode == 2
    assert b"the file name is not UTF-8" in error

    out = tmp_path / "out"
    process = _scones_run(
        tmp_path, str(named_image), "--out", str(out), stdout=subprocess.PIPE, env=env
    )
    _, error = process.communicate(timeout=300)
    assert process.returncode == 0, error.decode("ascii", "backslashreplace")
    [record] = _reported(out)
    assert record["key"] == f"incoming/bicycle/{NAME}"
    assert record["true_label"] == "bicycle"
