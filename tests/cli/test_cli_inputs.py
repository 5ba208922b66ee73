"""Which files `scones run` and `scones classify` send: every one named, none skipped silently."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from scones.cli.errors import CommandError
from scones.cli.inputs import NAMED_PROBLEMS, SAMPLES_DIR, collect_inputs

LABELS = ("bicycle", "motorcycle")
ONE_IMAGE = (
    SAMPLES_DIR / "bicycle" / sorted(p.name for p in (SAMPLES_DIR / "bicycle").glob("*.png"))[0]
)
PREFIX = "incoming/"


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_symlinked_folders_are_followed_once_and_hidden_files_left_out(tmp_path: Path) -> None:
    photos = tmp_path / "elsewhere"
    _touch(photos / "bicycle" / "a.png")
    _touch(photos / "bicycle" / ".thumbs" / "b.png")
    _touch(photos / ".DS_Store")
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "linked").symlink_to(photos, target_is_directory=True)
    (photos / "loop").symlink_to(photos, target_is_directory=True)  # a link back up
    found = collect_inputs([inputs], LABELS, prefix=PREFIX)
    assert [(f.key, f.true_label) for f in found] == [("linked/bicycle/a.png", "bicycle")]
    # A link to a folder that is also reached directly is not a loop: both are sent, each
    # under its own name, and the real folder keeps its label.
    (photos / "all").symlink_to(photos / "bicycle", target_is_directory=True)
    found = collect_inputs([photos], LABELS, prefix=PREFIX)
    assert [(f.key, f.true_label) for f in found] == [
        ("all/a.png", None),
        ("bicycle/a.png", "bicycle"),
    ]


def test_what_a_folder_holds_that_is_not_sent_is_said(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Hidden files, a FIFO, a socket's place and a link to a device were left out with no
    word: "uploading 1 file(s)" of a folder of eight entries."""
    _touch(tmp_path / "a.png")
    _touch(tmp_path / ".hidden.png")
    _touch(tmp_path / ".thumbs" / "b.png")
    os.mkfifo(tmp_path / "fifo.png")
    (tmp_path / "zero.png").symlink_to("/dev/zero")

    found = collect_inputs([tmp_path], LABELS, prefix=PREFIX)

    assert [f.key for f in found] == ["a.png"]
    said = capsys.readouterr().err.splitlines()
    assert said == [
        "scones: left out 2 hidden file(s) or folder(s) (names starting with '.'), "
        f"e.g. {tmp_path / '.hidden.png'}",
        f"scones: left out {tmp_path / 'fifo.png'}: not a regular file (a FIFO, a socket or "
        "a device)",
        f"scones: left out {tmp_path / 'zero.png'}: not a regular file (a FIFO, a socket or "
        "a device)",
    ]


def test_a_link_to_nothing_and_an_unreadable_folder_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _touch(tmp_path / "ok" / "a.png")
    (tmp_path / "ok" / "gone.png").symlink_to(tmp_path / "deleted.png")
    with pytest.raises(CommandError, match=r"gone\.png: a symbolic link to nothing"):
        collect_inputs([tmp_path / "ok"], LABELS, prefix=PREFIX)
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(CommandError, match="dangling: a symbolic link to nothing"):
        collect_inputs([tmp_path / "dangling"], LABELS, prefix=PREFIX)

    locked = tmp_path / "locked"
    _touch(locked / "inner" / "c.png")
    real_scandir = os.scandir

    def scandir(path: object = ".") -> object:
        if Path(os.fsdecode(path)).name == "inner":  # what chmod 000 does to a non-root user
            raise PermissionError(13, "Permission denied", os.fsdecode(path))
        return real_scandir(path)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(CommandError, match=r"inner: cannot read the folder: Permission denied"):
        collect_inputs([locked], LABELS, prefix=PREFIX)


