"""The SageMaker container: the Dockerfile, its ``serve`` script and the server agree.

Fast checks first: the Dockerfile as text, its pins against ``requirements/run.lock``,
the container's defaults, and the ``serve`` script run here on exactly the files
the Dockerfile copies, with every package the image does not install blocked.
Then the real thing (``test_the_built_image_serves_the_shipped_model``): the image
built with buildah (``scripts/build_image.sh``, reused while its inputs are
unchanged) runs ``serve`` and answers like the model does in-process.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path, PurePosixPath

import httpx
import pytest

from scones.model.artifact import OnnxClassifier
from scones.paths import PROJECT_ROOT
from scones.serving.command import ServeError, container_defaults
from scones.serving.defaults import (
    CONTAINER_ENDPOINT_NAME,
    RUNTIME_MAX_PAYLOAD_BYTES,
    SAGEMAKER_MODEL_DIR,
    SAGEMAKER_PORT,
)
from scones.serving.server import bind_socket, wait_for_ping
from tests.serving.conftest import MODEL_DIR, ServeProcess

DOCKERFILE = PROJECT_ROOT / "Dockerfile"
SERVE_SCRIPT = PROJECT_ROOT / "docker" / "serve"
LOCK = PROJECT_ROOT / "requirements" / "run.lock"
SERVE_REQUIREMENTS = PROJECT_ROOT / "requirements" / "serve.txt"
BUILD_SCRIPT = PROJECT_ROOT / "scripts" / "build_image.sh"
IN_CI = os.environ.get("CI", "").lower() == "true"


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


def copies() -> list[tuple[list[str], str]]:
    """Each COPY as (sources, destination)."""
    result = []
    for keyword, arguments in instructions():
        if keyword == "COPY":
            *sources, destination = [w for w in shlex.split(arguments) if not w.startswith("--")]
            result.append((sources, destination))
    return result


def pins(path: Path) -> dict[str, str]:
    return {
        metadata_name(line.split("==")[0]): line.split("==")[1].strip()
        for line in path.read_text(encoding="utf-8").splitlines()
        if "==" in line and not line.lstrip().startswith("#")
    }


def metadata_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


def test_image_exposes_the_sagemaker_port_and_runs_serve() -> None:
    parsed = instructions()
    keywords = [keyword for keyword, _ in parsed]
    assert ("EXPOSE", str(SAGEMAKER_PORT)) in parsed
    # SageMaker runs `docker run IMAGE serve`: no ENTRYPOINT may swallow that argument.
    assert "ENTRYPOINT" not in keywords
    assert parsed[keywords.index("CMD")] == ("CMD", '["serve"]')
    assert (["docker/serve"], "/usr/local/bin/serve") in copies()


def test_the_base_image_is_a_build_argument() -> None:
    """Registry pulls fail on the build machine, so scripts/build_image.sh passes its own base."""
    parsed = instructions()
    assert parsed[0][0] == "ARG" and parsed[0][1].startswith("BASE=")
    assert parsed[1] == ("FROM", "${BASE}")


def test_every_copied_path_exists() -> None:
    for sources, _ in copies():
        for source in sources:
            assert (PROJECT_ROOT / source).exists(), f"Dockerfile copies missing {source}"


def test_the_image_copies_no_template_cli_or_project_install() -> None:
    copied = [source for sources, _ in copies() for source in sources]
    assert not [s for s in copied if s in {"template.yaml", "pyproject.toml", "src/", "src"}]
    assert not [s for s in copied if s.startswith(("src/scones/cli", "src/scones/offline"))]
    assert "--editable" not in DOCKERFILE.read_text(encoding="utf-8")


def test_the_image_installs_exactly_its_pins_and_they_are_the_run_locks() -> None:
    (install,) = [args for keyword, args in instructions() if "pip install" in args]
    assert "--no-deps --requirement /opt/program/requirements.txt" in install
    assert (["requirements/serve.txt"], "/opt/program/requirements.txt") in copies()
    image, lock = pins(SERVE_REQUIREMENTS), pins(LOCK)
    assert {name: lock.get(name) for name in image} == image
    direct = {"fastapi", "uvicorn", "onnxruntime", "numpy", "pillow", "boto3"}
    assert direct <= set(image)
    # Lean: nothing for training, the offline stack or the template.
    assert not set(image) & {"torch", "moto", "aws-sam-translator", "onnx", "matplotlib"}


def test_container_defaults_follow_sagemakers_contract() -> None:
    defaults = container_defaults({})
    assert defaults.model_dir == Path(SAGEMAKER_MODEL_DIR) == Path("/opt/ml/model")
    assert (defaults.host, defaults.port) == ("0.0.0.0", SAGEMAKER_PORT)
    assert defaults.max_body_bytes == RUNTIME_MAX_PAYLOAD_BYTES
    assert defaults.endpoint_name == CONTAINER_ENDPOINT_NAME
    moved = container_defaults(
        {
            "SAGEMAKER_BIND_TO_PORT": "9090",
            "SCONES_MODEL_DIR": "/models/x",
            "SCONES_HOST": "127.0.0.1",
            "SCONES_ENDPOINT_NAME": "mine",
        }
    )
    assert (moved.port, moved.model_dir, moved.host) == (9090, Path("/models/x"), "127.0.0.1")
    assert moved.endpoint_name == "mine"
    # A bad variable is named as the variable, not as a flag nobody gave.
    for port in ("http", "99999", "-1"):
        with pytest.raises(ServeError, match=f"SAGEMAKER_BIND_TO_PORT='{port}' is not a port"):
            container_defaults({"SAGEMAKER_BIND_TO_PORT": port})
    with pytest.raises(ServeError, match="SCONES_ENDPOINT_NAME='my endpoint' is not a SageMaker"):
        container_defaults({"SCONES_ENDPOINT_NAME": "my endpoint"})


def test_the_container_entry_point_reads_neither_template_nor_cli() -> None:
    """Importing the entry point pulls in no CLI, template or samtranslator module."""
    probe = (
        "import sys, scones.serving.__main__, scones.serving.server;"
        "print(sorted(m for m in sys.modules if m.startswith(('scones.cli', "
        "'scones.template_params', 'scones.offline', 'samtranslator', 'yaml'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


# -- the serve script on the image's files only ------------------------------------------


def image_program(root: Path) -> Path:
    """Copy what the Dockerfile copies into ``root`` (its destinations made relative)."""
    for sources, destination in copies():
        target = root / PurePosixPath(destination).relative_to("/")
        for source in sources:
            path = PROJECT_ROOT / source
            if path.is_dir():
                shutil.copytree(
                    path, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__")
                )
            else:
                into = target / path.name if destination.endswith("/") else target
                into.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, into)
    return root / "opt" / "program"


def image_top_level_modules() -> set[str]:
    """The import names the image's packages provide (from their installed metadata here)."""
    wanted = set(pins(SERVE_REQUIREMENTS))
    return {
        module
        for module, dists in metadata.packages_distributions().items()
        if any(metadata_name(d) in wanted for d in dists)
    }


