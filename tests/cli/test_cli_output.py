"""What a command leaves behind does not depend on where its output goes: a disk that
fills keeps the earlier result files whole and the error names the file; standard output
that is a closed pipe or a full disk, or cannot spell a file's name, leaves every command's
work done (``scones run``'s report files, ``scones evaluate``'s, the records of a stack
``scones up`` held) and ends it the same way (quietly 141, or an error naming standard
output); and a file name is judged by its bytes, whatever the locale."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from scones.cli.display import GuardedStdout
from scones.cli.errors import CommandFailed
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
    # As a user's shell has it: buffered output fails at a flush, not at the write.
    drop = ("PYTHONIO", "PYTHONUTF8", "PYTHONUNBUFFERED")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    return {**env, "COLUMNS": "200", "SCONES_STATE_DIR": str(tmp_path / ".scones"), **extra}


def _scones(tmp_path: Path, *args: str, **popen: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "scones.cli.main", *args],
        cwd=tmp_path,
        env=popen.pop("env", None) or _environment(tmp_path),
        stderr=subprocess.PIPE,
        **popen,
    )


def _scones_run(tmp_path: Path, *args: str, **popen: Any) -> subprocess.Popen[bytes]:
    return _scones(tmp_path, "run", *args, "--no-progress", **popen)


def _to_a_closed_pipe(tmp_path: Path, *args: str) -> tuple[int, str]:
    """``scones ARGS | true``: the reader has gone before the first line. The exit status
    and standard error."""
    process = _scones(tmp_path, *args, stdout=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    error = process.stderr.read().decode()
    return process.wait(timeout=300), error


def _to_a_full_disk(tmp_path: Path, *args: str) -> tuple[int, str]:
    """``scones ARGS > /dev/full``: every write to standard output fails with ENOSPC."""
    with open("/dev/full", "wb") as full:
        process = _scones(tmp_path, *args, stdout=full)
        assert process.stderr is not None
        error = process.stderr.read().decode()
    return process.wait(timeout=300), error


# Commands that print and need no stack, each printing its own way: argparse's --help
# (which swallowed the error and exited 0), Rich tables, plain print and JSON.
PRINTING_COMMANDS = [["--help"], ["results", "--help"], ["cost"], ["cost", "--json"]]


@pytest.mark.parametrize("command", PRINTING_COMMANDS, ids=" ".join)
def test_every_command_to_a_closed_pipe_ends_quietly(tmp_path: Path, command: list[str]) -> None:
    """As ``scones run`` does: status 141 and nothing on stderr (``--help`` exited 0, the
    others 1 with "scones: error: [Errno 32] Broken pipe")."""
    status, error = _to_a_closed_pipe(tmp_path, *command)
    assert (status, error) == (CLOSED_PIPE_STATUS, "")


@pytest.mark.parametrize("command", [["cost"], ["cost", "--json"]], ids=" ".join)
def test_a_command_started_with_standard_output_closed_does_its_work_silently(
    tmp_path: Path, command: list[str]
) -> None:
    """``scones ... >&-``: Python has no ``sys.stdout``, and ``print`` writes nothing
    (argparse's ``--help`` then writes to stderr, as Python's own argparse does)."""
    done = subprocess.run(
        [sys.executable, "-m", "scones.cli.main", *command],
        cwd=tmp_path,
        env=_environment(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: os.close(1),
        check=False,
    )
    assert (done.returncode, done.stderr.decode()) == (0, "")


@pytest.mark.xdist_group("cli")
def test_a_run_started_with_standard_output_closed_writes_its_report_silently(
    tmp_path: Path,
) -> None:
    """``scones run --json >&-``: the JSON report was written to ``sys.stdout`` itself, which
    Python leaves None, and the run ended in a traceback after its work."""
    out = tmp_path / "out"
    process = _scones_run(
        tmp_path, str(ONE_IMAGE), "--out", str(out), "--json", preexec_fn=lambda: os.close(1)
    )
    assert process.stderr is not None
    error = process.stderr.read().decode()
    assert process.wait(timeout=300) == 0, error
    assert "Traceback" not in error and "error" not in error  # its progress is on stderr
    assert len(_reported(out)) == 1


class _FailingStream(io.StringIO):
    def __init__(self, error: OSError) -> None:
        super().__init__()
        self.failure = error

    def write(self, text: str) -> int:
        raise self.failure


@pytest.mark.parametrize(
    ("failure", "said"),
    [(BrokenPipeError(32, "Broken pipe"), ""), (OSError(5, "Input/output error"), "[Errno 5]")],
    ids=["closed pipe", "terminal gone"],
)
def test_a_failed_or_interrupted_command_keeps_its_status_when_its_output_fails(
    failure: OSError, said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The output's status (141, or 1 naming standard output) is for a command that did
    its work; one that failed (1), was refused (2) or interrupted (130) keeps its own, and
    a failure other than a closed pipe is still named."""
    for code in (1, 2, 130):
        stdout = GuardedStdout(_FailingStream(failure))
        stdout.write("a result\n")
        assert stdout.status(code) == code
        error = capsys.readouterr().err
        if said:
            assert error == f"scones: error: cannot write to standard output: {failure}\n"
            assert said in error
        else:
            assert error == ""
    stdout = GuardedStdout(_FailingStream(failure))
    stdout.write("a result\n")
    if said:
        with pytest.raises(CommandFailed, match=r"cannot write to standard output: \[Errno 5\]"):
            stdout.status(0)
    else:
        assert stdout.status(0) == CLOSED_PIPE_STATUS


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full on this machine")
@pytest.mark.parametrize("command", PRINTING_COMMANDS, ids=" ".join)
def test_every_command_on_a_full_disk_names_standard_output(
    tmp_path: Path, command: list[str]
) -> None:
    """One line naming standard output, exit 1 (``--help`` exited 0 silently, the others
    said "[Errno 28] No space left on device" naming no file)."""
    status, error = _to_a_full_disk(tmp_path, *command)
    assert (status, error) == (
        1,
        "scones: error: cannot write to standard output: [Errno 28] No space left on device\n",
    )


