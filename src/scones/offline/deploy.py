"""Deploy the real ``template.yaml`` into a moto server.

The path is the one AWS takes: package the code (``sam package``), transform
with ``aws-sam-translator`` (the SAM transform), create the stack with
CloudFormation. moto's CloudFormation then reports ``CREATE_COMPLETE`` but
silently drops a known list of settings; ``gaps.GAPS`` lists each one and
``gaps.py`` fills them through the public APIs, resolving the template's
intrinsic functions through moto's own stack outputs. A resource type that
neither moto creates nor ``gaps.GAPS`` fills stops the deployment, because moto
would skip it without a word.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from samtranslator.model.exceptions import InvalidDocumentException
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator

from scones.offline import gaps
from scones.offline.client import offline_session
from scones.offline.packaging import package_template
from scones.template_params import (
    LOCAL_STACK_NAME,
    PROJECT_ROOT,
    ParameterError,
    load_template,
    resolve_parameters,
)

ARTIFACT_BUCKET = "scones-offline-artifacts"


class DeployError(RuntimeError):
    """The template cannot be deployed offline; the message says which part and why."""


@dataclass
class DeployedStack:
    """What the rest of the offline stack needs to know about the deployment."""

    stack_name: str
    region: str
    endpoint_url: str
    parameters: dict[str, str]
    outputs: dict[str, str]
    physical_ids: dict[str, str]
    cfn_template: dict[str, Any]
    filled: list[str] = field(default_factory=list)

    def physical_id(self, logical_id: str) -> str:
        try:
            return self.physical_ids[logical_id]
        except KeyError as exc:
            raise DeployError(f"stack {self.stack_name} has no resource {logical_id}") from exc


def transform(template: dict[str, Any], region: str) -> dict[str, Any]:
    """Run the SAM transform offline with the translator's bundled managed-policy map."""
    translator = Translator(
        managed_policy_map=None,
        sam_parser=Parser(),
        boto_session=offline_session(region),
    )
    try:
        return dict(translator.translate(copy.deepcopy(template), {}, get_managed_policy_map=None))
    except InvalidDocumentException as exc:
        causes = "; ".join(str(cause) for cause in exc.causes)
        raise DeployError(f"SAM transform failed: {causes}") from exc


def check_resource_types(cfn: dict[str, Any], active: set[str]) -> None:
    known = gaps.supported_resource_types()
    for logical_id, resource in cfn.get("Resources", {}).items():
        kind = resource.get("Type", "")
        if logical_id not in active:
            continue
        if kind in gaps.NOT_OFFLINE:
            raise DeployError(
                f"{logical_id} ({kind}) cannot run offline: keep its condition false "
                "(CreateEndpoint=false) for the offline stack"
            )
        if kind not in known:
            raise DeployError(
                f"{logical_id} has type {kind}, which moto's CloudFormation would skip "
                "silently; teach scones.offline.gaps to create it or leave it out"
            )


def active_resources(cfn: dict[str, Any], parameters: dict[str, str]) -> set[str]:
    """Logical ids whose Condition holds for these parameter values."""
    conditions = cfn.get("Conditions", {})

    def evaluate(expr: Any) -> Any:
        if isinstance(expr, dict) and len(expr) == 1:
            ((op, arg),) = expr.items()
            if op == "Ref":
                return parameters.get(arg, arg)
            if op == "Condition":
                return evaluate(conditions[arg])
            if op == "Fn::Equals":
                return str(evaluate(arg[0])) == str(evaluate(arg[1]))
            if op == "Fn::Not":
                return not evaluate(arg[0])
            if op == "Fn::And":
                return all(evaluate(a) for a in arg)
            if op == "Fn::Or":
                return any(evaluate(a) for a in arg)
        return expr

    active = set()
    for logical_id, resource in cfn.get("Resources", {}).items():
        condition = resource.get("Condition")
        if condition is None or evaluate(conditions[condition]):
            active.add(logical_id)
    return active


def effective_parameters(
    template: dict[str, Any], overrides: dict[str, str], *, check_rules: bool = True
) -> dict[str, str]:
    """Defaults plus overrides, checked as ``sam deploy`` checks them (every problem at once)."""
    try:
        return resolve_parameters(overrides, template, check_rules=check_rules)
    except ParameterError as exc:
        raise DeployError(str(exc)) from exc


def deploy(
    endpoint_url: str,
    *,
    stack_name: str = LOCAL_STACK_NAME,
    region: str = "us-east-1",
    overrides: dict[str, str] | None = None,
    template_path: Path | None = None,
    project_root: Path = PROJECT_ROOT,
    created: Callable[[DeployedStack], None] | None = None,
) -> DeployedStack:
    """Package, transform and create the stack, then fill moto's gaps. ``created`` is
    called with the stack once CloudFormation has created it (its outputs are known),
    before the gaps are filled: what the caller starts then runs while they are."""
    template = load_template(template_path) if template_path else load_template()
    parameters = effective_parameters(template, overrides or {})
    session = offline_session(region)
    s3 = session.client("s3", endpoint_url=endpoint_url)
    cfn_client = session.client("cloudformation", endpoint_url=endpoint_url)

    s3.create_bucket(Bucket=ARTIFACT_BUCKET)
    packaged, artifacts = package_template(template, project_root, ARTIFACT_BUCKET)
    for artifact in artifacts:
        s3.put_object(Bucket=ARTIFACT_BUCKET, Key=artifact.key, Body=artifact.data)
    definitions = gaps.package_state_machines(packaged, project_root, s3, ARTIFACT_BUCKET)

    cfn = transform(packaged, region)
    check_resource_types(cfn, active_resources(cfn, parameters))
    plan = gaps.plan(cfn, definitions)

    cfn_client.create_stack(
        StackName=stack_name,
        TemplateBody=json.dumps(plan.template),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"],
    )
    stack = _wait_for_stack(cfn_client, stack_name)
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    resources = cfn_client.list_stack_resources(StackName=stack_name)["StackResourceSummaries"]
    deployed = DeployedStack(
        stack_name=stack_name,
        region=region,
        endpoint_url=endpoint_url,
        parameters=parameters,
        outputs={k: v for k, v in outputs.items() if not k.startswith(gaps.OUTPUT_PREFIX)},
        physical_ids={r["LogicalResourceId"]: r["PhysicalResourceId"] for r in resources},
        cfn_template=cfn,
    )
    if created is not None:
        created(deployed)
    gaps.fill(plan, deployed, session, resolved=outputs)
    return deployed


def _wait_for_stack(cfn_client: Any, stack_name: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        stack = cfn_client.describe_stacks(StackName=stack_name)["Stacks"][0]
        status = stack["StackStatus"]
        if status == "CREATE_COMPLETE":
            return dict(stack)
        if (
            status.endswith("FAILED")
            or status.startswith("ROLLBACK")
            or time.monotonic() > deadline
        ):
            reason = stack.get("StackStatusReason", "")
            raise DeployError(f"stack {stack_name} ended in {status}: {reason}")
        time.sleep(0.05)
