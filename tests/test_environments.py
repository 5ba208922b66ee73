"""The pinned environments: `make run` never installs torch, and offline code never imports it.

.venv (requirements/run.lock) holds what running needs; .venv-train adds torch, onnx and
onnxscript (train.lock) and .venv-test the test tools (test.lock), each layered on the one
below (scripts/bootstrap.sh). The tests run in .venv-test, where torch is importable, so the
torch-free paths are checked in subprocesses that refuse to import the training packages.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from scones.sagemaker.source_bundle import locked_versions
from scones.template_params import PROJECT_ROOT

REQUIREMENTS = PROJECT_ROOT / "requirements"
TRAINING_ONLY = ("torch", "onnx", "onnxscript", "onnx_ir")


def pins(name: str) -> dict[str, str]:
    """A lock's pins by canonical name, read as the training job's bundle reads them."""
    return locked_versions([REQUIREMENTS / name])


def test_pyproject_lists_every_package_a_wheel_must_carry() -> None:
    """An editable install (bootstrap.sh) finds a package pyproject.toml leaves out; a
    wheel (`pip install .`) does not, and every command imports the CLI's modules."""
    import tomllib

    setuptools = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = set()
    for prefix, root in setuptools["package-dir"].items():
        base = PROJECT_ROOT / root
        for init in base.rglob("__init__.py"):
            parts = init.parent.relative_to(base).parts
            on_disk.add(".".join((prefix, *parts) if prefix else parts))
    assert set(setuptools["packages"]) == on_disk


def test_the_run_lock_holds_no_training_or_test_packages() -> None:
    run = pins("run.lock")
    for package in ("torch", "onnx", "onnxscript", "onnx-ir", "pytest", "ruff", "mypy"):
        assert package not in run, f"{package} belongs in train.lock or test.lock, not run.lock"
    for package in ("moto", "aws-sam-translator", "onnxruntime", "boto3", "pillow", "rich"):
        assert package in run


def test_each_layer_adds_only_new_packages_and_torch_is_the_local_cpu_build() -> None:
    run, train, test = pins("run.lock"), pins("train.lock"), pins("test.lock")
    assert not set(run) & set(train), set(run) & set(train)
    assert not (set(run) | set(train)) & set(test)
    # Installed with --no-deps, so an exact pin is all pip sees: never a CUDA build.
    assert train["torch"].endswith("+cpu"), train["torch"]


def in_file_pins(name: str) -> dict[str, str]:
    found = {}
    for raw in (REQUIREMENTS / name).read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            package, version = line.split("==", 1)
            package = re.sub(r"\[.*\]", "", package)
            found[re.sub(r"[-_.]+", "-", package).lower()] = version
    return found


def test_every_in_file_pin_matches_its_lock() -> None:
    locked = {**pins("run.lock"), **pins("train.lock"), **pins("test.lock")}
    for name in ("run.in", "train.in", "test.in"):
        for package, version in in_file_pins(name).items():
            assert locked[package].split("+")[0] == version, (name, package)


@pytest.mark.parametrize("tool", ["sam", "checkov"])
def test_each_tool_venv_has_a_full_lock_of_its_own(tool: str) -> None:
    """The tools' venvs are installed from their locks with --no-deps (bootstrap.sh), so a
    new release of something they pull in never changes the tests' verdicts."""
    lock = pins(f"{tool}.lock")  # every line an exact pin, or this fails
    for package, version in in_file_pins(f"{tool}.in").items():
        assert lock[package] == version, (tool, package)
    assert len(lock) > 20, f"{tool}.lock holds only {sorted(lock)}: run scripts/lock.sh"
    assert "pip" not in lock, "pip comes with the venv"
    bootstrap = (PROJECT_ROOT / "scripts" / "bootstrap.sh").read_text()
    assert f"make_venv --no-deps .venv-{tool} " in bootstrap
    assert f"requirements/{tool}.lock" in bootstrap


# A subprocess in which importing a training package fails, as it would in .venv.
BLOCK_TRAINING = textwrap.dedent(
    f"""
    import importlib.abc, sys
    BLOCKED = {TRAINING_ONLY!r}

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
            return None

    sys.meta_path.insert(0, Blocker())
    import importlib.util
    _find_spec = importlib.util.find_spec
    importlib.util.find_spec = (
        lambda name, *a, **k: None if name.split(".")[0] in BLOCKED else _find_spec(name, *a, **k)
    )
    """
)