@pytest.mark.slow
def test_evaluate_to_a_closed_pipe_still_writes_its_report(tmp_path: Path) -> None:
    """``scones evaluate --out`` prints its numbers before it writes evaluation.json and
    .png: a reader that has gone left no report (and "[Errno 32] Broken pipe")."""
    out = tmp_path / "evaluation"
    samples = PROJECT_ROOT / "samples"
    command = ["evaluate", "--data", str(samples), "--split", "all", "--out", str(out)]
    status, error = _to_a_closed_pipe(tmp_path, *command)
    assert (status, error) == (CLOSED_PIPE_STATUS, "")
    assert json.loads((out / "evaluation.json").read_text())["images"] > 0
    assert (out / "evaluation.png").stat().st_size > 0


@pytest.mark.slow
@pytest.mark.xdist_group("cli")
def test_a_stack_held_by_up_with_its_output_gone_is_used_stopped_and_saved(
    tmp_path: Path,
) -> None:
    """``scones up | true``: the stack still serves, ``classify`` and ``results`` to a
    closed pipe still work and end 141, ``review`` (whose page's URL nobody saw) ends at
    once, and ``scones down`` stops the stack with its records saved; ``up`` then ends
    quietly with 141 (it exited 1, and ``review`` served a page nobody could open)."""
    up = _scones(tmp_path, "up", "--out", str(tmp_path / "out"), stdout=subprocess.PIPE)
    assert up.stdout is not None and up.stderr is not None
    up.stdout.close()
    try:
        state = tmp_path / ".scones" / "stack.json"
        deadline = time.monotonic() + 120
        while not state.exists():
            assert up.poll() is None, up.stderr.read().decode()
            assert time.monotonic() < deadline, "scones up did not come up"
            time.sleep(0.2)
        for command in (["classify", str(ONE_IMAGE)], ["results"], ["review", "--port", "0"]):
            assert _to_a_closed_pipe(tmp_path, *command) == (CLOSED_PIPE_STATUS, "")
        down = _scones(tmp_path, "down", stdout=subprocess.PIPE)
        printed, error = down.communicate(timeout=300)
        assert down.returncode == 0, error.decode()
        error = up.stderr.read().decode()
        assert up.wait(timeout=300) == CLOSED_PIPE_STATUS, error
        assert "error" not in error and "Traceback" not in error
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    [records] = (tmp_path / "out").glob("records-*.json")
    assert str(records).encode() in printed
    assert len(json.loads(records.read_text())["records"]) == 1


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


@pytest.mark.parametrize(
    ("argv", "usage"),
    [
        (["run", "--kepp"], "usage: scones run "),
        (["bench", "burst", "--imgaes", "3"], "usage: scones bench burst "),
        (["results", "extra"], "usage: scones results "),
        (["--kepp", "run"], "usage: scones [-h]"),
        (["bench", "--nope", "burst"], "usage: scones bench [-h]"),
    ],
)
def test_an_option_a_command_lacks_is_refused_with_that_commands_usage(
    argv: list[str], usage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """It was refused with the top-level usage (`usage: scones [-h] COMMAND ...`), which
    lists no option of the command the user was typing."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(usage)
    command = usage.removeprefix("usage: ").removesuffix("[-h]").strip()
    extras = [word for word in argv if word not in command.split()]
    assert f"{command}: error: unrecognized arguments: {extras[0]}" in err


def test_building_the_commands_reads_no_template() -> None:
    """Every command builds every command's parser: a default read from template.yaml
    there parsed the template for ``scones cost --help`` too, and without the file every
    command failed. Template defaults are read when a command runs."""
    probe = (
        "import scones.template_params as t; from scones.cli.main import build_parser; "
        "build_parser(); print(t._load_template.cache_info().misses)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "0", done.stderr


def test_version_is_the_packages(capsys: pytest.CaptureFixture[str]) -> None:
    import tomllib

    declared = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["version"]
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"scones {declared}\n"


def test_every_commands_help_says_what_it_does() -> None:
    """`scones down --help` and six `bench` commands' began with their options."""
    import argparse

    from scones.cli.main import build_parser

    def commands(parser: argparse.ArgumentParser, words: str) -> list[tuple[str, Any]]:
        found = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found += [(f"{words} {name}", sub), *commands(sub, f"{words} {name}")]
        return found

    every = commands(build_parser(), "scones")
    assert len(every) > 30
    assert [words for words, parser in every if not (parser.description or "").strip()] == []
