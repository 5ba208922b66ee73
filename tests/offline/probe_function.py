"""A probe function beside a deployed one on the offline stack: the same zip, layers and
environment, plus ``scones_probe.py`` (its handler), so a test runs code exactly where the
deployed function's code runs."""

from __future__ import annotations

import io
import zipfile

from moto.awslambda.models import lambda_backends

from scones.offline.stack import OfflineStack


def deploy_probe(stack: OfflineStack, logical_id: str, probe: str, name: str) -> str:
    """Create the function ``name`` running ``probe`` beside ``logical_id``; its name."""
    lam = stack.client("lambda")
    config = lam.get_function(FunctionName=stack.function_name(logical_id))["Configuration"]
    account = config["FunctionArn"].split(":")[4]
    deployed = lambda_backends[account][stack.stack.region].get_function(config["FunctionName"])
    buffer = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(deployed.code_bytes)) as original,
        zipfile.ZipFile(buffer, "w") as archive,
    ):
        for member in original.namelist():
            archive.writestr(member, original.read(member))
        archive.writestr("scones_probe.py", probe)
    lam.create_function(
        FunctionName=name,
        Runtime=config["Runtime"],
        Role=config["Role"],
        Handler="scones_probe.handler",
        Code={"ZipFile": buffer.getvalue()},
        Layers=[layer["Arn"] for layer in config.get("Layers", [])],
        Environment={
            # moto returns Number parameters as numbers here; AWS (and the API) have strings.
            "Variables": {
                k: str(v) for k, v in config.get("Environment", {}).get("Variables", {}).items()
            }
        },
        Timeout=60,
    )
    return name
