"""The template and the ASL: linters, security scanners, and the checks they cannot do."""

from __future__ import annotations

import json
import os
import re
import subprocess
from typing import Any

import pytest
from scones_core.errors import rejection_error_names, transient_error_names
from scones_core.records import (
    PARTITION_KEY,
    RECORD_STATES,
    RECORDED_AT_ATTRIBUTE,
    STATUS_ATTRIBUTE,
    STATUS_INDEX_NAME,
    asl_item,
)

from scones.asl_check import check_definition, substitute
from scones.template_params import PROJECT_ROOT, load_template, parameter_defaults

TEMPLATE = PROJECT_ROOT / "template.yaml"
VENV_SAM = PROJECT_ROOT / ".venv-sam" / "bin" / "sam"
VENV_CHECKOV = PROJECT_ROOT / ".venv-checkov" / "bin" / "checkov"
TOOL_ENV = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1", "SAM_CLI_TELEMETRY": "0"}


def state_machines() -> dict[str, dict[str, Any]]:
    resources = load_template()["Resources"]
    return {
        name: r["Properties"]
        for name, r in resources.items()
        if r["Type"] == "AWS::Serverless::StateMachine"
    }


def sample_substitutions(properties: dict[str, Any]) -> dict[str, str]:
    """Stand-ins of the right kind for each substitution (numbers from parameter defaults)."""
    defaults = parameter_defaults()
    values = {}
    for name, value in properties["DefinitionSubstitutions"].items():
        if isinstance(value, dict) and "Ref" in value and value["Ref"] in defaults:
            values[name] = defaults[value["Ref"]]
        else:
            values[name] = f"arn:aws:example:us-east-1:123456789012:{name}"
    return values


def definition(properties: dict[str, Any]) -> dict[str, Any]:
    text = (PROJECT_ROOT / properties["DefinitionUri"]).read_text()
    return dict(json.loads(substitute(text, sample_substitutions(properties))))


@pytest.mark.parametrize("name", sorted(state_machines()))
def test_asl_parses_and_every_transition_resolves(name: str) -> None:
    properties = state_machines()[name]
    text = (PROJECT_ROOT / properties["DefinitionUri"]).read_text()
    assert check_definition(text, sample_substitutions(properties)) == []


def test_asl_check_catches_dangling_transitions_and_leftover_placeholders() -> None:
    broken = json.dumps(
        {
            "StartAt": "A",
            "States": {
                "A": {"Type": "Pass", "Next": "Missing"},
                "B": {"Type": "Task", "Resource": "${Unset}", "End": True},
                "C": {"Type": "Choice", "Choices": [], "Default": "Nowhere"},
            },
        }
    )
    problems = check_definition(broken, {"Extra": "x"})
    assert "placeholder ${Unset} has no substitution" in problems
    assert "substitution Extra is never used" in problems
    assert any("'Missing', which does not exist" in p for p in problems)
    assert any("'B' is unreachable" in p for p in problems)


def test_rejection_is_data_and_only_transient_errors_are_retried() -> None:
    asl = definition(state_machines()["ClassificationStateMachine"])
    states = asl["States"]
    assert asl["StartAt"] == "SerializeImage"
    assert states["SerializeImage"]["Next"] == "CheckImage"
    (choice,) = states["CheckImage"]["Choices"]
    assert choice == {"Variable": "$.image.rejection", "IsPresent": True, "Next": "RecordRejected"}
    assert states["CheckImage"]["Default"] == "ClassifyImage"
    serialize, classify = states["SerializeImage"], states["ClassifyImage"]
    rejections = set(rejection_error_names())
    for task in (serialize, classify):
        retried = {e for retry in task["Retry"] for e in retry["ErrorEquals"]}
        own_errors = {e for e in retried if not e.startswith("Lambda.")}
        assert own_errors <= set(transient_error_names()), own_errors
        assert all(retry["JitterStrategy"] == "FULL" for retry in task["Retry"])
        caught = {e for catch in task["Catch"] for e in catch["ErrorEquals"]}
        assert not caught & rejections, "bad input must come back as data, not as an error"
        # Our own errors carry a clean one-sentence message; anything else is described.
        first, last = task["Catch"]
        assert first["Next"] == "DescribeFailure" and set(first["ErrorEquals"]) <= set(
            error_class_names()
        )
        assert last == {
            "ErrorEquals": ["States.ALL"],
            "ResultPath": "$.error",
            "Next": "DescribeUnexpectedFailure",
        }


def error_class_names() -> list[str]:
    from scones_core import errors

    return [
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, errors.SconesError)
    ]


