"""``scones bench imports``: each handler's cold import against ``import boto3`` alone.

Builds a throwaway virtual environment in a temporary folder with Python 3.13 (the Lambda
runtime) and only the layer's requirements (``layers/shared/requirements.txt``), then times
fresh interpreters importing each ``functions/<name>/app.py`` (with the function's
environment from the template) and, as the baseline, ``import boto3``. The interpreter's
own start-up (``python -c pass``) is subtracted from both.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from scones.template_params import PROJECT_ROOT, load_template, parameter_defaults

PYTHON313 = Path.home() / ".pyenv" / "versions" / "3.13.0" / "bin" / "python3.13"
HANDLERS = {
    "start_workflow": "StartWorkflowFunction",
    "serialize_image": "SerializeImageFunction",
    "classify_image": "ClassifyImageFunction",
    "backfill": "BackfillFunction",
}


def register(benchmarks: Any) -> None:
    parser = benchmarks.add_parser(
        "imports", help="cold import of each handler vs `import boto3` (Python 3.13, layer deps)"
    )
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--python", type=Path, default=PYTHON313)
    parser.add_argument("--keep", type=Path, help="build (or reuse) the venv here instead")
    parser.set_defaults(handler=_run)


def _environment(logical_id: str) -> dict[str, str]:
    params = parameter_defaults()
    template = load_template()
    env = {
        k: params[v["Ref"]] if isinstance(v, dict) and "Ref" in v else str(v)
        for k, v in template["Globals"]["Function"]["Environment"]["Variables"].items()
        if not isinstance(v, dict) or v.get("Ref") in params
    }
    props = template["Resources"][logical_id]["Properties"]
    for name, value in props.get("Environment", {}).get("Variables", {}).items():
        if isinstance(value, dict) and value.get("Ref") in params:
            env[name] = params[value["Ref"]]
        elif isinstance(value, dict):
            env[name] = "arn:aws:states:us-east-1:123456789012:stateMachine:x"
        else:
            env[name] = str(value)
    return env


def _time(python: Path, code: str, cwd: Path, env: dict[str, str], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run([str(python), "-c", code], cwd=cwd, env=env, check=True)
        times.append((time.perf_counter() - started) * 1000)
    return times


def _run(args: argparse.Namespace) -> int:
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
        layer = PROJECT_ROOT / "layers" / "shared"
        # Warm the bytecode caches once (Lambda ships .pyc files in a built layer too).
        rows = {}
        empty = _time(python, "pass", root, base_env, args.repeat)
        rows["python -c pass"] = statistics.median(empty)
        boto = _time(python, "import boto3", root, base_env, args.repeat)
        rows["import boto3"] = statistics.median(boto)
        for name, logical_id in HANDLERS.items():
            code_dir = PROJECT_ROOT / "functions" / name
            env = {**base_env, **_environment(logical_id), "PYTHONPATH": str(layer)}
            _time(python, "import app", code_dir, env, 1)
            rows[f"import {name}/app.py"] = statistics.median(
                _time(python, "import app", code_dir, env, args.repeat)
            )
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    baseline = rows["import boto3"] - rows["python -c pass"]
    print(f"Python {version}, layer requirements only; median of {args.repeat} fresh interpreters")
    print(f"{'what':<34}{'ms':>9}{'minus start-up':>16}{'vs boto3':>10}")
    for what, ms in rows.items():
        net = ms - rows["python -c pass"]
        ratio = f"{net / baseline:.2f}x" if what != "python -c pass" else ""
        print(f"{what:<34}{ms:>9.1f}{net:>16.1f}{ratio:>10}")
    return 0
