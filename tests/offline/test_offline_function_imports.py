"""Each deployed function imports only from its zip, its layer and the runtime, as on AWS.

The stack is started as ``scones up`` starts it: with a *relative* work folder. A probe
function is deployed beside each real one (the same zip plus one probe module, the same
layer and environment); it imports the real handler and reports where every loaded
module came from. Anything from outside the zip, the layer, the standard library and the
layer's declared third-party requirements (offline they come from site-packages) fails.
"""

from __future__ import annotations

import json
import re
import sysconfig
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from scones.offline.stack import OfflineStack, StackOptions
from scones.template_params import PROJECT_ROOT
from tests.offline.probe_function import deploy_probe

pytestmark = pytest.mark.xdist_group("offline-stack")

FUNCTIONS = (
    "StartWorkflowFunction",
    "SerializeImageFunction",
    "ClassifyImageFunction",
    "MonitorFunction",
)
# Imported when present, declared by no requirement.
OPTIONAL_IMPORTS = {"certifi": "botocore uses its CA bundle when it is installed"}
PROBE = """
import importlib, os, sys

def handler(event, context):
    importlib.import_module(event["module"])  # the real handler's cold start
    import scones_core
    return {
        "scones_core": scones_core.__file__,
        "sys_path": sys.path,
        "task_root": os.environ["LAMBDA_TASK_ROOT"],
        "modules": {
            name: getattr(module, "__file__", None)
            for name, module in list(sys.modules.items())
            if getattr(module, "__file__", None)
        },
    }
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OfflineStack]:
    where = tmp_path_factory.mktemp("relative")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(where)
        # As `scones up` has it: a work folder relative to the working directory.
        with OfflineStack(StackOptions(work_dir=Path(".scones/stack"))) as running:
            yield running


def _requirement_closure() -> set[str]:
    """Import names of the layer's declared requirements and everything they require."""
    lines = (PROJECT_ROOT / "layers/shared/requirements.txt").read_text().splitlines()
    todo = [
        re.split(r"[\[=<>;\s]", line.strip())[0] for line in lines if line.strip()[:1].isalpha()
    ]
    seen: set[str] = set()
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for requirement in requires:
            if "extra ==" in requirement and "tracer" not in requirement:
                continue
            todo.append(re.split(r"[\[=<>;!~\s(]", requirement.strip())[0])
    modules = {
        module
        for module, dists in metadata.packages_distributions().items()
        if any(d.lower().replace("_", "-") in seen for d in dists)
    }
    return modules | set(OPTIONAL_IMPORTS)


def _probe(stack: OfflineStack, logical_id: str) -> dict[str, Any]:
    lam = stack.client("lambda")
    config = lam.get_function(FunctionName=stack.function_name(logical_id))["Configuration"]
    name = deploy_probe(stack, logical_id, PROBE, f"probe-{logical_id}")
    module = config["Handler"].rpartition(".")[0]
    response = lam.invoke(FunctionName=name, Payload=json.dumps({"module": module}))
    payload = json.loads(response["Payload"].read())
    assert "FunctionError" not in response, payload
    return dict(payload)


@pytest.mark.parametrize("logical_id", FUNCTIONS)
def test_functions_import_only_from_their_zip_layer_and_runtime(
    stack: OfflineStack, logical_id: str
) -> None:
    report = _probe(stack, logical_id)
    assert all(Path(entry).is_absolute() for entry in report["sys_path"] if entry), report[
        "sys_path"
    ]
    work = stack.work_dir / "lambda"
    layers = [Path(p) for p in report["sys_path"] if Path(p).is_relative_to(work / "layers")]
    assert layers, f"{logical_id} runs without its layer: {report['sys_path']}"
    assert any(Path(report["scones_core"]).is_relative_to(layer) for layer in layers), (
        f"scones_core came from {report['scones_core']}, not the layer"
    )
    task_root = Path(report["task_root"])
    stdlib = [Path(sysconfig.get_paths()[k]) for k in ("stdlib", "platstdlib")]
    site = [Path(p) for p in report["sys_path"] if p.endswith("site-packages")]
    allowed_third_party = _requirement_closure()
    outside = {}
    for name, file in report["modules"].items():
        path = Path(file)
        if name == "__main__" or path.name == "lambda_worker.py":
            continue  # the runtime's bootstrap (Lambda's is /var/runtime/bootstrap.py)
        if path.is_relative_to(task_root) or any(path.is_relative_to(p) for p in layers):
            continue
        in_site = any(path.is_relative_to(p) for p in site)
        if in_site and name.split(".")[0] in allowed_third_party:
            continue
        if not in_site and any(path.is_relative_to(p) for p in stdlib):
            continue
        outside[name] = file
    assert not outside, f"{logical_id} imported from outside its zip and layer: {outside}"
