"""Package the application's code the way ``sam package`` does.

Functions are zipped from their ``CodeUri`` folder, the layer from its
``ContentUri`` folder under ``python/`` (where Lambda puts layers on
``sys.path``; ``sam build`` does the same for ``BuildMethod: python3.x``),
and the zips go to a bucket. The returned template points at them, so the
translator and CloudFormation see what they would see after ``sam package``.
Dependencies are not vendored: offline, the functions run on this virtual
environment, which pins the same versions as the layer's requirements.
"""

from __future__ import annotations

import copy
import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SKIP_DIRS = {"__pycache__", ".pytest_cache", ".mypy_cache"}
_SKIP_FILES = {"requirements.txt", "Makefile"}  # build inputs, not layer content
# A fixed timestamp keeps zips byte-identical for identical sources.
_ZIP_EPOCH = (2020, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class Artifact:
    key: str
    data: bytes


def zip_folder(folder: Path, prefix: str = "") -> bytes:
    """A deterministic zip of ``folder``'s files (sources only, no caches)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"code folder not found: {folder}")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            if path.is_dir() or _SKIP_DIRS.intersection(relative.parts):
                continue
            if path.suffix == ".pyc" or (relative.name in _SKIP_FILES and len(relative.parts) == 1):
                continue
            info = zipfile.ZipInfo(f"{prefix}{relative.as_posix()}", date_time=_ZIP_EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    return buffer.getvalue()


def package_template(
    template: dict[str, Any], project_root: Path, bucket: str
) -> tuple[dict[str, Any], list[Artifact]]:
    """Return (template with S3 code locations, artifacts to upload to ``bucket``)."""
    packaged = copy.deepcopy(template)
    artifacts: list[Artifact] = []
    for name, resource in packaged.get("Resources", {}).items():
        properties = resource.get("Properties", {})
        kind = resource.get("Type")
        if kind == "AWS::Serverless::Function" and isinstance(properties.get("CodeUri"), str):
            data = zip_folder(project_root / properties["CodeUri"])
            artifact = Artifact(f"code/{name}-{hashlib.sha256(data).hexdigest()[:16]}.zip", data)
            properties["CodeUri"] = f"s3://{bucket}/{artifact.key}"
            artifacts.append(artifact)
        elif kind == "AWS::Serverless::LayerVersion" and isinstance(
            properties.get("ContentUri"), str
        ):
            data = zip_folder(project_root / properties["ContentUri"], prefix="python/")
            artifact = Artifact(f"layers/{name}-{hashlib.sha256(data).hexdigest()[:16]}.zip", data)
            properties["ContentUri"] = f"s3://{bucket}/{artifact.key}"
            artifacts.append(artifact)
    return packaged, artifacts
