"""Find the files a command should send through the workflow, and their true labels."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from scones.cli.errors import CommandError
from scones.template_params import PROJECT_ROOT

SAMPLES_DIR = PROJECT_ROOT / "samples"


@dataclass(frozen=True)
class InputFile:
    path: Path
    key: str  # the name under the incoming prefix
    true_label: str | None  # from the parent folder's name, when it is a label


def _is_text(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes of the file name (surrogate escapes)
        return False
    return True


def collect_inputs(paths: list[Path], labels: tuple[str, ...]) -> list[InputFile]:
    """Every regular, non-hidden file under ``paths``; each must be readable."""
    found: list[InputFile] = []
    for root in paths:
        if not root.exists():
            raise CommandError(f"{root}: no such file or folder")
        if root.is_file():
            files = [root]
            base = root.parent
        else:
            files = sorted(
                p
                for p in root.rglob("*")
                if p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(root).parts)
            )
            base = root
        for path in files:
            if not os.access(path, os.R_OK):
                raise CommandError(f"{path}: file is not readable")
            relative = path.relative_to(base).as_posix()
            if not _is_text(relative):
                # An S3 key is UTF-8: a name that is not cannot be uploaded as itself.
                raise CommandError(
                    f"{os.fsdecode(path)!a}: the file name is not UTF-8, so it cannot be an "
                    "S3 key; rename it"
                )
            parent = path.parent.name
            found.append(
                InputFile(path=path, key=relative, true_label=parent if parent in labels else None)
            )
    if not found:
        where = ", ".join(str(p) for p in paths)
        raise CommandError(f"no files found in {where}")
    keys = [item.key for item in found]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise CommandError(f"two inputs would be uploaded under the same name: {duplicates[0]}")
    return found
