"""``scones bench imports``: each handler's cold import against ``import boto3`` alone.

Builds a throwaway virtual environment in a temporary folder with Python 3.13 (the Lambda
runtime) and only the layer's requirements (``layers/shared/requirements.txt``), then times
fresh interpreters importing each ``functions/<name>/app.py`` (with the function's
environment from the template) and, as the baseline, ``import boto3``. The interpreter's
own start-up (``python -c pass``) is subtracted from both. The ``no .pyc`` rows import
the same packages from a copy without bytecode, as a cold start runs them from a layer
built without it (Lambda mounts layers read-only, so nothing compiled is kept).

Each interpreter ends with ``os._exit`` right after its imports. Lambda's init phase ends
there too: it never runs the interpreter's shutdown, which on these modules costs 30-50 ms
of CPU more (finalising every module) and would be charged to the rows that import most.
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from scones.cli.arguments import check_writable_folder, file_or_folder, positive_int
from scones.cli.errors import CommandError, CommandFailed
from scones.template_params import PROJECT_ROOT, deployed_environment

# The Lambda runtime's Python, found as `make build` finds it (scripts/find_python.sh).
LAMBDA_PYTHON = "3.13"
FIND_PYTHON = PROJECT_ROOT / "scripts" / "find_python.sh"
HANDLERS = {
    "start_workflow": "StartWorkflowFunction",
    "serialize_image": "SerializeImageFunction",
    "classify_image": "ClassifyImageFunction",
    "backfill": "BackfillFunction",
    "monitor": "MonitorFunction",
    # Two functions, one package: the dataset step's environment.
    "retrain": "RetrainDatasetFunction",
}


def register(benchmarks: Any) -> None:
    parser = benchmarks.add_parser(
        "imports", help="cold import of each handler vs `import boto3` (Python 3.13, layer deps)"
    )
    parser.add_argument(
        "--repeat", type=positive_int, default=15, help="fresh interpreters per row"
    )
    parser.add_argument(
        "--python",
        type=file_or_folder,
        default=None,
        help=f"the interpreter to build the venv with (default: the Python {LAMBDA_PYTHON} "
        "scripts/find_python.sh finds, as make build does)",
    )
    parser.add_argument(
        "--keep", type=file_or_folder, help="build (or reuse) the venv here instead"
    )
    parser.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE", help="a template parameter"
    )
    parser.add_argument(
        "--compare",
        type=file_or_folder,
        metavar="DIR",
        help="another checkout (e.g. `git worktree add DIR main`): its handlers, with the same "
        "environments, as extra rows of the same run",
    )
    parser.set_defaults(handler=_run)


# What a Lambda init phase runs: the imports, then nothing (no interpreter shutdown).
_INIT_ONLY = "{code}\nimport os\nos._exit(0)"


def _once(python: Path, code: str, cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Wall time and CPU time (user + system) of one fresh interpreter, in ms."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    command = [str(python), "-c", _INIT_ONLY.format(code=code)]
    done = subprocess.run(command, cwd=cwd, env=env, check=False)
    wall = (time.perf_counter() - started) * 1000
    if done.returncode != 0:
        raise CommandFailed(f"{python} -c {code!r} in {cwd} exited with status {done.returncode}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1000
    return wall, cpu


def _rows(
    root: Path, base_env: dict[str, str], overrides: dict[str, str], compare: Path | None
) -> list[tuple[str, str, Path, dict[str, str]]]:
    """(label, code, folder, environment) of every row, the baseline first."""
    layer = PROJECT_ROOT / "layers" / "shared"
    rows = [
        ("python -c pass", "pass", root, base_env),
        ("import boto3", "import boto3", root, base_env),
        # What the serialize function cannot do without: it decodes every image.
        ("import boto3, PIL.Image", "import boto3, PIL.Image", root, base_env),
    ]
    for name, logical_id in HANDLERS.items():
        env = {**base_env, **deployed_environment(logical_id, overrides), "PYTHONPATH": str(layer)}
        rows.append((f"import {name}/app.py", "import app", PROJECT_ROOT / "functions" / name, env))
    # The same imports from sources only, as a layer built without bytecode runs them:
    # Lambda mounts layers read-only, so each cold start compiles every module again
    # (layers/shared/Makefile ships the .pyc files; `sam build`'s python builder did not).
    sources = _sources_only(root, layer)
    for name, logical_id in HANDLERS.items():
        folder = PROJECT_ROOT / "functions" / name
        env = {
            **base_env,
            **deployed_environment(logical_id, overrides),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        code = f"import sys\nsys.path[:0] = [{str(folder)!r}, {str(sources)!r}]\nimport app"
        rows.append((f"{name}/app.py, no .pyc", code, folder, env))
    if compare is not None:
        for name, logical_id in HANDLERS.items():
            env = {
                **base_env,
                **deployed_environment(logical_id, overrides),
                "PYTHONPATH": str(compare / "layers" / "shared"),
            }
            folder = compare / "functions" / name
            if folder.is_dir():
                rows.append((f"{compare.name}: {name}/app.py", "import app", folder, env))
    # What tracing costs when it is on (TracingMode=Active: Powertools' Tracer, X-Ray SDK).
    active = {**overrides, "TracingMode": "Active"}
    env = {
        **base_env,
        **deployed_environment("ClassifyImageFunction", active),
        "PYTHONPATH": str(layer),
    }
    rows.append(
        (
            "classify_image, TracingMode=Active",
            "import app",
            PROJECT_ROOT / "functions" / "classify_image",
            env,
        )
    )
    return rows


def _sources_only(root: Path, layer: Path) -> Path:
    """The venv's packages and the layer's code, without any bytecode cache."""
    sources = root / "sources-only"
    if not sources.is_dir():
        site_packages = next((root / "venv" / "lib").glob("python3.*/site-packages"))
        no_cache = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(site_packages, sources, ignore=no_cache)
        shutil.copytree(layer / "scones_core", sources / "scones_core", ignore=no_cache)
    return sources


def _check(args: argparse.Namespace) -> None:
    """Refuse what would fail only once the venv is built. The rows run in other folders,
    so the paths given are made absolute first."""
    if args.compare is not None:
        args.compare = args.compare.resolve()
        if not (args.compare / "layers" / "shared").is_dir():
            raise CommandError(f"--compare {args.compare}: no layers/shared there")
    if args.keep is not None:
        args.keep = args.keep.resolve()
        check_writable_folder(args.keep, "--keep", create=False)
        if (args.keep / "venv" / "bin" / "python").exists():
            return  # the kept venv is reused: --python is not run
    if args.python is None:
        args.python = _lambda_python()
    found = shutil.which(str(args.python))
    if found is None:
        raise CommandError(f"--python {args.python}: no such program; give a Python 3.13")
    args.python = Path(found)


def _lambda_python() -> Path:
    """The Python the functions run on, as ``scripts/find_python.sh`` finds it."""
    script = f"source {shlex.quote(str(FIND_PYTHON))} && find_python {LAMBDA_PYTHON}"
    found = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=False)
    if found.returncode != 0 or not found.stdout.strip():
        said = found.stderr.strip() or f"Python {LAMBDA_PYTHON} was not found"
        raise CommandError(f"{said}; give one with --python")
    return Path(found.stdout.strip())


def _run(args: argparse.Namespace) -> int:
    from scones.cli.stack_state import parse_params

    # Checked as `sam deploy` would check them; the measured stack's own defaults apply.
    overrides = parse_params(args.param, defaults={})
    _check(args)
    root = args.keep or Path(tempfile.mkdtemp(prefix="scones-imports-"))
    venv = root / "venv"
    python = venv / "bin" / "python"
    try:
        if not python.exists():
            subprocess.run([str(args.python), "-m", "venv", str(venv)], check=True)
            subprocess.run(
                [
                    str(python),
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    "-r",
                    str(PROJECT_ROOT / "layers" / "shared" / "requirements.txt"),
                ],
                check=True,
            )
        version = subprocess.run(
            [str(python), "-c", "import sys; print(sys.version.split()[0])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        base_env = {
            "PATH": os.environ.get("PATH", ""),
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        rows = _rows(root, base_env, overrides, args.compare)
        # One round first writes the bytecode caches (the built layer ships them too:
        # layers/shared/Makefile); then the rows take turns, round after round, so a
        # change in the machine's load falls on every row alike.
        for _label, code, cwd, env in rows:
            _once(python, code, cwd, env)
        walls: dict[str, list[float]] = {label: [] for label, *_ in rows}
        cpus: dict[str, list[float]] = {label: [] for label, *_ in rows}
        load_before = os.getloadavg()[0]
        for _ in range(args.repeat):
            for label, code, cwd, env in rows:
                wall, cpu = _once(python, code, cwd, env)
                walls[label].append(wall)
                cpus[label].append(cpu)
        load_after = os.getloadavg()[0]
    except subprocess.CalledProcessError as exc:
        raise CommandFailed(
            f"{shlex.join(map(str, exc.cmd))} exited with status {exc.returncode}"
        ) from exc
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(
        f"Python {version}, layer requirements only; median of {args.repeat} fresh "
        f"interpreters per row, rows interleaved; 1-minute load average {load_before:.1f} "
        f"before, {load_after:.1f} after"
    )
    print(
        "CPU ms (user + system) is what a cold start spends importing (each interpreter "
        "exits without shutdown, as Lambda's init does); wall ms also holds the waits of a "
        "loaded machine."
    )
    cpu_median = {label: statistics.median(values) for label, values in cpus.items()}
    wall_median = {label: statistics.median(values) for label, values in walls.items()}
    cpu_base = cpu_median["python -c pass"]
    wall_base = wall_median["python -c pass"]
    cpu_boto = cpu_median["import boto3"] - cpu_base
    wall_boto = wall_median["import boto3"] - wall_base
    print(
        f"{'what':<38}{'CPU ms':>8}{'- start-up':>12}{'vs boto3':>10}"
        f"{'wall ms':>10}{'- start-up':>12}{'vs boto3':>10}"
    )
    for label in cpus:
        cpu_net = cpu_median[label] - cpu_base
        wall_net = wall_median[label] - wall_base
        first = label == "python -c pass"
        print(
            f"{label:<38}{cpu_median[label]:>8.1f}{cpu_net:>12.1f}"
            f"{'' if first else f'{cpu_net / cpu_boto:.2f}x':>10}"
            f"{wall_median[label]:>10.1f}{wall_net:>12.1f}"
            f"{'' if first else f'{wall_net / wall_boto:.2f}x':>10}"
        )
    return 0
