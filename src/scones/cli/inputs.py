"""Find the files a command should send through the workflow, and their true labels."""

from __future__ import annotations

import os
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from scones.cli.errors import CommandError
from scones.shown_text import shown
from scones.template_params import PROJECT_ROOT

SAMPLES_DIR = PROJECT_ROOT / "samples"


@dataclass(frozen=True)
class InputFile:
    path: Path
    key: str  # the name under the incoming prefix
    true_label: str | None  # from the parent folder's name, when it is a label


NOT_UTF8_NAME = "the file name is not UTF-8, so it cannot be an S3 key; rename it"


def utf8_name(name: str) -> str | None:
    """The file name as UTF-8 text, from its bytes, or None when they are not UTF-8.

    Python decodes a name with the locale's encoding: under an ASCII locale (``LC_ALL=C``
    without UTF-8 mode) a valid UTF-8 name comes back as surrogate escapes, so it is judged
    by its bytes (``os.fsencode``), never by how the locale read them."""
    try:
        return os.fsencode(name).decode("utf-8")
    except UnicodeDecodeError:
        return None


_DANGLING = "a symbolic link to nothing, or a loop of links"
# How many of the inputs that cannot be uploaded a refusal names.
NAMED_PROBLEMS = 10

# S3 keys are at most 1,024 bytes of UTF-8, and S3 lists control characters among those
# that "might require special handling" (they cannot appear in XML 1.0 listings).
MAX_KEY_BYTES = 1024


def _key_problem(key: str) -> str | None:
    """Why ``key`` (prefix included) cannot be uploaded as itself, or None."""
    control = sorted({c for c in key if ord(c) < 0x20 or ord(c) == 0x7F})
    if control:
        shown = ", ".join(repr(c) for c in control)
        return f"the file name contains a control character ({shown}); rename it"
    size = len(key.encode("utf-8"))
    if size > MAX_KEY_BYTES:
        return (
            f"its S3 key would be {size} bytes (the incoming prefix included); S3 allows "
            f"{MAX_KEY_BYTES}; shorten the name or its folders"
        )
    return None


def _files_under(root: Path, problems: list[tuple[str, str]] | None = None) -> list[Path]:
    """Every non-hidden regular file under ``root``, through symlinked folders; a link
    back to a folder it sits in is not followed (the loop ends there); an unreadable folder
    or a link to nothing is an error, not a skip (a link to nothing goes to ``problems``,
    when given, so that every one is named). Hidden files and folders, and entries that
    are not regular files, are left out, and said on stderr."""
    found: list[Path] = []
    hidden: list[Path] = []
    special: list[Path] = []
    # Each folder's own identity and its ancestors': a link is a loop only when it leads
    # back up its own path, not when it names a folder that is also reached another way.
    lineage: dict[str, frozenset[tuple[int, int]]] = {}

    def refuse(error: OSError) -> None:
        raise CommandError(f"{error.filename}: cannot read the folder: {error.strerror}")

    for folder, subfolders, names in os.walk(root, onerror=refuse, followlinks=True):
        info = os.stat(folder)
        identity = (info.st_dev, info.st_ino)
        above = lineage.get(os.path.dirname(folder), frozenset())
        if identity in above:
            subfolders[:] = []
            continue
        lineage[folder] = above | {identity}
        hidden.extend(Path(folder) / d for d in subfolders if d.startswith("."))
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        for name in names:
            path = Path(folder) / name
            if name.startswith("."):
                hidden.append(path)
                continue
            if path.is_symlink() and not path.exists():
                if problems is None:
                    raise CommandError(f"{path}: {_DANGLING}")
                problems.append((str(path), _DANGLING))
                continue
            if path.is_file():
                found.append(path)
            else:
                special.append(path)
    # Left out, but named: an upload never vanishes without a word.
    if hidden:
        print(
            f"scones: left out {len(hidden)} hidden file(s) or folder(s) (names starting "
            "with '.'), "
            f"e.g. {shown(str(min(hidden)))}",
            file=sys.stderr,
        )
    for path in sorted(special):
        print(
            f"scones: left out {shown(str(path))}: not a regular file (a FIFO, a socket or "
            "a device)",
            file=sys.stderr,
        )
    return sorted(found)


def collect_inputs(paths: list[Path], labels: tuple[str, ...], *, prefix: str) -> list[InputFile]:
    """Every regular, non-hidden file under ``paths``; each must be readable, and its name
    an S3 key under ``prefix`` (the incoming prefix) as it is. Nothing is sent unless all
    are: a refusal names every file that cannot be (the first NAMED_PROBLEMS), so one
    run of a large folder finds them all."""
    found: list[InputFile] = []
    problems: list[tuple[str, str]] = []  # (the file as shown, why it cannot be sent)
    for root in paths:
        if not root.exists():
            why = _DANGLING if root.is_symlink() else "no such file or folder"
            problems.append((str(root), why))
            continue
        if root.is_file():
            files = [root]
            base = root.parent
        elif not root.is_dir():
            why = (
                "not a file or a folder (a device, a pipe or a socket); give image files or "
                "folders of them"
            )
            problems.append((str(root), why))
            continue
        else:
            files = _files_under(root, problems)
            base = root
        for path in files:
            if not os.access(path, os.R_OK):
                problems.append((str(path), "file is not readable"))
                continue
            relative = utf8_name(path.relative_to(base).as_posix())
            if relative is None:
                # An S3 key is UTF-8: a name that is not cannot be uploaded as itself.
                problems.append((ascii(os.fsdecode(path)), NOT_UTF8_NAME))
                continue
            if problem := _key_problem(prefix + relative):
                problems.append((ascii(os.fsdecode(path)), problem))
                continue
            parent = utf8_name(path.parent.name)
            found.append(
                InputFile(path=path, key=relative, true_label=parent if parent in labels else None)
            )
    if problems:
        raise CommandError(_refusal(problems))
    if not found:
        where = ", ".join(str(p) for p in paths)
        raise CommandError(f"no files found in {where}")
    counts = Counter(item.key for item in found)
    duplicates = sorted(key for key, count in counts.items() if count > 1)
    if duplicates:
        named = [item.path for item in found if item.key == duplicates[0]]
        how = f"{named[0]} is given twice" if len(set(named)) == 1 else f"{named[0]} and {named[1]}"
        raise CommandError(
            f"two inputs would be uploaded under the same name {duplicates[0]}: {how} (each "
            "file's name is its path under the folder given; give one of them, or a folder "
            "above both)"
        )
    return found


def _refusal(problems: list[tuple[str, str]]) -> str:
    """One file: ``FILE: WHY``. More: how many, then the first NAMED_PROBLEMS a line each."""
    if len(problems) == 1:
        return "{}: {}".format(*problems[0])
    lines = [f"  {shown(name)}: {why}" for name, why in problems[:NAMED_PROBLEMS]]
    if len(problems) > NAMED_PROBLEMS:
        lines.append(f"  and {len(problems) - NAMED_PROBLEMS} more")
    return (
        f"{len(problems)} inputs cannot be uploaded as they are, so nothing was uploaded:\n"
        + "\n".join(lines)
    )