def test_many_inputs_with_one_name_twice_are_refused(tmp_path: Path) -> None:
    for i in range(3000):
        _touch(tmp_path / "a" / f"{i}.png")
    _touch(tmp_path / "b" / "7.png")
    assert len(collect_inputs([tmp_path / "a"], LABELS, prefix=PREFIX)) == 3000
    with pytest.raises(CommandError) as refused:
        collect_inputs([tmp_path / "a", tmp_path / "b"], LABELS, prefix=PREFIX)
    # Both files named, as the user gave them.
    said = str(refused.value)
    assert (
        f"under the same name 7.png: {tmp_path / 'a' / '7.png'} and {tmp_path / 'b' / '7.png'}"
        in said
    )
    with pytest.raises(CommandError, match=r"7\.png is given twice"):
        collect_inputs([tmp_path / "b" / "7.png", tmp_path / "b" / "7.png"], LABELS, prefix=PREFIX)


LONG = "/".join(["é" * 100] * 5) + "/" + "x" * 17 + ".png"  # folders under 255 bytes each


@pytest.mark.parametrize(
    ("name", "named"),
    [
        ("a\nb.png", r"control character \('\\n'\)"),
        ("tab\there\x7f.png", r"control character \('\\t', '\\x7f'\)"),
        (LONG, r"would be 1035 bytes \(the incoming prefix included\); S3 allows 1024"),
    ],
)
def test_a_name_that_cannot_be_an_s3_key_as_it_is_is_refused_before_anything_starts(
    tmp_path: Path, name: str, named: str
) -> None:
    _touch(tmp_path / "ok.png")
    _touch(tmp_path / name)
    with pytest.raises(CommandError, match=named):
        collect_inputs([tmp_path], LABELS, prefix=PREFIX)


def test_every_input_that_cannot_be_uploaded_is_named_at_once(tmp_path: Path) -> None:
    """A folder of thousands with a few bad names: the first stopped the run and only it
    was named, so k bad names took k runs to find. Still nothing is sent unless all are."""
    _touch(tmp_path / "ok.png")
    (tmp_path / "gone.png").symlink_to(tmp_path / "deleted.png")
    _touch(tmp_path / "a\nb.png")
    _touch(tmp_path / LONG)
    (tmp_path / os.fsdecode(b"caf\xe9.png")).write_bytes(b"x")
    with pytest.raises(CommandError) as refused:
        collect_inputs([tmp_path], LABELS, prefix=PREFIX)
    lines = str(refused.value).splitlines()
    assert lines[0] == "4 inputs cannot be uploaded as they are, so nothing was uploaded:"
    assert len(lines) == 5
    said = "\n".join(lines[1:])
    assert f"{tmp_path / 'gone.png'}: a symbolic link to nothing" in said
    assert "control character ('\\n')" in said
    assert "would be 1035 bytes" in said
    assert "caf\\udce9.png': the file name is not UTF-8" in said

    # A path given that is itself a link to nothing, or missing, is named with the others.
    (tmp_path.parent / f"{tmp_path.name}-gone").symlink_to(tmp_path / "nowhere")
    given = [tmp_path.parent / f"{tmp_path.name}-gone", tmp_path, tmp_path / "missing"]
    with pytest.raises(CommandError) as refused:
        collect_inputs(given, LABELS, prefix=PREFIX)
    lines = str(refused.value).splitlines()
    assert lines[0] == "6 inputs cannot be uploaded as they are, so nothing was uploaded:"
    assert f"  {given[0]}: a symbolic link to nothing" in lines[1]
    assert lines[-1] == f"  {tmp_path / 'missing'}: no such file or folder"

    for i in range(NAMED_PROBLEMS + 5):
        (tmp_path / f"gone-{i:02d}.png").symlink_to(tmp_path / "deleted.png")
    with pytest.raises(CommandError) as refused:
        collect_inputs([tmp_path], LABELS, prefix=PREFIX)
    lines = str(refused.value).splitlines()
    assert lines[0].startswith(f"{NAMED_PROBLEMS + 9} inputs cannot be uploaded")
    assert len(lines) == 1 + NAMED_PROBLEMS + 1 and lines[-1] == "  and 9 more"


