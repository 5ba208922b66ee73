"""Which files `scones run` and `scones classify` send: every one named, none skipped silently."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scones.cli.errors import CommandError
from scones.cli.inputs import collect_inputs

LABELS = ("bicycle", "motorcycle")


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
    found = collect_inputs([inputs], LABELS)
    assert [(f.key, f.true_label) for f in found] == [("linked/bicycle/a.png", "bicycle")]
    # A link to a folder that is also reached directly is not a loop: both are sent, each
    # under its own name, and the real folder keeps its label.
    (photos / "all").symlink_to(photos / "bicycle", target_is_directory=True)
    found = collect_inputs([photos], LABELS)
    assert [(f.key, f.true_label) for f in found] == [
        ("all/a.png", None),
        ("bicycle/a.png", "bicycle"),
    ]


def test_a_link_to_nothing_and_an_unreadable_folder_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _touch(tmp_path / "ok" / "a.png")
    (tmp_path / "ok" / "gone.png").symlink_to(tmp_path / "deleted.png")
    with pytest.raises(CommandError, match=r"gone\.png: a symbolic link to nothing"):
        collect_inputs([tmp_path / "ok"], LABELS)
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(CommandError, match="dangling: a symbolic link to nothing"):
        collect_inputs([tmp_path / "dangling"], LABELS)

    locked = tmp_path / "locked"
    _touch(locked / "inner" / "c.png")
    real_scandir = os.scandir

    def scandir(path: object = ".") -> object:
        if Path(os.fsdecode(path)).name == "inner":  # what chmod 000 does to a non-root user
            raise PermissionError(13, "Permission denied", os.fsdecode(path))
        return real_scandir(path)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(CommandError, match=r"inner: cannot read the folder: Permission denied"):
        collect_inputs([locked], LABELS)


def test_many_inputs_with_one_name_twice_are_refused(tmp_path: Path) -> None:
    for i in range(3000):
        _touch(tmp_path / "a" / f"{i}.png")
    _touch(tmp_path / "b" / "7.png")
    assert len(collect_inputs([tmp_path / "a"], LABELS)) == 3000
    with pytest.raises(CommandError, match=r"under the same name: 7\.png"):
        collect_inputs([tmp_path / "a", tmp_path / "b"], LABELS)