# Only the standard library, the image's packages and the code the image copies may
# load. The project's own modules must be files in the image's program folder (the
# development environment's editable install would otherwise find the rest).
BLOCKER = """
import os
import sys

ALLOWED = {allowed!r}
PROGRAM = {program!r}

def in_image(name):
    base = os.path.join(PROGRAM, *name.split("."))
    return os.path.isfile(base + ".py") or os.path.isfile(os.path.join(base, "__init__.py"))

class NotInImage:
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in ("scones", "scones_core"):
            if in_image(name):
                return None
        elif top in ALLOWED or top in sys.stdlib_module_names or top.startswith("_"):
            return None
        raise ModuleNotFoundError(f"{{name}} is not in the container image", name=name)

sys.meta_path.insert(0, NotInImage())
"""


def blocker(folder: Path, program: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    text = BLOCKER.format(allowed=sorted(image_top_level_modules()), program=str(program))
    (folder / "sitecustomize.py").write_text(text)
    return folder


@pytest.fixture
def image_files(tmp_path: Path) -> tuple[Path, Path]:
    """(the program folder, a folder whose sitecustomize blocks everything else)."""
    program = image_program(tmp_path / "image")
    return program, blocker(tmp_path / "blocker", program)


@pytest.mark.parametrize(
    "module", ["torch", "samtranslator", "scones.cli", "scones.template_params"]
)
def test_the_blocker_really_blocks(image_files: tuple[Path, Path], module: str) -> None:
    program, blocking = image_files
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import fastapi, onnxruntime, boto3, scones.serving; import {module}",
        ],
        env={**os.environ, "PYTHONPATH": f"{blocking}{os.pathsep}{program}"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert f"{module} is not in the container image" in result.stderr


@pytest.fixture
def serve_script(image_files: tuple[Path, Path]) -> Iterator[ServeProcess]:
    program, blocking = image_files
    bin_dir = str(Path(sys.executable).parent)
    process = ServeProcess(
        [str(program.parents[1] / "usr" / "local" / "bin" / "serve")],
        env={
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            # The image's files only: no src/, no template.yaml, no CLI.
            "PYTHONPATH": f"{blocking}{os.pathsep}{program}",
            "SCONES_MODEL_DIR": str(MODEL_DIR),
            "SCONES_HOST": "127.0.0.1",
            "SAGEMAKER_BIND_TO_PORT": "0",
        },
    )
    yield process
    process.kill()


def test_the_serve_script_serves_the_shipped_model_with_only_the_images_files(
    serve_script: ServeProcess, bicycle_png: bytes, classifier: OnnxClassifier
) -> None:
    base_url = serve_script.wait_ready()
    ping = httpx.get(f"{base_url}/ping")
    assert ping.status_code == 200
    assert ping.json()["labels"] == ["bicycle", "motorcycle"]
    assert ping.json()["endpoint"] == CONTAINER_ENDPOINT_NAME
    answer = httpx.post(
        f"{base_url}/invocations", content=bicycle_png, headers={"Content-Type": "image/png"}
    )
    assert answer.status_code == 200
    assert answer.json() == pytest.approx(classifier.predict_bytes(bicycle_png), abs=1e-6)
    assert serve_script.stop(signal.SIGTERM) == 0  # how SageMaker stops a container


# -- the real image ---------------------------------------------------------------------

STATE = PROJECT_ROOT / "build" / "image"
STORAGE = [
    f"--root={STATE / 'storage'}",
    f"--runroot={STATE / 'run'}",
    "--storage-driver=vfs",
]


def _image_tools_missing() -> str | None:
    missing = [tool for tool in ("buildah", "mmdebstrap") if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} not installed (apt-get install buildah mmdebstrap)"
    if os.geteuid() != 0:
        return "buildah with chroot isolation and vfs storage needs root here"
    return None


@pytest.fixture(scope="module")
def built_image() -> str:
    """The image's name, built by scripts/build_image.sh (reused when its inputs are unchanged).

    Without buildah and mmdebstrap the test is skipped here, but fails in CI (CI=true).
    """
    problem = _image_tools_missing()
    if problem:
        if IN_CI:
            pytest.fail(f"the container image test must run in CI: {problem}")
        pytest.skip(problem)
    started = time.monotonic()
    result = subprocess.run(
        [str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=1500, check=False
    )
    assert result.returncode == 0, f"image build failed:\n{result.stderr[-4000:]}"
    print(f"image ready in {time.monotonic() - started:.0f} s: {result.stderr.strip()}")
    return result.stdout.strip().splitlines()[-1]


def buildah(*args: str, timeout: float = 120) -> str:
    result = subprocess.run(
        ["buildah", *STORAGE, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, f"buildah {' '.join(args)} failed:\n{result.stderr}"
    return result.stdout.strip()


@pytest.fixture
def image_container(built_image: str) -> Iterator[str]:
    container = buildah("from", "--pull-never", "--quiet", built_image)
    try:
        yield container
    finally:
        buildah("rm", container)


# One worker builds the image once for these tests (the module fixture is per worker).
IMAGE_GROUP = pytest.mark.xdist_group("container-image")


@pytest.mark.slow
@IMAGE_GROUP
@pytest.mark.timeout(1800)  # a cold build (no cached base) downloads Debian and the wheels
def test_the_built_image_serves_the_shipped_model(
    image_container: str, bicycle_png: bytes, classifier: OnnxClassifier
) -> None:
    holder = bind_socket("127.0.0.1", 0)  # a free port: `buildah run` shares this network
    port = holder.getsockname()[1]
    holder.close()
    # SageMaker's way: the artifact at /opt/ml/model, `serve` as the command, the port
    # from SAGEMAKER_BIND_TO_PORT (only because 8080 may be taken on this machine).
    server = ServeProcess(
        [
            "buildah", *STORAGE, "run", "--isolation", "chroot",
            "--volume", f"{MODEL_DIR}:/opt/ml/model:ro",
            "--env", f"SAGEMAKER_BIND_TO_PORT={port}",
            image_container, "--", "serve",
        ]
    )  # fmt: skip
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_for_ping(base_url, timeout_s=90)
        ping = httpx.get(f"{base_url}/ping")
        answer = httpx.post(
            f"{base_url}/invocations", content=bicycle_png, headers={"Content-Type": "image/png"}
        )
        assert ping.status_code == 200, ping.text
        assert ping.json()["labels"] == ["bicycle", "motorcycle"]
        assert answer.status_code == 200, answer.text
        assert answer.json() == pytest.approx(classifier.predict_bytes(bicycle_png), abs=1e-6)
        assert f"serving /opt/ml/model at http://0.0.0.0:{port}" in "".join(server.stdout)
        # `docker stop` sends SIGTERM to the container's process; `buildah run` would only
        # kill it, so the server (in this machine's process table: chroot isolation) gets it.
        (pid,) = re.findall(r"Started server process \[(\d+)\]", "".join(server.stderr))
        assert "scones.serving" in Path(f"/proc/{pid}/cmdline").read_text()
        os.kill(int(pid), signal.SIGTERM)
        assert server.process.wait(30) == 0, "".join(server.stderr)
        assert "scones serve: stopped" in "".join(server.stderr)
        assert "telemetry" not in "".join(server.stderr)
    finally:
        server.kill()
    record = {"ping": ping.json(), "invocations": answer.json()}
    print(json.dumps(record))


@pytest.mark.slow
@IMAGE_GROUP
@pytest.mark.timeout(1800)
def test_the_built_image_keeps_every_packages_license(image_container: str) -> None:
    """The image leaves out documentation, not licenses: each Debian package keeps its
    copyright file (GPL, LGPL and notice-only licenses ask for it to travel with the
    binaries), and the project's own LICENSE is beside its code."""
    script = (
        "dpkg-query -W -f '${Package}\\n' | sed 's/:.*//' | while read p; do "
        "[ -e /usr/share/doc/$p/copyright ] || echo missing $p; done; "
        "test -s /opt/program/LICENSE && echo project-license"
    )
    out = buildah("run", "--isolation", "chroot", image_container, "--", "sh", "-c", script)
    assert "project-license" in out
    assert [line for line in out.splitlines() if line.startswith("missing")] == []


@pytest.mark.slow
@IMAGE_GROUP
@pytest.mark.timeout(1800)
def test_a_second_build_waits_for_the_one_running_then_reuses_its_image(
    built_image: str, tmp_path: Path
) -> None:
    """Two builds at once ran mmdebstrap into the same file, and the second's `mv` found
    it gone: a build now waits for the one that holds build/image/build.lock."""
    import fcntl

    said = tmp_path / "stderr"
    with (STATE / "build.lock").open("w") as held, said.open("w") as stderr:
        fcntl.flock(held, fcntl.LOCK_EX)
        second = subprocess.Popen(
            [str(BUILD_SCRIPT)], stdout=subprocess.PIPE, stderr=stderr, text=True
        )
        try:
            deadline = time.monotonic() + 60
            while "waiting for it" not in said.read_text() and time.monotonic() < deadline:
                assert second.poll() is None, said.read_text()
                time.sleep(0.1)
            assert "another build of the image is running" in said.read_text()
            time.sleep(0.5)
            assert second.poll() is None  # still waiting while the lock is held
        finally:
            fcntl.flock(held, fcntl.LOCK_UN)
        out, _ = second.communicate(timeout=300)
    assert second.returncode == 0, said.read_text()
    assert "reusing" in said.read_text() and out.strip().splitlines()[-1] == built_image