def test_every_record_state_writes_the_layout_records_py_defines() -> None:
    properties = state_machines()["ClassificationStateMachine"]
    asl = definition(properties)
    substitutions = sample_substitutions(properties)
    writers = {
        name: state
        for name, state in asl["States"].items()
        if state.get("Resource") == "arn:aws:states:::dynamodb:putItem"
    }
    assert set(writers) == set(RECORD_STATES)
    for name, layout in RECORD_STATES.items():
        expected = json.loads(substitute(json.dumps(asl_item(layout)), substitutions))
        parameters = writers[name]["Parameters"]
        assert parameters["Item"] == expected, name
        assert parameters["ConditionExpression"] == f"attribute_not_exists({PARTITION_KEY})"
    failed = dict(RECORD_STATES["RecordFailure"][-1].asl())
    assert failed == {"S.$": "$.failure.cause.errorMessage"}  # never the raw Cause


def test_failure_reasons_never_carry_the_raw_cause() -> None:
    asl = definition(state_machines()["ClassificationStateMachine"])
    text = json.dumps({k: v for k, v in asl["States"].items() if k != "NotifyDeadLetter"})
    assert '"$.error.Cause"' not in text
    describe = asl["States"]["DescribeUnexpectedFailure"]["Parameters"]
    assert "$.error.Cause" not in json.dumps(describe)


def test_the_status_index_is_the_one_records_py_names() -> None:
    table = load_template()["Resources"]["ResultsTable"]["Properties"]
    (index,) = table["GlobalSecondaryIndexes"]
    assert index["IndexName"] == STATUS_INDEX_NAME
    assert [k["AttributeName"] for k in index["KeySchema"]] == [
        STATUS_ATTRIBUTE,
        RECORDED_AT_ATTRIBUTE,
    ]
    assert [k["AttributeName"] for k in table["KeySchema"]] == [PARTITION_KEY]