def test_a_key_of_exactly_1024_bytes_with_the_prefix_is_accepted(tmp_path: Path) -> None:
    folders = ["f" * 200] * 4  # 804 bytes with their slashes
    name = "e" * (1024 - len(PREFIX) - 804 - len(".png")) + ".png"
    _touch(tmp_path.joinpath(*folders, name))
    (found,) = collect_inputs([tmp_path], LABELS, prefix=PREFIX)
    assert len((PREFIX + found.key).encode()) == 1024


@pytest.mark.parametrize("special", ["/dev/null", "fifo"])
def test_a_device_or_a_pipe_is_named_not_read_as_a_folder(tmp_path: Path, special: str) -> None:
    path = Path(special)
    if special == "fifo":
        path = tmp_path / "pipe"
        os.mkfifo(path)
    with pytest.raises(CommandError) as raised:
        collect_inputs([path], labels=(), prefix="incoming/")
    assert str(raised.value) == (
        f"{path}: not a file or a folder (a device, a pipe or a socket); "
        "give image files or folders of them"
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["evaluate", "--out", ""],
        ["prepare-data", "--out", " "],
        ["run", "--out", ""],
        ["classify", ""],
        ["report", "--capture", "", "--out", "traffic.png"],
        ["report", "--capture", "captures", "--out", ""],
        ["cost", "--measurements", ""],
        ["bench", "burst", "--data", ""],
        ["retrain", "--model", ""],
    ],
)
def test_an_empty_path_is_refused_not_read_as_the_current_folder(
    argv: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An unset shell variable gives an empty argument. As a path it was the current
    folder: written into (reports, a prepared dataset), or uploaded whole."""
    from scones.cli.main import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert "the path is empty (an unset variable?)" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_memory_sweep_is_not_silently_left_out_of_the_json(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``cost --json --sweep-memory`` printed the document without the sweep, exit 0."""
    from scones.cli.main import main

    assert main(["cost", "--json", "--sweep-memory"]) == 2
    printed = capsys.readouterr()
    assert printed.out == ""
    assert "--sweep-memory prints a table, which --json has no place for" in printed.err


def test_a_dash_for_the_reports_png_is_refused_not_made_a_file_named_dash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``-`` reads as "standard output", which ``report`` uses for its summary: it was
    taken as a file name, and a PNG called ``-`` appeared in the current folder."""
    from scones.cli.main import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        main(["report", "--capture", "captures", "--out", "-"])
    assert exited.value.code == 2
    assert "'-' would write a file named '-'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.xdist_group("cli")
def test_a_file_gone_between_listing_and_upload_is_named_and_the_run_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file deleted while the stack started (a camera's sync at work) ended the run with
    "cannot read", exit 2, and no report for the files that were there."""
    from scones.cli import run
    from scones.cli.main import main

    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        shutil.copy(ONE_IMAGE, folder / name)
    listed = run.collect_inputs

    def listed_then_deleted(*args: Any, **kwargs: Any) -> Any:
        found = listed(*args, **kwargs)
        (folder / "b.png").unlink()
        return found

    monkeypatch.setattr(run, "collect_inputs", listed_then_deleted)
    out = tmp_path / "out"
    code = main(["run", str(folder), "--out", str(out), "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert f"left out {folder / 'b.png'}: cannot read it any more" in printed
    [report] = out.glob("run-*.json")
    records = json.loads(report.read_text())["records"]
    assert [r["source"] for r in records] == [str(folder / "a.png")]


@pytest.mark.parametrize(
    ("given", "selected"),
    [
        ("misc/", "incoming/misc/"),
        ("incoming/misc/", "incoming/misc/"),
        ("incoming", "incoming"),  # the start of the incoming prefix: everything under it
        ("inc", "inc"),
        ("", ""),
        ("incoming/incoming/x", "incoming/incoming/x"),
    ],
)
def test_a_prefix_is_read_as_the_tables_show_keys(given: str, selected: str) -> None:
    from scones.cli.arguments import key_prefix

    assert key_prefix(given, "incoming/") == selected
    assert key_prefix(given, "") == given  # the stack's incoming prefix unknown
