"""``sam build`` produces the Lambda artifacts for python3.13 on arm64, without Docker."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from scones.template_params import PROJECT_ROOT

SAM = PROJECT_ROOT / ".venv-sam" / "bin" / "sam"

pytestmark = pytest.mark.slow


def test_sam_build_packages_functions_and_an_arm64_layer(tmp_path: Path) -> None:
    assert SAM.exists(), "run scripts/bootstrap.sh --tools to install aws-sam-cli"
    # scripts/sam.sh (what `make build` runs) finds Python 3.13 itself: keep it off PATH here.
    path = os.pathsep.join(
        p for p in os.environ["PATH"].split(os.pathsep) if not list(Path(p).glob("python3.13"))
    )
    env = {**os.environ, "PATH": path, "AWS_DEFAULT_REGION": "us-east-1"}
    build_dir = tmp_path / "build"
    result = subprocess.run(
        [
            str(PROJECT_ROOT / "scripts" / "sam.sh"),
            "build",
            "--template",
            "template.yaml",
            "--build-dir",
            str(build_dir),
            "--cache-dir",
            str(tmp_path / "cache"),
        ],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    layer = build_dir / "SharedLayer" / "python"
    assert (layer / "scones_core" / "images.py").is_file()
    assert (layer / "scones_core" / "monitoring" / "service.py").is_file()
    assert (layer / "aws_lambda_powertools").is_dir()
    native = [p.name for p in (layer / "PIL").glob("_imaging.*.so")]
    assert native and all("cpython-313-aarch64" in name for name in native), native
    for function in (
        "StartWorkflowFunction",
        "SerializeImageFunction",
        "ClassifyImageFunction",
        "MonitorFunction",
    ):
        assert (build_dir / function / "app.py").is_file()
        assert not (build_dir / function / "PIL").exists()  # dependencies live in the layer
    _assert_compiled_for_the_runtime(layer)
    # Build inputs stay out of the layer; pip's console scripts too.
    assert not (layer / "requirements.txt").exists()
    assert not (layer / "bin").exists()
    assert not (build_dir / "SharedLayer" / "Makefile").exists()


def _assert_compiled_for_the_runtime(layer: Path) -> None:
    """Every module has CPython 3.13 bytecode that Lambda can use from a read-only mount.

    An unchecked-hash .pyc (PEP 552 flags 0b01) is used without looking at the source's
    timestamp, which the deployment zip does not keep.
    """
    sources = sorted(layer.rglob("*.py"))
    assert len(sources) > 500  # boto3, botocore, Powertools, Pillow, scones_core
    missing = []
    for source in sources:
        compiled = source.parent / "__pycache__" / f"{source.stem}.cpython-313.pyc"
        if not compiled.is_file():
            missing.append(str(source.relative_to(layer)))
            continue
        header = compiled.read_bytes()[:8]
        assert _is_313_magic(header[:4]), compiled
        assert int.from_bytes(header[4:8], "little") == 0b01, f"{compiled}: not unchecked-hash"
    assert not missing, missing[:10]
    assert not list(layer.rglob("*.cpython-31[0-2]*.pyc"))  # no other interpreter's caches


def _is_313_magic(magic: bytes) -> bool:
    # CPython 3.13's bytecode magic numbers are 3550-3599 (Lib/importlib/_bootstrap_external.py).
    number = int.from_bytes(magic[:2], "little")
    return 3550 <= number <= 3599 and magic[2:] == b"\r\n"
