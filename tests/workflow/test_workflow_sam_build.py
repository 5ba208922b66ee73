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
