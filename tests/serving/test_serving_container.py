"""The SageMaker container: Dockerfile and ``serve`` script agree with the server.

No Docker engine is needed: the Dockerfile is checked as text, and the ``serve``
script the image runs is run here against the shipped model.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from scones.serving.defaults import SAGEMAKER_PORT
from scones.template_params import PROJECT_ROOT
from tests.serving.conftest import MODEL_DIR, ServeProcess

DOCKERFILE = PROJECT_ROOT / "Dockerfile"
SERVE_SCRIPT = PROJECT_ROOT / "docker" / "serve"
LOCK = PROJECT_ROOT / "requirements" / "run.lock"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    pairs = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def test_image_exposes_the_sagemaker_port_and_runs_serve() -> None:
    parsed = instructions()
    keywords = [keyword for keyword, _ in parsed]
    assert ("EXPOSE", str(SAGEMAKER_PORT)) in parsed
    # SageMaker runs `docker run IMAGE serve`: no ENTRYPOINT may swallow that argument.
    assert "ENTRYPOINT" not in keywords
    assert parsed[keywords.index("CMD")] == ("CMD", '["serve"]')
    assert ("COPY", "docker/serve /usr/local/bin/serve") in parsed


def test_every_copied_path_exists() -> None:
    for keyword, arguments in instructions():
        if keyword == "COPY":
            *sources, _ = shlex.split(arguments)
            for source in sources:
                assert (PROJECT_ROOT / source).exists(), f"Dockerfile copies missing {source}"


def test_runtime_packages_are_pinned_in_the_lock() -> None:
    pinned = {
        line.split("==")[0].strip().lower().replace("_", "-")
        for line in LOCK.read_text(encoding="utf-8").splitlines()
        if "==" in line
    }
    (install,) = [
        args for keyword, args in instructions() if keyword == "RUN" and "--constraint" in args
    ]
    packages = [word for word in shlex.split(install)[4:] if not word.startswith("-")]
    assert packages, "no runtime packages found in the Dockerfile"
    assert {p.lower() for p in packages} <= pinned


def test_serve_script_defaults_match_the_sagemaker_contract() -> None:
    script = SERVE_SCRIPT.read_text(encoding="utf-8")
    assert os.access(SERVE_SCRIPT, os.X_OK)
    assert f"${{SAGEMAKER_BIND_TO_PORT:-{SAGEMAKER_PORT}}}" in script
    assert "${SCONES_MODEL_DIR:-/opt/ml/model}" in script
    assert "exec python -m scones.serving" in script


# Installed here for development, absent from the image: the entry point must not need them.
NOT_IN_IMAGE = ("torch", "moto", "matplotlib", "onnx", "onnxscript", "rich", "httpx", "pytest")
BLOCKER = """
import sys

class NotInImage:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            message = f"{{name}} is not installed in the container image"
            raise ModuleNotFoundError(message, name=name)
        return None

sys.meta_path.insert(0, NotInImage())
"""


@pytest.fixture
def serve_script(tmp_path: Path) -> Iterator[ServeProcess]:
    (tmp_path / "sitecustomize.py").write_text(BLOCKER.format(blocked=set(NOT_IN_IMAGE)))
    bin_dir = str(Path(sys.executable).parent)
    process = ServeProcess(
        [str(SERVE_SCRIPT)],
        env={
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(tmp_path),
            "SCONES_MODEL_DIR": str(MODEL_DIR),
            "SCONES_HOST": "127.0.0.1",
            "SAGEMAKER_BIND_TO_PORT": "0",
        },
    )
    yield process
    process.kill()


def test_the_blocker_really_blocks(tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text(BLOCKER.format(blocked=set(NOT_IN_IMAGE)))
    result = subprocess.run(
        [sys.executable, "-c", "import torch"],
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "torch is not installed in the container image" in result.stderr


def test_the_serve_script_serves_the_shipped_model_with_only_the_images_packages(
    serve_script: ServeProcess, bicycle_png: bytes
) -> None:
    base_url = serve_script.wait_ready()
    ping = httpx.get(f"{base_url}/ping")
    assert ping.status_code == 200
    assert ping.json()["labels"] == ["bicycle", "motorcycle"]
    answer = httpx.post(
        f"{base_url}/invocations", content=bicycle_png, headers={"Content-Type": "image/png"}
    )
    assert answer.status_code == 200 and len(answer.json()) == 2
    assert serve_script.stop(signal.SIGTERM) == 0  # how SageMaker stops a container