def test_monitor_markers_live_in_their_own_table_with_ttl() -> None:
    resources = load_template()["Resources"]
    state = resources["MonitorStateTable"]["Properties"]
    assert state["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    env = resources["MonitorFunction"]["Properties"]["Environment"]["Variables"]
    assert env["MONITOR_STATE_TABLE_NAME"] == {"Ref": "MonitorStateTable"}
    statements = resources["MonitorFunction"]["Properties"]["Policies"][0]["Statement"]
    writes = [
        st
        for st in statements
        if isinstance(st, dict) and "dynamodb:PutItem" in st.get("Action", [])
    ]
    assert [st["Resource"] for st in writes] == [{"Fn::GetAtt": ["MonitorStateTable", "Arn"]}]


def test_threshold_and_retry_settings_come_from_parameters() -> None:
    properties = state_machines()["ClassificationStateMachine"]
    text = (PROJECT_ROOT / properties["DefinitionUri"]).read_text()
    assert "${ConfidenceThreshold}" in text and "0.93" not in text
    assert properties["DefinitionSubstitutions"]["ConfidenceThreshold"] == {
        "Ref": "ConfidenceThreshold"
    }
    asl = definition(properties)
    choice = asl["States"]["CheckConfidence"]["Choices"][0]
    assert choice["NumericGreaterThanEquals"] == float(parameter_defaults()["ConfidenceThreshold"])


def test_no_threshold_or_resource_name_literals_in_code() -> None:
    threshold = parameter_defaults()["ConfidenceThreshold"]
    endpoint = parameter_defaults()["EndpointName"]
    code = [
        *PROJECT_ROOT.joinpath("functions").rglob("*.py"),
        *PROJECT_ROOT.joinpath("layers").rglob("*.py"),
    ]
    for path in code:
        text = path.read_text()
        assert threshold not in text, f"{path} hard-codes the threshold"
        assert endpoint not in text, f"{path} hard-codes the endpoint name"
        assert not re.search(r"arn:aws:[a-z]+:[a-z0-9-]+:\d{12}:", text), f"{path} has an ARN"


def test_every_environment_variable_a_function_reads_is_set_by_the_template() -> None:
    resources = load_template()["Resources"]
    globals_env = set(load_template()["Globals"]["Function"]["Environment"]["Variables"])
    settings_source = "\n".join(
        p.read_text()
        for p in PROJECT_ROOT.joinpath("layers/shared/scones_core").rglob("settings.py")
    )
    read = set(re.findall(r'"([A-Z][A-Z0-9_]{2,})"', settings_source))
    provided = set(globals_env)
    for resource in resources.values():
        if resource["Type"] == "AWS::Serverless::Function":
            provided |= set(resource["Properties"].get("Environment", {}).get("Variables", {}))
    assert read - provided == set()


def test_wildcard_resources_only_where_aws_allows_no_other() -> None:
    allowed_actions = {
        "logs:CreateLogDelivery",
        "logs:GetLogDelivery",
        "logs:UpdateLogDelivery",
        "logs:DeleteLogDelivery",
        "logs:ListLogDeliveries",
        "logs:PutResourcePolicy",
        "logs:DescribeResourcePolicies",
        "logs:DescribeLogGroups",
        "ecr:GetAuthorizationToken",
        "sagemaker:ListMonitoringExecutions",
        "cloudwatch:PutMetricData",
    }

    def statements(node: Any) -> list[dict[str, Any]]:
        found = []
        if isinstance(node, dict):
            if "Effect" in node and "Action" in node:
                found.append(node)
            for value in node.values():
                found += statements(value)
        elif isinstance(node, list):
            for value in node:
                found += statements(value)
        return found

    for statement in statements(load_template()["Resources"]):
        if statement.get("Resource") == "*" and statement["Effect"] == "Allow":
            actions = (
                statement["Action"]
                if isinstance(statement["Action"], list)
                else [statement["Action"]]
            )
            assert set(actions) <= allowed_actions, actions


def run_tool(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=PROJECT_ROOT, env=TOOL_ENV, capture_output=True, text=True, timeout=300
    )


def test_cfn_lint_is_clean() -> None:
    result = run_tool([str(PROJECT_ROOT / ".venv" / "bin" / "cfn-lint"), str(TEMPLATE)])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_sam_validate_lint_is_clean() -> None:
    assert VENV_SAM.exists(), "run scripts/bootstrap.sh --tools to install aws-sam-cli"
    result = run_tool([str(VENV_SAM), "validate", "--lint", "--template", str(TEMPLATE)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is a valid SAM Template" in result.stdout + result.stderr


@pytest.mark.slow
def test_checkov_is_clean_and_every_skip_has_a_reason() -> None:
    assert VENV_CHECKOV.exists(), "run scripts/bootstrap.sh --tools to install checkov"
    result = run_tool(
        [
            str(VENV_CHECKOV),
            "--file",
            str(TEMPLATE),
            "--framework",
            "cloudformation",
            "--output",
            "json",
        ]
    )
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    failed = [c for r in reports for c in r["results"].get("failed_checks", [])]
    assert failed == [], [(c["check_id"], c["resource"]) for c in failed]
    passed = sum(len(r["results"].get("passed_checks", [])) for r in reports)
    assert passed > 20
    for resource in load_template()["Resources"].values():
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
            assert len(skip.get("comment", "")) > 20, skip


def test_optional_hosting_and_model_monitor_resources_follow_their_conditions() -> None:
    from scones.offline.deploy import active_resources, effective_parameters, transform
    from scones.offline.packaging import package_template

    template = load_template()
    packaged, _ = package_template(template, PROJECT_ROOT, "artifacts")
    for properties in [
        r["Properties"]
        for r in packaged["Resources"].values()
        if r["Type"] == "AWS::Serverless::StateMachine"
    ]:
        properties["DefinitionUri"] = "s3://artifacts/definition.asl.json"
    cfn = transform(packaged, "us-east-1")
    hosting = {"SageMakerModel", "SageMakerEndpointConfig", "SageMakerEndpoint"}
    monitor = {"DataQualityJobDefinition", "DataQualityMonitoringSchedule"}

    default = active_resources(cfn, effective_parameters(template, {}))
    assert not (hosting | monitor) & default

    endpoint_only = active_resources(
        cfn, effective_parameters(template, {"CreateEndpoint": "true"})
    )
    assert hosting <= endpoint_only and not monitor & endpoint_only

    both = active_resources(
        cfn,
        effective_parameters(template, {"CreateEndpoint": "true", "EnableModelMonitor": "true"}),
    )
    assert (hosting | monitor) <= both
    resources = template["Resources"]
    schedule = resources["DataQualityMonitoringSchedule"]["Properties"]
    env = resources["MonitorFunction"]["Properties"]["Environment"]["Variables"]
    assert schedule["MonitoringScheduleName"] == env["MONITORING_SCHEDULE_NAME"]["Fn::If"][1]
    capture = resources["SageMakerEndpointConfig"]["Properties"]["DataCaptureConfig"]
    assert capture["EnableCapture"] is True
    assert [o["CaptureMode"] for o in capture["CaptureOptions"]] == ["Input", "Output"]