def run_blocked(code: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK_TRAINING + textwrap.dedent(code)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_offline_stack_serving_and_every_command_import_without_torch() -> None:
    result = run_blocked(
        """
        from scones.cli.main import build_parser
        build_parser()  # imports every command module
        import scones.offline.stack, scones.serving.app, scones.model.artifact
        import scones.model.evaluate, scones.deploy
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        assert not loaded, loaded
        print("ok")
        """
    )
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]


@pytest.mark.slow
def test_scones_evaluate_runs_the_shipped_model_without_torch(tmp_path: Path) -> None:
    result = run_blocked(
        f"""
        from scones.cli.main import main
        code = main(["evaluate", "--out", {str(tmp_path / "report")!r}])
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        assert not loaded, loaded
        sys.exit(code)
        """
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "accuracy" in result.stdout
    assert (tmp_path / "report" / "evaluation.json").is_file()


@pytest.mark.slow
def test_scones_bench_model_runs_without_torch(tmp_path: Path) -> None:
    from tests.model.conftest import copy_subset

    # A few bundled images, scored whole: the same imports as the recorded validation
    # split, without scoring the reference ensemble on hundreds of images.
    data = copy_subset(tmp_path / "data", 4)
    argv = ["bench", "model", "--images", "4", "--warmup", "1", "--data", str(data)]
    result = run_blocked(
        f"""
        from scones.cli.main import main
        code = main({[*argv, "--split", "all"]!r})
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        assert not loaded, loaded
        sys.exit(code)
        """
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "ms/image" in result.stdout and "ensemble-v1" in result.stdout


def test_training_without_torch_says_which_environment_it_needs() -> None:
    result = run_blocked(
        """
        from scones.cli.torch_free import import_without_training
        build = import_without_training("scones.model.build")
        try:
            build.build_model
            build.train_ensemble()
        except ModuleNotFoundError as exc:
            print(exc)
        """
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert ".venv-train" in result.stdout


def test_the_makefile_runs_training_in_the_training_environment_only() -> None:
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    targets = dict(re.findall(r"^([a-z]+):\n((?:\t.*\n)+)", makefile, flags=re.MULTILINE))
    assert "bootstrap.sh run" in targets["run"] and ".venv/bin/scones run" in targets["run"]
    assert "train" not in targets["run"]
    assert "bootstrap.sh train" in targets["model"] and ".venv-train/" in targets["model"]
    assert ".venv-test/bin/python -m pytest" in targets["test"]
    assert (PROJECT_ROOT / ".ci" / "run").read_text().strip().endswith("exec make test")


def test_scones_train_without_torch_points_at_the_training_environment() -> None:
    result = run_blocked(
        """
        from scones.cli.main import main
        sys.exit(main(["train", "--out", "/nonexistent/never-written"]))
        """
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "make model" in result.stderr and ".venv-train" in result.stderr


@pytest.mark.parametrize("layer", [".venv-train", ".venv-test"])
def test_a_layers_site_packages_include_the_layers_below(layer: str) -> None:
    """The offline stack's Lambda workers start with -S and take their libraries from
    site.getsitepackages(): in a layer that must list .venv's site-packages too."""
    python = PROJECT_ROOT / layer / "bin" / "python"
    if not python.exists():
        pytest.skip(f"{layer} is not built here")
    result = subprocess.run(
        [str(python), "-c", "import site; print('\\n'.join(site.getsitepackages()))"],
        capture_output=True,
        text=True,
        check=True,
    )
    dirs = [Path(line) for line in result.stdout.splitlines()]
    assert dirs[0].is_relative_to(PROJECT_ROOT / layer)
    assert any(d.is_relative_to(PROJECT_ROOT / ".venv") and d.name == "site-packages" for d in dirs)
    if layer == ".venv-test":
        assert any(d.is_relative_to(PROJECT_ROOT / ".venv-train") for d in dirs)


def test_the_layer_pins_everything_it_installs_as_the_run_lock_does() -> None:
    """The layer is built by pip from layers/shared/requirements.txt alone: each package
    it pulls in, directly or not, is pinned there at the version the tests ran with."""
    from importlib.metadata import requires
    from importlib.metadata import version as installed

    from packaging.requirements import Requirement

    layer: dict[str, str] = {}
    extras: dict[str, set[str]] = {}
    path = PROJECT_ROOT / "layers" / "shared" / "requirements.txt"
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            key = re.sub(r"[-_.]+", "-", requirement.name).lower()
            layer[key] = str(requirement.specifier).removeprefix("==")
            extras[key] = set(requirement.extras)
    run = pins("run.lock")
    assert {name: run[name] for name in layer} == layer
    # The closure, as the installed distributions declare it (for Linux, Python 3.13).
    environment = {"sys_platform": "linux", "platform_system": "Linux", "python_version": "3.13"}
    needed, todo = set(), [(name, extras[name]) for name in layer]
    while todo:
        name, wanted = todo.pop()
        if name in needed and not wanted:
            continue
        needed.add(name)
        assert installed(name) == run[name], name
        for text in requires(name) or []:
            requirement = Requirement(text)
            marker = requirement.marker
            if marker is None or any(
                marker.evaluate({**environment, "extra": extra}) for extra in wanted | {""}
            ):
                todo.append((re.sub(r"[-_.]+", "-", requirement.name).lower(), set()))
    assert needed - layer.keys() == set(), "pin these in layers/shared/requirements.txt"


def test_a_second_bootstrap_waits_for_the_first_instead_of_building_beside_it() -> None:
    """Two builds of one environment at once (`make run` beside `make test`, `make -j`)
    deleted each other's files and left a stamp on a broken venv: a bootstrap waits for
    the one that holds the checkout's lock, and says so."""
    import fcntl
    import subprocess
    import time

    with (PROJECT_ROOT / ".bootstrap.lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        waiting = subprocess.Popen(
            ["bash", "scripts/bootstrap.sh", "run"],
            cwd=PROJECT_ROOT,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(2)
        assert waiting.poll() is None, "it ran while another bootstrap held the lock"
    _, err = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, err
    assert "another bootstrap is building this checkout's environments; waiting for it" in err


def test_make_clean_refuses_while_a_stack_runs_and_cleans_once_it_stopped(tmp_path: Path) -> None:
    """`scones up` holds .scones/up.lock while it runs, and its functions' code lives in
    .scones: removed under it, every later upload would fail and `scones down` would no
    longer find it. The project's own Makefile, in a scratch folder."""
    import fcntl

    (tmp_path / "Makefile").write_bytes((PROJECT_ROOT / "Makefile").read_bytes())
    (tmp_path / ".scones").mkdir()
    lock = tmp_path / ".scones" / "up.lock"
    with lock.open("a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        refused = subprocess.run(
            ["make", "-s", "clean"], cwd=tmp_path, capture_output=True, text=True, check=False
        )
        assert refused.returncode != 0
        assert "an offline stack is running in this project" in refused.stderr
        assert "scones down" in refused.stderr and lock.exists()
    cleaned = subprocess.run(
        ["make", "-s", "clean"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert cleaned.returncode == 0, cleaned.stderr
    assert not (tmp_path / ".scones").exists()


def test_make_clean_without_flock_tells_a_running_stack_by_its_pid(tmp_path: Path) -> None:
    """macOS has no flock: the holder's pid in up.lock tells (a live one refuses; a lock
    left by a stack that is gone, or emptied by one that stopped, cleans)."""
    import os
    import shutil

    (tmp_path / "Makefile").write_bytes((PROJECT_ROOT / "Makefile").read_bytes())
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("sh", "cut", "rm", "echo", "cat", "make"):
        found = shutil.which(tool)
        assert found, tool
        (tools / tool).symlink_to(found)
    env = {"PATH": str(tools), "HOME": str(tmp_path)}
    lock = tmp_path / ".scones" / "up.lock"

    def clean(holder: str) -> subprocess.CompletedProcess[str]:
        lock.parent.mkdir(exist_ok=True)
        lock.write_text(holder)
        return subprocess.run(
            [str(tools / "make"), "-s", "clean"],
            cwd=tmp_path, env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip

    refused = clean(f"{os.getpid()} 12345\n")  # this process: alive
    assert refused.returncode != 0 and "an offline stack is running" in refused.stderr
    assert lock.exists()
    assert clean("").returncode == 0 and not lock.parent.exists()
