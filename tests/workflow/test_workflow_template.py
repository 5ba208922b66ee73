"""The template and the ASL: linters, security scanners, and the checks they cannot do."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from scones_core.errors import (
    CLASSIFICATION_FAILED,
    IMAGES_UNRECORDED,
    rejection_error_names,
    transient_error_names,
)
from scones_core.ingest import EXPRESS_MAX_SECONDS, RUN_TIME_NEEDED_SECONDS, start_client_config
from scones_core.records import (
    PARTITION_KEY,
    RECORD_STATES,
    RECORDED_AT_ATTRIBUTE,
    STATUS_ATTRIBUTE,
    STATUS_INDEX_NAME,
    Status,
    asl_condition,
    asl_item,
)
from scones_core.settings import StartSettings
from scones_core.workflow_type import WORKFLOW_TYPES

from scones.asl_check import check_definition, per_image_scope, substitute
from scones.template_params import (
    PROJECT_ROOT,
    deployed_environment,
    function_environment,
    load_template,
    parameter_defaults,
)
from tests.workflow.iam_policy import (
    ACCOUNT,
    ALLOW,
    DENY,
    IMPLICIT_DENY,
    REGION,
    STACK,
    Request,
    Resolver,
    as_list,
    check_rules,
    decide,
    role_statements,
)

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
    from scones.template_params import setting_value

    defaults = parameter_defaults()
    values = {}
    for name, value in properties["DefinitionSubstitutions"].items():
        setting = setting_value(value, defaults)
        values[name] = (
            setting if setting is not None else f"arn:aws:example:us-east-1:123456789012:{name}"
        )
    return values


def definition(properties: dict[str, Any]) -> dict[str, Any]:
    text = (PROJECT_ROOT / properties["DefinitionUri"]).read_text()
    return dict(json.loads(substitute(text, sample_substitutions(properties))))


def image_flow() -> dict[str, Any]:
    """The classification workflow's per-image scope (the item processor of its Map)."""
    return per_image_scope(definition(state_machines()["ClassificationStateMachine"]))


@pytest.mark.parametrize("name", sorted(state_machines()))
def test_asl_parses_and_every_transition_resolves(name: str) -> None:
    properties = state_machines()[name]
    text = (PROJECT_ROOT / properties["DefinitionUri"]).read_text()
    assert check_definition(text, sample_substitutions(properties)) == []


def test_the_largest_retry_delays_the_template_allows_are_ones_step_functions_takes() -> None:
    """A delay past Step Functions' limit passes CloudFormation's parameter check and then
    fails the state machine's creation, partway through a deploy. Each parameter's MaxValue
    must parse in the retrier field the definitions substitute it into (moto's copy of
    Step Functions' grammar), and the values above it must not: IntervalSeconds goes to
    99999999; MaxDelaySeconds must be less than 31622401 (AWS's Retry documentation),
    where moto's grammar still takes 31622401 itself."""
    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser

    declared = load_template()["Parameters"]
    limits = {
        "RetryIntervalSeconds": ("IntervalSeconds", 99999999),
        "RetryMaxDelaySeconds": ("MaxDelaySeconds", 31622400),
    }

    def parse(field: str, seconds: int) -> None:
        retrier = {"ErrorEquals": ["States.ALL"], "BackoffRate": 2.0, field: seconds}
        task = {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke", "End": True}
        document = {"StartAt": "T", "States": {"T": {**task, "Retry": [retrier]}}}
        AmazonStateLanguageParser.parse(json.dumps(document))

    for parameter, (field, limit) in limits.items():
        assert int(declared[parameter]["MaxValue"]) == limit, parameter
        parse(field, limit)
        with pytest.raises(Exception, match=field):
            parse(field, 31622402 if field == "MaxDelaySeconds" else limit + 1)


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


def test_asl_check_catches_an_intrinsic_that_does_not_parse() -> None:
    """An apostrophe left unescaped in a States.Format string: the definition deploys, and
    the state fails with States.Runtime (no Catch takes it) when an image reaches it."""
    message = "States.Format('the machine{}s log: {{}}', $.a)"  # str.format's {} and {{}}
    document: dict[str, Any] = {
        "StartAt": "A",
        "States": {
            "A": {
                "Type": "Map",
                "ItemProcessor": {
                    "StartAt": "Describe",
                    "States": {
                        "Describe": {
                            "Type": "Pass",
                            "Parameters": {"good.$": message.format(""), "bad.$": "{bad}"},
                            "End": True,
                        }
                    },
                },
                "End": True,
            }
        },
    }
    describe = document["States"]["A"]["ItemProcessor"]["States"]["Describe"]
    describe["Parameters"]["bad.$"] = message.format("\\'")  # escaped, as ASL allows
    assert check_definition(json.dumps(document), {}) == []
    describe["Parameters"]["bad.$"] = message.format("'")
    [problem] = check_definition(json.dumps(document), {})
    assert problem.startswith("States.A.ItemProcessor.States.Describe.Parameters.bad.$: intrinsic")
    assert "does not parse" in problem


def test_asl_check_counts_the_arguments_of_every_states_format() -> None:
    """AWS takes a States.Format only with one argument per {} of its template; moto's
    interpreter formats with Python's str.format and drops the extra ones, so a record's
    reason that lost an argument ran offline as if nothing were wrong."""
    properties = state_machines()["ClassificationStateMachine"]
    document = definition(properties)
    flow = per_image_scope(document)["States"]
    message = flow["DescribeErrorAlone"]["Parameters"]["failure"]["cause"]
    written = message["errorMessage.$"]
    assert check_definition(json.dumps(document), {}) == []
    message["errorMessage.$"] = written.replace("Name)", "Name, $.attempt)")
    [extra] = check_definition(json.dumps(document), {})
    assert "DescribeErrorAlone" in extra and "has 2 {} but 3 argument(s)" in extra
    # Nested in another intrinsic, and an escaped brace is no placeholder.
    message["errorMessage.$"] = "States.Array(States.Format('\\{\\} {}', $.a, $.b))"
    [nested] = check_definition(json.dumps(document), {})
    assert "has 1 {} but 2 argument(s)" in nested
    message["errorMessage.$"] = "States.Format('{} of {}', $.a)"
    [fewer] = check_definition(json.dumps(document), {})
    assert "has 2 {} but 1 argument(s)" in fewer


def test_asl_check_takes_states_all_only_alone_in_the_last_retrier_or_catcher() -> None:
    """AWS refuses a definition whose States.ALL is not alone in the last retrier or
    catcher; moto's grammar checks only that it is alone, so a catcher moved after it
    (never reached) deployed offline and failed CloudFormation's create on AWS."""
    document = definition(state_machines()["ClassificationStateMachine"])
    serialize = per_image_scope(document)["States"]["SerializeImage"]
    serialize["Catch"].reverse()
    notify = per_image_scope(document)["States"]["NotifyDeadLetter"]
    notify["Retry"][0]["ErrorEquals"].append("States.Timeout")
    assert check_definition(json.dumps(document), {}) == [
        "state 'SerializeImage': Catch[0] names States.ALL but is not the last",
        "state 'NotifyDeadLetter': Retry[0] names States.ALL with others",
    ]


def test_asl_check_parses_a_fail_states_cause_path_intrinsic() -> None:
    """A Fail state's CausePath may be an intrinsic (the retraining definition's
    NotificationFailed states); one that does not parse fails the run when it is reached,
    so it is checked as a Parameters intrinsic is."""
    document = definition(state_machines()["RetrainingStateMachine"])
    fail = document["States"]["PromotedNotificationFailed"]
    assert fail["CausePath"].startswith("States.Format(")
    assert check_definition(json.dumps(document), {}) == []
    fail["CausePath"] = fail["CausePath"].replace("that outcome stands", "the outcome's standing")
    [problem] = check_definition(json.dumps(document), {})
    assert problem.startswith("States.PromotedNotificationFailed.CausePath: intrinsic")
    assert "does not parse" in problem


@pytest.mark.parametrize(
    ("resource", "selector", "problem"),
    [
        # A multi-container model has Containers and no PrimaryContainer.
        ("aws-sdk:sagemaker:describeModel", {"c.$": "$.PrimaryContainer"}, "optional"),
        # Inside an intrinsic, and a level down: InferenceSpecification is optional.
        (
            "aws-sdk:sagemaker:describeModelPackage",
            {"c.$": "States.ArrayGetItem($.InferenceSpecification.Containers, 0)"},
            "optional",
        ),
        ("aws-sdk:sagemaker:describeModel", {"c.$": "$.PrimaryContainers"}, "has no"),
        # A .sync job answers with its Describe*: FailureReason is there only on failure.
        ("sagemaker:createTrainingJob.sync", {"c.$": "$.FailureReason"}, "optional"),
        ("sagemaker:createTrainingJob.sync", {"c.$": "$.ModelArtifacts.S3ModelArtifacts"}, None),
        ("aws-sdk:sagemaker:describeModel", {"c.$": "$.ModelArn", "d.$": "$$.State.Name"}, None),
        # Optional in the model, named in every answer (OPTIONAL_BUT_ALWAYS_PRESENT).
        ("aws-sdk:sagemaker:describeEndpoint", {"c.$": "$.EndpointConfigName"}, None),
        ("aws-sdk:dynamodb:getItem", {"c.$": "$.Item"}, "optional"),
    ],
)
def test_asl_check_catches_a_result_selector_that_needs_an_optional_member(
    resource: str, selector: dict[str, str], problem: str | None
) -> None:
    """Selecting a member the API may leave out fails with States.Runtime when it is
    absent, which no Catch takes: the run ends with no record and no alert."""
    document = {
        "StartAt": "Find",
        "States": {
            "Find": {
                "Type": "Task",
                "Resource": f"arn:aws:states:::{resource}",
                "Parameters": {},
                "ResultSelector": selector,
                "End": True,
            }
        },
    }
    problems = check_definition(json.dumps(document), {})
    if problem is None:
        assert problems == []
    else:
        [found] = problems
        assert found.startswith("state 'Find': ResultSelector selects $.") and problem in found


def test_rejection_is_data_and_only_transient_errors_are_retried() -> None:
    asl = image_flow()
    states = asl["States"]
    assert asl["StartAt"] == "CheckAttempt"
    assert (
        states["CheckAttempt"]["Default"] == states["DefaultDelivery"]["Next"] == "SerializeImage"
    )
    assert states["SerializeImage"]["Next"] == "CheckImage"
    (choice,) = states["CheckImage"]["Choices"]
    assert choice == {"Variable": "$.image.rejection", "IsPresent": True, "Next": "RecordRejected"}
    assert states["CheckImage"]["Default"] == "ClassifyImage"
    serialize, classify = states["SerializeImage"], states["ClassifyImage"]
    rejections = set(rejection_error_names())
    for task in (serialize, classify):
        retried = {e for retry in task["Retry"] for e in retry["ErrorEquals"]}
        own_errors = {e for e in retried if not e.startswith("Lambda.")}
        # A function or task that timed out (a hung endpoint) is transient too.
        assert {"Sandbox.Timedout", "States.Timeout"} <= own_errors
        own_errors -= {"Sandbox.Timedout", "States.Timeout"}
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


@pytest.mark.parametrize(
    ("task", "permanent"),
    [
        ("SerializeImage", {"StorageRefused", "EventError"}),
        ("ClassifyImage", {"EndpointRejectedRequest", "ModelResponseInvalid", "EventError"}),
    ],
)
def test_permanent_errors_go_straight_to_a_failed_record(task: str, permanent: set[str]) -> None:
    """A 4xx that no retry can fix (NoSuchBucket, AccessDenied, a model error) is not retried."""
    state = image_flow()["States"][task]
    retried = {e for retry in state["Retry"] for e in retry["ErrorEquals"]}
    first = state["Catch"][0]
    assert permanent <= set(first["ErrorEquals"]) and first["Next"] == "DescribeFailure"
    assert not permanent & retried


def error_class_names() -> list[str]:
    from scones_core import errors

    return [
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, errors.SconesError)
    ]


def test_every_record_state_writes_the_layout_records_py_defines() -> None:
    properties = state_machines()["ClassificationStateMachine"]
    asl = image_flow()
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
        condition = {k: v for k, v in parameters.items() if k not in ("TableName", "Item")}
        assert condition == asl_condition(), name
        # Every name and value the expression uses is defined, and nothing else is.
        expression = condition["ConditionExpression"]
        assert set(re.findall(r"#\w+", expression)) == set(condition["ExpressionAttributeNames"])
        assert set(re.findall(r":\w+", expression)) == set(condition["ExpressionAttributeValues"])
        assert f"attribute_not_exists({PARTITION_KEY})" in expression
        assert condition["ExpressionAttributeValues"][":failed"] == {"S": Status.FAILED.value}
        # The writer's own attempt, from the execution input (as the Item's attempt).
        assert condition["ExpressionAttributeValues"][":attempt"] == parameters["Item"]["attempt"]
    failed = dict(RECORD_STATES["RecordFailure"][-1].asl())
    assert failed == {"S.$": "$.failure.cause.errorMessage"}  # never the raw Cause


def test_failure_reasons_never_parse_an_unexpected_cause_nor_carry_a_stack_trace() -> None:
    """An unexpected error's Cause may be cut at 32,768 characters: States.StringToJson on it
    would end the execution with States.Runtime (no Catch takes it), and the image would
    have no record. So it is written as text, or, when it holds a stack trace (a bug's
    payload), left to the log group. ``test_workflow_faults_e2e.py`` runs each kind."""
    states = image_flow()["States"]
    describe = states["DescribeUnexpectedFailure"]
    rules = describe["Choices"]
    assert {rule["Next"] for rule in rules} == {"DescribeErrorAlone"}
    assert rules[-1]["StringMatches"] == '*"stackTrace"*'
    assert describe["Default"] == "DescribeErrorWithCause"
    raw = re.compile(r"\$\.error\.Cause[,)]")
    writers = sorted(
        name
        for name, state in states.items()
        if name != "NotifyDeadLetter" and raw.search(json.dumps(state.get("Parameters", {})))
    )
    # DescribeFailure parses the Cause of the handlers' own errors (bounded messages).
    assert writers == ["DescribeErrorWithCause", "DescribeFailure"]
    assert "StringToJson" not in json.dumps(states["DescribeErrorWithCause"])


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
    choice = image_flow()["States"]["CheckConfidence"]["Choices"][0]
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
    # Lambda sets this one from the function's MemorySize (the offline runtime does too).
    provided = set(globals_env) | {"AWS_LAMBDA_FUNCTION_MEMORY_SIZE"}
    for resource in resources.values():
        if resource["Type"] == "AWS::Serverless::Function":
            provided |= set(resource["Properties"].get("Environment", {}).get("Variables", {}))
    assert read - provided == set()


def test_functions_that_read_objects_which_may_be_gone_may_list_the_bucket() -> None:
    """S3 answers a read of a missing key or version with 404 only to a caller that may list
    the bucket, otherwise with 403: a deleted upload would end FAILED instead of REJECTED
    ObjectNotFound, and the monitor
    would fail every run until the baseline exists. A read carries no s3:prefix, so the
    grant must hold without one."""
    cfn = transformed()
    resolve = resolver_for(cfn)
    bucket = f"arn:aws:s3:::{STACK}-{ACCOUNT}-{REGION}-images"
    for role in (
        "SerializeImageFunctionRole",
        "MonitorFunctionRole",
        "RetrainJudgeFunctionRole",  # a missing evaluation report, named as missing
    ):
        statements = role_statements(resolve, role)
        assert decide(statements, Request("s3:ListBucket", bucket, None, {})) == ALLOW, role
    # A read of a version that is gone: the serialize step names versions.
    listing = Request("s3:ListBucketVersions", bucket, None, {})
    assert decide(role_statements(resolve, "SerializeImageFunctionRole"), listing) == ALLOW
    # The backfill lists the versions of each incoming key, and reads nothing: a key deleted
    # since the item reader listed it lists as no version (or a delete marker), whatever
    # the object's own permissions.
    backfill = role_statements(resolve, "BackfillFunctionRole")
    incoming = resolve({"Ref": "IncomingPrefix"})
    for prefix, answer in ((f"{incoming}a.png", ALLOW), ("labelled/a.png", IMPLICIT_DENY)):
        request = Request("s3:ListBucketVersions", bucket, None, {"s3:prefix": prefix})
        assert decide(backfill, request) == answer, prefix
    assert decide(backfill, listing) == IMPLICIT_DENY
    for action in ("s3:GetObject", "s3:GetObjectVersion"):
        request = Request(action, f"{bucket}/{incoming}a.png", None, {})
        assert decide(backfill, request) == IMPLICIT_DENY, action


def test_reserved_concurrency_is_one_switch_and_preflight_knows_its_total() -> None:
    """Lambda keeps 100 of an account's concurrency unreserved, so the reservations need a
    quota of 100 + their total; ReserveFunctionConcurrency=false drops every one of them,
    for accounts with less. `make deploy` checks the quota against the same total."""
    from scones.deploy import reserved_concurrency

    cfn = transformed()

    def reservations(**overrides: str) -> dict[str, int]:
        resolve = resolver_for(cfn, **overrides)
        return {
            name: int(properties["ReservedConcurrentExecutions"])
            for name, resource in cfn["Resources"].items()
            if resource["Type"] == "AWS::Lambda::Function"
            and "ReservedConcurrentExecutions" in (properties := resolve(resource["Properties"]))
        }

    reserved = reservations()
    assert len(reserved) == 7 and all(n > 0 for n in reserved.values())
    assert reserved["ClassifyImageFunction"] == 50
    assert reservations(ReserveFunctionConcurrency="false") == {}
    assert reserved_concurrency({}) == sum(reserved.values())
    assert reserved_concurrency({"ReserveFunctionConcurrency": "false"}) == 0


def test_each_stack_names_its_own_monitor_schedule() -> None:
    """SAM's default name for a ScheduleV2 event is the same in every stack, and schedule
    names are unique per account, region and group."""
    schedule = transformed()["Resources"]["MonitorFunctionSchedule"]["Properties"]
    assert schedule["Name"] == {"Fn::Sub": "${AWS::StackName}-monitor"}


def test_state_machines_that_trace_may_write_to_x_ray() -> None:
    """SAM grants X-Ray only for a literal ``Enabled: true``; the classification and
    backfill machines trace when TracingMode=Active."""
    cfn = transformed()
    segment = Request("xray:PutTraceSegments", "*", None, {})
    for role in (
        "ClassificationStateMachineRole",
        "BackfillStateMachineRole",
        "RetrainingStateMachineRole",
    ):
        active = role_statements(resolver_for(cfn, TracingMode="Active"), role)
        assert decide(active, segment) == ALLOW, role
        passive = role_statements(resolver_for(cfn, TracingMode="PassThrough"), role)
        assert decide(passive, segment) == IMPLICIT_DENY, role


@pytest.mark.parametrize("tracing", ["Active", "PassThrough"])
def test_no_inline_policy_is_left_without_statements(tracing: str) -> None:
    """IAM refuses a policy with no statement (MalformedPolicyDocument), so a statement
    list holding only a condition's !If would fail the deploy when the condition is off."""
    cfn = transformed()
    resolve = resolver_for(cfn, TracingMode=tracing)
    for logical_id, resource in cfn["Resources"].items():
        if resource["Type"] != "AWS::IAM::Role":
            continue
        if "Condition" in resource and not resolve.condition(resource["Condition"]):
            continue
        role = resolve(resource["Properties"])
        for policy in role.get("Policies", []):
            statements = as_list(policy["PolicyDocument"]["Statement"])
            assert statements, (logical_id, policy["PolicyName"])


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
        "xray:PutTraceSegments",
        "xray:PutTelemetryRecords",
        "xray:GetSamplingRules",
        "xray:GetSamplingTargets",
    }

    def statements(node: Any) -> list[dict[str, Any]]:
        found = []
        if isinstance(node, dict):
            if "Effect" in node and "Action" in node:
                found.append(node)
            for name, value in node.items():
                if name != "KeyPolicy":  # in a key policy, Resource "*" is the key itself
                    found += statements(value)
        elif isinstance(node, list):
            for value in node:
                found += statements(value)
        return found

    # The statements SAM writes itself (policy templates, tracing, logging) are only in the
    # transformed template, so both are checked.
    for template in (load_template(), transformed()):
        for statement in statements(template["Resources"]):
            if "iam:PassRole" in as_list(statement["Action"]):
                assert "*" not in json.dumps(statement["Resource"]), statement
            # "*" and ["*"] grant the same thing.
            resources = as_list(statement.get("Resource", []))
            if "*" in resources and statement["Effect"] == "Allow":
                assert set(as_list(statement["Action"])) <= allowed_actions, statement


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


def with_optional_resources(path: Path) -> Path:
    """The template with CreateEndpoint and EnableModelMonitor defaulting to "true": checkov
    evaluates conditions with the defaults and silently skips what they leave out, which
    would leave the endpoint, its role and Model Monitor unscanned."""
    text = TEMPLATE.read_text()
    for name in ("CreateEndpoint", "EnableModelMonitor"):
        text, found = re.subn(
            rf'(\n  {name}:\n    Type: String\n    Default: )"false"', r'\1"true"', text
        )
        assert found == 1, name
    path.write_text(text)
    return path


@pytest.mark.slow
def test_checkov_is_clean_and_every_skip_has_a_reason(tmp_path: Path) -> None:
    assert VENV_CHECKOV.exists(), "run scripts/bootstrap.sh --tools to install checkov"
    # One run per template: given both, checkov keeps one copy of each logical id.
    reports: list[dict[str, Any]] = []
    for files in (
        [TEMPLATE, PROJECT_ROOT / "Dockerfile"],
        [with_optional_resources(tmp_path / "template-with-endpoint.yaml")],
    ):
        command = [str(VENV_CHECKOV)]
        for path in files:
            command += ["--file", str(path)]
        frameworks = ["cloudformation", "dockerfile"] if len(files) == 2 else ["cloudformation"]
        result = run_tool([*command, "--framework", *frameworks, "--output", "json"])
        report = json.loads(result.stdout)
        reports += report if isinstance(report, list) else [report]
    failed = [c for r in reports for c in r["results"].get("failed_checks", [])]
    assert failed == [], [(c["check_id"], c["resource"]) for c in failed]
    scanned = {
        c["resource"]
        for r in reports
        for kind in ("passed_checks", "skipped_checks")
        for c in r["results"].get(kind, [])
    }
    for resource in ("SageMakerModel", "SageMakerExecutionRole", "DataQualityJobDefinition"):
        assert any(name.endswith(f".{resource}") for name in scanned), resource
    passed = sum(len(r["results"].get("passed_checks", [])) for r in reports)
    assert passed > 20
    for resource in load_template()["Resources"].values():
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
            assert len(skip.get("comment", "")) > 20, skip
    dockerfile_skips = re.findall(
        r"checkov:skip=(\S+): (.*)", (PROJECT_ROOT / "Dockerfile").read_text()
    )
    assert dockerfile_skips and all(len(reason) > 20 for _, reason in dockerfile_skips)


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

    default = active_resources(cfn, effective_parameters(template, {}, check_rules=False))
    assert not (hosting | monitor) & default

    endpoint_only = active_resources(
        cfn, effective_parameters(template, {"CreateEndpoint": "true"}, check_rules=False)
    )
    assert hosting <= endpoint_only and not monitor & endpoint_only

    both = active_resources(
        cfn,
        effective_parameters(
            template,
            {"CreateEndpoint": "true", "EnableModelMonitor": "true"},
            check_rules=False,  # the conditions alone; the Rules are tested below
        ),
    )
    assert (hosting | monitor) <= both
    resources = template["Resources"]
    schedule = resources["DataQualityMonitoringSchedule"]["Properties"]
    env = resources["MonitorFunction"]["Properties"]["Environment"]["Variables"]
    assert schedule["MonitoringScheduleName"] == env["MONITORING_SCHEDULE_NAME"]["Fn::If"][1]
    capture = resources["SageMakerEndpointConfig"]["Properties"]["DataCaptureConfig"]
    assert capture["EnableCapture"] is True
    assert [o["CaptureMode"] for o in capture["CaptureOptions"]] == ["Input", "Output"]


# ---------------------------------------------------------------- security controls
# Proven on the TRANSFORMED template (what CloudFormation receives after the SAM transform),
# with tests/workflow/iam_policy.py evaluating the policy statements.


@functools.cache
def _transformed_json() -> str:
    from scones.offline.deploy import transform
    from scones.offline.packaging import package_template

    packaged, _ = package_template(load_template(), PROJECT_ROOT, "artifacts")
    for resource in packaged["Resources"].values():
        if resource["Type"] == "AWS::Serverless::StateMachine":
            resource["Properties"]["DefinitionUri"] = "s3://artifacts/definition.asl.json"
    return json.dumps(transform(packaged, "us-east-1"))


def transformed() -> dict[str, Any]:
    """A fresh copy of the transformed template (tests may change it)."""
    return dict(json.loads(_transformed_json()))


def resolver_for(cfn: dict[str, Any], **overrides: str) -> Resolver:
    from scones.offline.deploy import effective_parameters

    # The Rules are evaluated by the tests themselves (check_rules in iam_policy.py).
    return Resolver(cfn, effective_parameters(load_template(), overrides, check_rules=False))


def alarm_delivery_problems(cfn: dict[str, Any], account: str = ACCOUNT) -> dict[str, list[str]]:
    """For each alarm, why CloudWatch could not deliver it to its actions ([] when it can).

    An alarm in ``account`` publishes to an SNS topic: the topic must be encrypted with a
    customer managed key (rotated) whose key policy lets cloudwatch.amazonaws.com call
    kms:Decrypt and kms:GenerateDataKey for that alarm, and the topic policy must let
    cloudwatch.amazonaws.com call sns:Publish for that alarm.
    """
    resolve = resolver_for(cfn)
    resources = cfn["Resources"]
    problems: dict[str, list[str]] = {}
    for alarm_id, alarm in resources.items():
        if alarm["Type"] != "AWS::CloudWatch::Alarm":
            continue
        found = problems.setdefault(alarm_id, [])
        alarm_arn = f"arn:aws:cloudwatch:{REGION}:{account}:alarm:{STACK}-{alarm_id}-ABC123"
        context = {"aws:SourceAccount": account, "aws:SourceArn": alarm_arn}
        actions = alarm["Properties"].get("AlarmActions", [])
        if not actions:
            found.append("no AlarmActions")
        for action in actions:
            topic_id = action.get("Ref") if isinstance(action, dict) else None
            if topic_id not in resources or resources[topic_id]["Type"] != "AWS::SNS::Topic":
                found.append(f"action {action} is not a topic of this stack")
                continue
            topic_arn = resolve(action)
            key_ref = resources[topic_id]["Properties"].get("KmsMasterKeyId")
            key_id = None
            if isinstance(key_ref, dict):
                key_id = key_ref.get("Ref") or (key_ref.get("Fn::GetAtt") or [None])[0]
            if key_id not in resources or resources[key_id]["Type"] != "AWS::KMS::Key":
                found.append(f"{topic_id} is not encrypted with a key of this stack: {key_ref}")
            else:
                key = resolve(resources[key_id]["Properties"])
                if key.get("EnableKeyRotation") is not True:
                    found.append(f"{key_id} is not rotated")
                key_arn = resolve({"Fn::GetAtt": [key_id, "Arn"]})
                for kms_action in ("kms:Decrypt", "kms:GenerateDataKey"):
                    request = Request(
                        kms_action, key_arn, ("Service", "cloudwatch.amazonaws.com"), context
                    )
                    answer = decide(key["KeyPolicy"]["Statement"], request)
                    if answer != ALLOW:
                        found.append(f"{key_id} policy: {kms_action} is {answer}")
            topic_statements = [
                statement
                for policy in resources.values()
                if policy["Type"] == "AWS::SNS::TopicPolicy"
                and action in policy["Properties"]["Topics"]
                for statement in resolve(policy["Properties"]["PolicyDocument"])["Statement"]
            ]
            request = Request(
                "sns:Publish", topic_arn, ("Service", "cloudwatch.amazonaws.com"), context
            )
            answer = decide(topic_statements, request)
            if answer != ALLOW:
                found.append(f"{topic_id} topic policy: sns:Publish is {answer}")
    return problems


def test_every_alarm_can_publish_to_its_cmk_encrypted_topic() -> None:
    problems = alarm_delivery_problems(transformed())
    assert len(problems) >= 5
    assert all(found == [] for found in problems.values()), problems


def test_the_alarm_delivery_check_fails_where_aws_would_drop_the_alarm() -> None:
    # An alarm of another account is neither allowed to use the key nor to publish.
    foreign = alarm_delivery_problems(transformed(), account="999999999999")
    assert all(
        any("kms:GenerateDataKey is ImplicitDeny" in p for p in found)
        and any("sns:Publish is ImplicitDeny" in p for p in found)
        for found in foreign.values()
    ), foreign

    # The AWS managed key: nobody can add CloudWatch to its policy.
    managed = transformed()
    managed["Resources"]["AlertTopic"]["Properties"]["KmsMasterKeyId"] = "alias/aws/sns"
    assert all(
        any("not encrypted with a key of this stack" in p for p in found)
        for found in alarm_delivery_problems(managed).values()
    )

    # A key policy that names only kms:Decrypt, or a topic policy that is gone.
    narrow = transformed()
    key_statements = narrow["Resources"]["AlertTopicKey"]["Properties"]["KeyPolicy"]["Statement"]
    for statement in key_statements:
        if statement.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}:
            statement["Action"] = ["kms:Decrypt"]
    del narrow["Resources"]["AlertTopicPolicy"]
    for found in alarm_delivery_problems(narrow).values():
        assert "AlertTopicKey policy: kms:GenerateDataKey is ImplicitDeny" in found
        assert "AlertTopic topic policy: sns:Publish is ImplicitDeny" in found

    # An explicit Deny wins over the Allow.
    denied = transformed()
    key_statements = denied["Resources"]["AlertTopicKey"]["Properties"]["KeyPolicy"]["Statement"]
    key_statements.append({"Effect": "Deny", "Principal": "*", "Action": "kms:*", "Resource": "*"})
    for found in alarm_delivery_problems(denied).values():
        assert "AlertTopicKey policy: kms:Decrypt is Deny" in found


def test_policy_evaluator_understands_wildcards_and_conditions() -> None:
    statements = [
        {
            "Effect": "Allow",
            "Principal": {"Service": "cloudwatch.amazonaws.com"},
            "Action": ["kms:GenerateDataKey*"],
            "Resource": "arn:aws:kms:*:123456789012:key/*",
            "Condition": {"ArnLike": {"aws:SourceArn": "arn:aws:cloudwatch:*:*:alarm:*"}},
        }
    ]
    ok = {"aws:SourceArn": "arn:aws:cloudwatch:us-east-1:123456789012:alarm:a"}
    key = "arn:aws:kms:us-east-1:123456789012:key/k"
    cloudwatch = ("Service", "cloudwatch.amazonaws.com")
    assert decide(statements, Request("KMS:GenerateDataKeyPair", key, cloudwatch, ok)) == ALLOW
    assert decide(statements, Request("kms:Decrypt", key, cloudwatch, ok)) == IMPLICIT_DENY
    assert decide(statements, Request("kms:GenerateDataKey", key, cloudwatch, {})) == (
        IMPLICIT_DENY
    )
    events = ("Service", "events.amazonaws.com")
    assert decide(statements, Request("kms:GenerateDataKey", key, events, ok)) == IMPLICIT_DENY
    other_key = "arn:aws:kms:us-east-1:999999999999:key/k"
    assert decide(statements, Request("kms:GenerateDataKey", other_key, cloudwatch, ok)) == (
        IMPLICIT_DENY
    )
    with pytest.raises(ValueError, match="NumericLessThan"):
        decide(
            [{**statements[0], "Condition": {"NumericLessThan": {"x": "1"}}}],
            Request("kms:GenerateDataKey", key, cloudwatch, {"x": "0"}),
        )


def test_every_queue_the_topic_and_the_bucket_refuse_requests_without_tls() -> None:
    cfn = transformed()
    resolve = resolver_for(cfn)
    resources = cfn["Resources"]
    someone = ("AWS", f"arn:aws:iam::{ACCOUNT}:role/reader")

    def statements(policy_type: str, target_key: str, target: Any) -> list[dict[str, Any]]:
        return [
            statement
            for policy in resources.values()
            if policy["Type"] == policy_type and target in as_list(policy["Properties"][target_key])
            for statement in resolve(policy["Properties"]["PolicyDocument"])["Statement"]
        ]

    queues = [name for name, r in resources.items() if r["Type"] == "AWS::SQS::Queue"]
    assert set(queues) == {"IngestQueue", "DeadLetterQueue"}
    for queue in queues:
        policy = statements("AWS::SQS::QueuePolicy", "Queues", {"Ref": queue})
        arn = resolve({"Fn::GetAtt": [queue, "Arn"]})
        for action in ("sqs:ReceiveMessage", "sqs:SendMessage", "sqs:PurgeQueue"):
            plain = Request(action, arn, someone, {"aws:SecureTransport": "false"})
            tls = Request(action, arn, someone, {"aws:SecureTransport": "true"})
            assert decide(policy, plain) == DENY, (queue, action)
            assert decide(policy, tls) != DENY, (queue, action)

    topics = [name for name, r in resources.items() if r["Type"] == "AWS::SNS::Topic"]
    assert topics == ["AlertTopic"]
    policy = statements("AWS::SNS::TopicPolicy", "Topics", {"Ref": "AlertTopic"})
    topic_arn = resolve({"Ref": "AlertTopic"})
    for action in ("sns:Publish", "sns:Subscribe", "sns:SetTopicAttributes"):
        plain = Request(action, topic_arn, someone, {"aws:SecureTransport": "false"})
        tls = Request(action, topic_arn, someone, {"aws:SecureTransport": "true"})
        assert decide(policy, plain) == DENY, action
        assert decide(policy, tls) != DENY, action

    policy = statements("AWS::S3::BucketPolicy", "Bucket", {"Ref": "ImageBucket"})
    bucket_arn = resolve({"Fn::GetAtt": ["ImageBucket", "Arn"]})
    for action, resource in (
        ("s3:GetObject", f"{bucket_arn}/incoming/a.png"),
        ("s3:ListBucket", bucket_arn),
    ):
        assert (
            decide(policy, Request(action, resource, someone, {"aws:SecureTransport": "false"}))
            == DENY
        )
        assert (
            decide(policy, Request(action, resource, someone, {"aws:SecureTransport": "true"}))
            != DENY
        )


def test_the_records_outlive_the_stack() -> None:
    """Deleting the stack, or an update that replaces the table, must not delete every
    upload's record; the bucket's own name keeps a non-empty bucket from being deleted.
    A first deploy that rolls back deletes its empty table, or each failed try would leave
    one behind."""
    resources = load_template()["Resources"]
    table = resources["ResultsTable"]
    assert (table["DeletionPolicy"], table["UpdateReplacePolicy"]) == (
        "RetainExceptOnCreate",
        "Retain",
    )
    assert "TableName" not in table["Properties"]  # a redeploy makes its own, no clash


def test_bucket_blocks_public_access_and_everything_at_rest_is_encrypted() -> None:
    resources = transformed()["Resources"]
    bucket = resources["ImageBucket"]["Properties"]
    assert set(bucket["PublicAccessBlockConfiguration"].values()) == {True}
    assert bucket["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    [rule] = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    # Without the bucket key every PUT and GET would call KMS ($6 per million images).
    assert rule["BucketKeyEnabled"] is True
    for name, resource in resources.items():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::SQS::Queue":
            assert props.get("SqsManagedSseEnabled") is True or "KmsMasterKeyId" in props, name
        if resource["Type"] == "AWS::SNS::Topic":
            # A customer managed key of this stack (CloudWatch cannot use alias/aws/sns).
            key = props["KmsMasterKeyId"]
            logical_id = key.get("Ref") or key.get("Fn::GetAtt", [None])[0]
            assert resources[logical_id]["Type"] == "AWS::KMS::Key", (name, key)
            assert resources[logical_id]["Properties"]["EnableKeyRotation"] is True, name
        if resource["Type"] == "AWS::DynamoDB::Table":
            assert props["SSESpecification"]["SSEEnabled"] is True, name


def test_upload_retention_deletes_the_data_not_only_the_current_version() -> None:
    """The bucket is versioned: an Expiration alone adds a delete marker and the bytes stay
    for the bucket-wide 90 noncurrent days. With UploadRetentionDays the uploads' own rule
    removes the noncurrent version a day later, so storage is paid for N + 1 days."""
    cfn = transformed()
    for days, status in (("7", "Enabled"), ("0", "Disabled")):
        resolve = resolver_for(cfn, UploadRetentionDays=days)
        rules = resolve(cfn["Resources"]["ImageBucket"]["Properties"])["LifecycleConfiguration"][
            "Rules"
        ]
        [uploads] = [rule for rule in rules if rule["Id"] == "expire-processed-uploads"]
        assert uploads["Status"] == status
        assert uploads["Prefix"] == resolve({"Ref": "IncomingPrefix"})
        assert uploads["NoncurrentVersionExpiration"] == {"NoncurrentDays": 1}
        if days != "0":
            assert int(uploads["ExpirationInDays"]) == 7
    assert "(+1 d noncurrent)" in estimate_basis(UploadRetentionDays="7")


@pytest.mark.parametrize("retention", ["0", "7"])
def test_abandoned_multipart_uploads_are_aborted_anywhere_in_the_bucket(retention: str) -> None:
    """An upload that never completes leaves parts that no expiration rule reaches (they are
    no object) and S3 bills them as storage until they are aborted. SDKs upload a photo over
    8 MiB in parts, and MaxImageBytes admits 16 MiB."""
    cfn = transformed()
    resolve = resolver_for(cfn, UploadRetentionDays=retention)
    rules = resolve(cfn["Resources"]["ImageBucket"]["Properties"])["LifecycleConfiguration"][
        "Rules"
    ]
    aborting = [
        rule
        for rule in rules
        if rule["Status"] == "Enabled"
        and "AbortIncompleteMultipartUpload" in rule
        # The whole bucket: uploads, training data and SageMaker's own outputs alike.
        and not rule.get("Prefix")
        and not rule.get("Filter")
        and not rule.get("TagFilters")
    ]
    assert len(aborting) == 1, rules
    days = int(aborting[0]["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"])
    # Long enough for an app that resumes an upload after a weekend offline, no longer.
    assert 1 <= days <= 7


def test_only_superseded_versions_of_the_review_manifests_expire() -> None:
    """Each answer rewrites its day's manifest: the current version holds every line and
    stays; the earlier ones (copies of fewer lines) go a day after they are replaced."""
    from scones_core.review import MANIFEST_STEM, ReviewSettings

    cfn = transformed()
    resolve = resolver_for(cfn)
    rules = resolve(cfn["Resources"]["ImageBucket"]["Properties"])["LifecycleConfiguration"][
        "Rules"
    ]
    [manifests] = [rule for rule in rules if rule["Id"] == "expire-superseded-review-manifests"]
    labelled = resolve({"Ref": "LabelledDataPrefix"})
    assert manifests["Prefix"] == labelled + MANIFEST_STEM
    assert manifests["Status"] == "Enabled"
    assert manifests["NoncurrentVersionExpiration"] == {"NoncurrentDays": 1}
    assert "ExpirationInDays" not in manifests and "ExpirationDate" not in manifests
    settings = ReviewSettings("b", "t", ("bicycle", "motorcycle"), labelled)
    key = settings.manifest_key("2026-12-01T10:00:00.000Z")
    assert key.startswith(manifests["Prefix"]), key


def test_delete_markers_left_without_versions_are_removed_across_the_bucket() -> None:
    """S3 removes a delete marker whose versions have all expired only where a rule sets
    ExpiredObjectDeleteMarker: the rule over the whole bucket that expires old versions.
    S3 refuses the flag beside a current-version expiration in one rule, and
    CloudFormation a rule that expires nothing at all."""
    cfn = transformed()
    rules = resolver_for(cfn)(cfn["Resources"]["ImageBucket"]["Properties"])[
        "LifecycleConfiguration"
    ]["Rules"]
    [markers] = [rule for rule in rules if rule.get("ExpiredObjectDeleteMarker")]
    assert markers["Status"] == "Enabled"
    assert not {"Prefix", "Filter", "ExpirationInDays", "ExpirationDate"} & markers.keys()
    assert markers["NoncurrentVersionExpiration"]["NoncurrentDays"] > 0


def test_capture_retention_deletes_captured_traffic_only_under_the_capture_prefix() -> None:
    """Captured requests are the uploads' images again (base64): CaptureRetentionDays expires
    them (and, the bucket being versioned, their data a day later) under the capture
    prefix's own folder only, so a sibling such as ``datacapture-old/`` is not touched."""
    from scones.costs.model import estimate

    cfn = transformed()
    for days, status in (("9", "Enabled"), ("0", "Disabled")):
        resolve = resolver_for(cfn, CaptureRetentionDays=days)
        rules = resolve(cfn["Resources"]["ImageBucket"]["Properties"])["LifecycleConfiguration"][
            "Rules"
        ]
        [capture] = [rule for rule in rules if rule["Id"] == "expire-captured-traffic"]
        assert capture["Status"] == status
        assert capture["Prefix"] == resolve({"Ref": "DataCapturePrefix"}) + "/"
        assert capture["NoncurrentVersionExpiration"] == {"NoncurrentDays": 1}
        if days != "0":
            assert int(capture["ExpirationInDays"]) == 9
    measured = json.loads((PROJECT_ROOT / "docs" / "cost-measurements.json").read_text())

    def capture_line(**params: str) -> Any:
        lines = estimate(measured, endpoint="realtime", overrides=params).lines
        return next(line for line in lines if line.item.startswith("Data capture"))

    forever, nine_days = capture_line(), capture_line(CaptureRetentionDays="9")
    assert "forever (CaptureRetentionDays=0)" in forever.basis
    assert "kept 9 d (+1 d noncurrent)" in nine_days.basis
    assert nine_days.usd == pytest.approx(forever.usd * 10 / 30)


@pytest.mark.parametrize("prefix", ["datacapture/", "/datacapture", "data//capture", ""])
def test_a_capture_prefix_the_grants_and_rules_would_double_slash_is_refused(prefix: str) -> None:
    from scones.template_params import ParameterError, resolve_parameters

    for name in ("DataCapturePrefix", "MonitoringReportsPrefix"):
        with pytest.raises(ParameterError, match=name):
            resolve_parameters({name: prefix})


def estimate_basis(**params: str) -> str:
    """The cost model's storage line for these parameters (it states the noncurrent day)."""
    from scones.costs.model import estimate

    measured = json.loads((PROJECT_ROOT / "docs" / "cost-measurements.json").read_text())
    lines = estimate(measured, overrides=params).lines
    return next(line.basis for line in lines if line.item.startswith("S3 storage"))


def test_pass_role_is_limited_to_the_retraining_role_and_sagemaker() -> None:
    cfn = transformed()
    role = "arn:aws:iam::123456789012:role/scones-retraining"
    sagemaker = {"iam:PassedToService": "sagemaker.amazonaws.com"}

    def answer(resource: str, context: dict[str, str], **overrides: str) -> str:
        statements = role_statements(resolver_for(cfn, **overrides), "MonitorFunctionRole")
        return decide(statements, Request("iam:PassRole", resource, None, context))

    job = {"RetrainingJobConfigS3Uri": "s3://bucket/retrain/job.json"}
    assert answer(role, sagemaker, **job, RetrainingRoleArn=role) == ALLOW
    other = "arn:aws:iam::123456789012:role/admin"
    assert answer(other, sagemaker, **job, RetrainingRoleArn=role) == IMPLICIT_DENY
    glue = {"iam:PassedToService": "glue.amazonaws.com"}
    assert answer(role, glue, **job, RetrainingRoleArn=role) == IMPLICIT_DENY
    # No job config, no PassRole at all, even with a role named.
    assert answer(role, sagemaker, RetrainingRoleArn=role) == IMPLICIT_DENY
    assert answer(role, sagemaker) == IMPLICIT_DENY

    # A job config without the role is refused before anything is created.
    assert check_rules(cfn, effective_values(**job)) == [
        "RetrainingJobConfigS3Uri needs RetrainingRoleArn, the one role the monitor may pass "
        "to SageMaker (the job config's RoleArn)."
    ]
    assert check_rules(cfn, effective_values(**job, RetrainingRoleArn=role)) == []
    assert check_rules(cfn, effective_values()) == []


def test_the_monitor_may_create_the_training_job_it_names() -> None:
    """The job is named after the run, whatever name the configured request carries, so
    the monitor's grant matches it even for the longest endpoint name; a request with
    Tags needs AddTags on the job as well."""
    from scones_core.monitoring.retraining import training_job_name

    cfn = transformed()
    endpoint = "e" * 40  # EndpointName's MaxLength
    job = {"RetrainingJobConfigS3Uri": "s3://bucket/retrain/job.json", "EndpointName": endpoint}
    statements = role_statements(
        resolver_for(cfn, **job, RetrainingRoleArn="arn:aws:iam::123456789012:role/r"),
        "MonitorFunctionRole",
    )
    name = training_job_name(endpoint, datetime(2026, 12, 31, 23, 59, tzinfo=UTC))
    arn = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/{name}"
    for action in ("sagemaker:CreateTrainingJob", "sagemaker:AddTags"):
        assert decide(statements, Request(action, arn)) == ALLOW, (action, name)
    other = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/someone-elses-job"
    assert decide(statements, Request("sagemaker:CreateTrainingJob", other)) == IMPLICIT_DENY
    # Whether a start it claimed but never recorded was made (monitoring.retraining).
    assert decide(statements, Request("sagemaker:DescribeTrainingJob", arn)) == ALLOW
    assert decide(statements, Request("sagemaker:DescribeTrainingJob", other)) == IMPLICIT_DENY


@pytest.mark.parametrize("external", [False, True])
def test_the_monitor_may_describe_its_retraining_executions_and_no_others(external: bool) -> None:
    """A claim whose start was never recorded is looked up by its execution's ARN,
    ``execution_arn_of`` the retraining state machine, the stack's or the one named."""
    from scones_core.monitoring.retraining import execution_arn_of, run_name

    machine = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:their-retraining"
    cfn = transformed()
    resolve = resolver_for(cfn, **({"RetrainingStateMachineArn": machine} if external else {}))
    if not external:
        machine = resolve({"Ref": "RetrainingStateMachine"})
    statements = role_statements(resolve, "MonitorFunctionRole")
    name = run_name("scones-bicycle-motorcycle", datetime(2026, 12, 31, 23, 59, tzinfo=UTC))
    execution = execution_arn_of(machine, name)
    assert decide(statements, Request("states:DescribeExecution", execution)) == ALLOW
    elsewhere = execution_arn_of(machine.replace(machine.rsplit(":", 1)[1], "other"), name)
    assert decide(statements, Request("states:DescribeExecution", elsewhere)) == IMPLICIT_DENY


@pytest.mark.parametrize("create_endpoint", ["true", "false"])
def test_the_gate_may_read_the_production_model_where_model_data_url_points(
    create_endpoint: str,
) -> None:
    """The gate's evaluation job reads the production model as an S3 prefix (list, then
    get) with the retraining role. Until the first promotion that model is wherever it
    was trained, outside the stack's bucket."""
    cfn = transformed()
    url = "s3://my-model-artifacts/scones/model.tar.gz"
    statements = role_statements(
        resolver_for(cfn, CreateEndpoint=create_endpoint, ModelDataUrl=url),
        "RetrainingSageMakerRole",
    )
    obj = "arn:aws:s3:::my-model-artifacts/scones/model.tar.gz"
    bucket = "arn:aws:s3:::my-model-artifacts"
    assert decide(statements, Request("s3:GetObject", obj)) == ALLOW
    listing = {"s3:prefix": "scones/model.tar.gz"}
    assert decide(statements, Request("s3:ListBucket", bucket, None, listing)) == ALLOW
    elsewhere = "arn:aws:s3:::my-model-artifacts/secrets/keys.json"
    assert decide(statements, Request("s3:GetObject", elsewhere)) == IMPLICIT_DENY
    other_bucket = "arn:aws:s3:::someone-elses-bucket"
    assert decide(statements, Request("s3:ListBucket", other_bucket, None, {})) == IMPLICIT_DENY
    # Without ModelDataUrl only the stack's own bucket is readable.
    plain = role_statements(resolver_for(cfn), "RetrainingSageMakerRole")
    assert decide(plain, Request("s3:GetObject", obj)) == IMPLICIT_DENY


def test_retraining_writes_only_its_runs_folders_never_the_gates_code() -> None:
    """The gate's evaluation job runs the bundle at SourceBundleUri, which lies under
    RetrainingPrefix too: a training job (or a package it installs) that could rewrite
    it would judge its own candidate. Each run writes under its RunNames folder only."""
    from scones_core.retraining.dataset import RunNames

    cfn = transformed()
    resolve = resolver_for(cfn)
    bucket = f"arn:aws:s3:::{STACK}-{ACCOUNT}-{REGION}-images"
    prefix = resolve.parameters["RetrainingPrefix"]
    endpoint = resolve.parameters["EndpointName"]
    run = RunNames.for_run(endpoint, datetime(2026, 12, 5, tzinfo=UTC), "r1")
    bundle = cfn["Resources"]["RetrainingStateMachine"]["Properties"]["DefinitionSubstitutions"][
        "SourceBundleUri"
    ]
    bundle_key = resolve.evaluate(bundle).split("/", 3)[3]
    assert bundle_key.startswith(prefix)
    for role in ("RetrainingSageMakerRole", "RetrainDatasetFunctionRole"):
        statements = role_statements(resolve, role)
        for key in (f"{run.base}/dataset/train.manifest", f"{run.base}/training/model.tar.gz"):
            own = Request("s3:PutObject", f"{bucket}/{prefix}{key}")
            assert decide(statements, own) == ALLOW, (role, key)
        for key in (bundle_key, f"{prefix}other-endpoint-rt-1/x", "models/bicycle/model.tar.gz"):
            other = Request("s3:PutObject", f"{bucket}/{key}")
            assert decide(statements, other) == IMPLICIT_DENY, (role, key)
    # Nor may the retraining role read a folder that no parameter names.
    statements = role_statements(resolve, "RetrainingSageMakerRole")
    unnamed = Request("s3:GetObject", f"{bucket}/models/bicycle-motorcycle/model.tar.gz")
    assert decide(statements, unnamed) == IMPLICIT_DENY


# The stack creates the endpoint: the parameters that needs.
WITH_ENDPOINT = {
    "CreateEndpoint": "true",
    "ModelDataUrl": "s3://artifacts/model.tar.gz",
    "ModelImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/serve:1",
}

WITH_MONITOR = {
    **WITH_ENDPOINT,
    "EnableModelMonitor": "true",
    "ModelMonitorImageUri": "156813124566.dkr.ecr.us-east-1.amazonaws.com/analyzer",
}


def test_without_model_monitor_the_serving_role_only_writes_its_captures() -> None:
    """The Model Monitor job runs with the endpoint's role; without EnableModelMonitor there
    is no job, and the serving container (not network-isolated) gets none of its grants: it
    may not read the captured traffic (every input the endpoint saw), list the bucket's
    keys, write reports or publish metrics."""
    cfn = transformed()
    bucket = f"arn:aws:s3:::{STACK}-{ACCOUNT}-{REGION}-images"
    for overrides, monitor in ((WITH_ENDPOINT, False), (WITH_MONITOR, True)):
        resolve = resolver_for(cfn, **overrides)
        statements = role_statements(resolve, "SageMakerExecutionRole")
        capture = f"{bucket}/{resolve.parameters['DataCapturePrefix']}/scones/AllTraffic/x.jsonl"
        report = f"{bucket}/{resolve.parameters['MonitoringReportsPrefix']}/x/statistics.json"
        assert decide(statements, Request("s3:PutObject", capture)) == ALLOW
        model = "arn:aws:s3:::artifacts/model.tar.gz"
        assert decide(statements, Request("s3:GetObject", model)) == ALLOW
        for request in (
            Request("s3:GetObject", capture),
            Request("s3:PutObject", report),
            Request("s3:ListBucket", bucket),
            Request(
                "cloudwatch:PutMetricData",
                "*",
                context={"cloudwatch:namespace": "/aws/sagemaker/Endpoints/data-metrics"},
            ),
        ):
            assert (decide(statements, request) == ALLOW) is monitor, (request, monitor)


def test_the_endpoints_role_reads_only_the_prefixes_its_parameters_name() -> None:
    """Model Monitor writes its reports where MonitoringReportsPrefix points and reads the
    capture; a fixed ``monitoring/`` or ``models/`` folder would let it read whatever an
    operator keeps there (uploads, if IncomingPrefix were one of them)."""
    cfn = transformed()
    resolve = resolver_for(cfn, **WITH_MONITOR, MonitoringReportsPrefix="mm/reports")
    statements = role_statements(resolve, "SageMakerExecutionRole")
    bucket = f"arn:aws:s3:::{STACK}-{ACCOUNT}-{REGION}-images"
    capture = f"{bucket}/{resolve.parameters['DataCapturePrefix']}/scones/AllTraffic/x.jsonl"
    assert decide(statements, Request("s3:GetObject", capture)) == ALLOW
    report = f"{bucket}/mm/reports/x/constraint_violations.json"
    assert decide(statements, Request("s3:PutObject", report)) == ALLOW
    assert decide(statements, Request("s3:GetObject", "arn:aws:s3:::artifacts/model.tar.gz")) == (
        ALLOW
    )
    for key in ("monitoring/anything.json", "models/upload.jpg", "incoming/photo.jpg"):
        assert decide(statements, Request("s3:GetObject", f"{bucket}/{key}")) == IMPLICIT_DENY
    # Only SageMaker of this account may take the role (the confused deputy).
    [trust] = cfn["Resources"]["SageMakerExecutionRole"]["Properties"]["AssumeRolePolicyDocument"][
        "Statement"
    ]
    assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}


def test_model_monitor_may_read_its_baseline_where_the_parameter_points() -> None:
    cfn = transformed()
    overrides = {
        **WITH_MONITOR,
        "ModelMonitorBaselineUri": "s3://team-baselines/scones/data-quality",
    }
    statements = role_statements(resolver_for(cfn, **overrides), "SageMakerExecutionRole")
    for name in ("constraints.json", "statistics.json"):
        baseline = f"arn:aws:s3:::team-baselines/scones/data-quality/{name}"
        assert decide(statements, Request("s3:GetObject", baseline)) == ALLOW, name
    other = "arn:aws:s3:::team-baselines/other/constraints.json"
    assert decide(statements, Request("s3:GetObject", other)) == IMPLICIT_DENY


def test_model_monitor_may_publish_its_metrics_and_nothing_else() -> None:
    """The data-quality job runs with the endpoint's role and publishes a metric per feature
    (with a baseline whose constraints enable them) under /aws/sagemaker/Endpoints/data-metrics,
    which AWS's pages also spell Endpoint/; the endpoint's own namespace stays allowed."""
    overrides = {
        "CreateEndpoint": "true",
        "EnableModelMonitor": "true",
        "ModelDataUrl": "s3://artifacts/model.tar.gz",
        "ModelImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/serve:1",
        "ModelMonitorImageUri": "156813124566.dkr.ecr.us-east-1.amazonaws.com/analyzer",
    }
    cfn = transformed()
    assert check_rules(cfn, effective_values(**overrides)) == []
    statements = role_statements(resolver_for(cfn, **overrides), "SageMakerExecutionRole")

    def publish(namespace: str) -> str:
        context = {"cloudwatch:namespace": namespace}
        return decide(statements, Request("cloudwatch:PutMetricData", "*", None, context))

    for namespace in (
        "/aws/sagemaker/Endpoints",
        "/aws/sagemaker/Endpoints/data-metrics",
        "/aws/sagemaker/Endpoint/data-metrics",
    ):
        assert publish(namespace) == ALLOW, namespace
    for namespace in ("SconesUnlimited", "AWS/SageMaker", "/aws/sagemaker/TrainingJobs"):
        assert publish(namespace) == IMPLICIT_DENY, namespace


def effective_values(**overrides: str) -> dict[str, str]:
    from scones.offline.deploy import effective_parameters

    return effective_parameters(load_template(), overrides, check_rules=False)


def test_start_function_reads_only_the_ingest_queue() -> None:
    cfn = transformed()
    resources = cfn["Resources"]
    resolve = resolver_for(cfn)
    [mapping] = [
        r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::Lambda::EventSourceMapping"
    ]
    assert mapping["EventSourceArn"] == {"Fn::GetAtt": ["IngestQueue", "Arn"]}
    assert mapping["FunctionName"] == {"Ref": "StartWorkflowFunction"}
    assert mapping["BatchSize"] == 10
    assert mapping["MaximumBatchingWindowInSeconds"] == {"Ref": "IngestBatchingWindowSeconds"}
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    function = resolve(resources["StartWorkflowFunction"]["Properties"])
    assert (
        resolve(mapping["ScalingConfig"]["MaximumConcurrency"])
        <= function["ReservedConcurrentExecutions"]
    )

    role = resources["StartWorkflowFunctionRole"]["Properties"]
    assert not [arn for arn in role["ManagedPolicyArns"] if "SQS" in str(arn)]
    statements = role_statements(resolve, "StartWorkflowFunctionRole")
    ingest = resolve({"Fn::GetAtt": ["IngestQueue", "Arn"]})
    dead_letters = resolve({"Fn::GetAtt": ["DeadLetterQueue", "Arn"]})
    elsewhere = f"arn:aws:sqs:{REGION}:{ACCOUNT}:someone-elses-queue"
    for action in (
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:ChangeMessageVisibility",
    ):
        assert decide(statements, Request(action, ingest)) == ALLOW, action
        assert decide(statements, Request(action, dead_letters)) == IMPLICIT_DENY, action
        assert decide(statements, Request(action, elsewhere)) == IMPLICIT_DENY, action
    assert decide(statements, Request("sqs:SendMessage", ingest)) == IMPLICIT_DENY
    for resource in load_template()["Resources"].values():
        events = resource.get("Properties", {}).get("Events", {})
        assert all(e["Type"] != "SQS" for e in events.values())


def test_classify_function_outlasts_the_endpoint_call_for_every_allowed_timeout() -> None:
    template = load_template()
    parameter = template["Parameters"]["EndpointTimeoutSeconds"]
    rows = template["Mappings"]["EndpointTimeouts"]
    assert [str(v) for v in parameter["AllowedValues"]] == list(rows)
    assert str(parameter["Default"]) in rows
    for value, row in rows.items():
        endpoint = int(value)
        # connect timeout, then read timeout (one attempt), then a margin for the handler
        assert row["FunctionTimeout"] >= 2 * endpoint + 10, value
        # Step Functions gives up 2 s after Lambda would: never before, and a cold start's
        # init (outside the function's timeout) cannot stretch an attempt further.
        assert row["TaskTimeout"] == row["FunctionTimeout"] + 2, value
        assert endpoint <= 60  # SageMaker ends an invocation after 60 s anyway
    classify = transformed()["Resources"]["ClassifyImageFunction"]["Properties"]
    assert classify["Timeout"] == {
        "Fn::FindInMap": ["EndpointTimeouts", {"Ref": "EndpointTimeoutSeconds"}, "FunctionTimeout"]
    }
    assert classify["Environment"]["Variables"]["ENDPOINT_TIMEOUT_SECONDS"] == {
        "Ref": "EndpointTimeoutSeconds"
    }
    assert resolver_for(transformed(), EndpointTimeoutSeconds="20")(classify["Timeout"]) == 50
    # The handler's client makes exactly one attempt with these two timeouts.
    source = (PROJECT_ROOT / "functions/classify_image/app.py").read_text()
    for needle in (
        "connect_timeout=settings.timeout_seconds",
        "read_timeout=settings.timeout_seconds",
        '"total_max_attempts": 1',
    ):
        assert needle in source


@pytest.mark.parametrize("workflow_type", ["EXPRESS", "STANDARD"])
def test_ingest_messages_stay_invisible_through_the_window_and_the_function(
    workflow_type: str,
) -> None:
    """Lambda's rule for an SQS source: visibility timeout >= 6 x the function's timeout +
    MaximumBatchingWindowInSeconds, for every allowed window and either workflow type (the
    start function waits for an Express execution, up to Express's 300 s)."""
    template = load_template()
    parameter = template["Parameters"]["IngestBatchingWindowSeconds"]
    rows = template["Mappings"]["IngestBatching"]
    assert [str(v) for v in parameter["AllowedValues"]] == list(rows)
    assert str(parameter["Default"]) in rows
    cfn = transformed()
    start = cfn["Resources"]["StartWorkflowFunction"]["Properties"]
    queue = cfn["Resources"]["IngestQueue"]["Properties"]
    timeout = resolver_for(cfn, WorkflowType=workflow_type)(start["Timeout"])
    if workflow_type == "EXPRESS":
        # The run waited on, the HEADs before it, and the read timeout of its call.
        waiting = start_client_config(StartSettings("arn", workflow_type=workflow_type))
        assert timeout > RUN_TIME_NEEDED_SECONDS > waiting.read_timeout > EXPRESS_MAX_SECONDS
        assert waiting.retries == {"total_max_attempts": 1}  # a retry would run it twice
    for window, row in rows.items():
        assert 0 <= int(window) <= 300, window  # Lambda's limit for the batching window
        resolve = resolver_for(cfn, IngestBatchingWindowSeconds=window, WorkflowType=workflow_type)
        visibility = resolve(queue["VisibilityTimeout"])
        assert visibility == row[workflow_type.title()], window
        assert visibility >= 6 * timeout + int(window), window


@pytest.mark.parametrize("images", ["20", "50", "100", "200"])
def test_the_batches_in_flight_fit_the_functions_reserved_concurrency(images: str) -> None:
    """Under EXPRESS the start function waits for each batch's execution, so at most
    MaximumConcurrency batches of BatchSize images are in flight: ImagesInFlight, what
    SerializeImage and ClassifyImage reserve, so a burst waits on the queue and none is
    throttled. For every allowed ImagesInFlight."""
    parameter = load_template()["Parameters"]["ImagesInFlight"]
    assert [str(v) for v in parameter["AllowedValues"]] == list(
        load_template()["Mappings"]["IngestConcurrency"]
    )
    assert images in [str(v) for v in parameter["AllowedValues"]]
    cfn = transformed()
    resources = cfn["Resources"]
    resolve = resolver_for(cfn, ImagesInFlight=images)
    mapping = resources["StartWorkflowUploadsMapping"]["Properties"]
    batches = resolve(mapping["ScalingConfig"]["MaximumConcurrency"])
    assert 2 <= batches <= 1000  # Lambda's bounds for MaximumConcurrency
    assert batches * mapping["BatchSize"] == int(images)
    start_reserved = resources["StartWorkflowFunction"]["Properties"][
        "ReservedConcurrentExecutions"
    ]
    assert resolve(start_reserved) == batches
    for name in ("SerializeImageFunction", "ClassifyImageFunction"):
        reserved = resolve(resources[name]["Properties"]["ReservedConcurrentExecutions"])
        assert int(reserved) == int(images), name
    start = resources["StartWorkflowFunction"]["Properties"]
    assert start["Environment"]["Variables"]["WORKFLOW_TYPE"] == {"Ref": "WorkflowType"}
    allowed = load_template()["Parameters"]["WorkflowType"]["AllowedValues"]
    assert sorted(allowed) == sorted(WORKFLOW_TYPES)
    for workflow_type, action in (
        ("EXPRESS", "states:StartSyncExecution"),
        ("STANDARD", "states:StartExecution"),
    ):
        resolve = resolver_for(cfn, WorkflowType=workflow_type)
        statements = role_statements(resolve, "StartWorkflowFunctionRole")
        machine = resolve({"Ref": "ClassificationStateMachine"})
        other = (
            "states:StartExecution"
            if action != "states:StartExecution"
            else ("states:StartSyncExecution")
        )
        assert decide(statements, Request(action, machine)) == ALLOW, workflow_type
        assert decide(statements, Request(other, machine)) == IMPLICIT_DENY, workflow_type


def test_failed_monitor_runs_reach_the_alarmed_dead_letter_queue() -> None:
    """Both ways a run can fail end in the queue: Lambda's, for a run that failed in the
    function (after its two retries), and the scheduler's, for a run it could not hand to
    Lambda at all (after the schedule's retries); the body is the schedule's Input."""
    cfn = transformed()
    resources = cfn["Resources"]
    dead_letter_queue = {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}
    dead_letters = resolver_for(cfn)(dead_letter_queue)
    monitor = resources["MonitorFunction"]["Properties"]
    assert monitor["DeadLetterConfig"]["TargetArn"] == dead_letter_queue
    statements = role_statements(resolver_for(cfn), "MonitorFunctionRole")
    assert decide(statements, Request("sqs:SendMessage", dead_letters)) == ALLOW
    target = resources["MonitorFunctionSchedule"]["Properties"]["Target"]
    assert target["DeadLetterConfig"] == {"Arn": dead_letter_queue}
    assert target["RetryPolicy"]["MaximumRetryAttempts"] >= 1
    schedule_role = target["RoleArn"]["Fn::GetAtt"][0]
    sent_by_schedule = role_statements(resolver_for(cfn), schedule_role)
    assert decide(sent_by_schedule, Request("sqs:SendMessage", dead_letters)) == ALLOW
    ingest = resolver_for(cfn)({"Fn::GetAtt": ["IngestQueue", "Arn"]})
    assert decide(sent_by_schedule, Request("sqs:SendMessage", ingest)) == IMPLICIT_DENY
    alarm = resources["DeadLetterAlarm"]["Properties"]
    assert alarm["Dimensions"] == [
        {"Name": "QueueName", "Value": {"Fn::GetAtt": ["DeadLetterQueue", "QueueName"]}}
    ]


def test_the_unfinished_retraining_alarm_watches_the_machine_the_monitor_starts() -> None:
    """With RetrainingStateMachineArn naming another machine, the monitor starts that one:
    an alarm on the stack's own (which then never runs) could never fire."""
    cfn = transformed()
    monitor_env = cfn["Resources"]["MonitorFunction"]["Properties"]["Environment"]["Variables"]
    started = monitor_env["RETRAINING_STATE_MACHINE_ARN"]
    alarm = cfn["Resources"]["RetrainingUnfinishedAlarm"]["Properties"]
    watched = [
        dimension["Value"]
        for query in alarm["Metrics"]
        if "MetricStat" in query
        for dimension in query["MetricStat"]["Metric"]["Dimensions"]
    ]
    assert watched == [started, started]
    assert started["Fn::If"][0] == "HasRetrainingStateMachine"


def test_functions_and_the_state_machine_reach_only_their_own_resources() -> None:
    cfn = transformed()
    resolve = resolver_for(cfn)
    endpoint = parameter_defaults()["EndpointName"]
    endpoint_arn = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/{endpoint}"
    bucket = resolve({"Fn::GetAtt": ["ImageBucket", "Arn"]})
    table = resolve({"Fn::GetAtt": ["ResultsTable", "Arn"]})
    cases = [
        ("ClassifyImageFunctionRole", "sagemaker:InvokeEndpoint", endpoint_arn, ALLOW),
        ("ClassifyImageFunctionRole", "sagemaker:InvokeEndpoint", f"{endpoint_arn}-b", None),
        ("SerializeImageFunctionRole", "s3:GetObject", f"{bucket}/incoming/a.png", ALLOW),
        ("SerializeImageFunctionRole", "s3:GetObject", f"{bucket}/models/m.tar.gz", None),
        ("SerializeImageFunctionRole", "s3:PutObject", f"{bucket}/incoming/a.png", None),
        ("ClassificationStateMachineRole", "dynamodb:PutItem", table, ALLOW),
        ("ClassificationStateMachineRole", "dynamodb:DeleteItem", table, None),
        ("ClassificationStateMachineRole", "dynamodb:PutItem", f"{table}-other", None),
    ]
    for role, action, resource, expected in cases:
        answer = decide(role_statements(resolve, role), Request(action, resource))
        assert answer == (expected or IMPLICIT_DENY), (role, action, resource)

    # Only this bucket, in this account, may send notifications to the ingest queue.
    policy = resolve(resources_of(cfn, "IngestQueuePolicy")["PolicyDocument"])["Statement"]
    queue = resolve({"Fn::GetAtt": ["IngestQueue", "Arn"]})
    s3 = ("Service", "s3.amazonaws.com")
    own = {"aws:SourceArn": bucket, "aws:SourceAccount": ACCOUNT, "aws:SecureTransport": "true"}
    assert decide(policy, Request("sqs:SendMessage", queue, s3, own)) == ALLOW
    other = {**own, "aws:SourceArn": "arn:aws:s3:::someone-elses-bucket"}
    assert decide(policy, Request("sqs:SendMessage", queue, s3, other)) == IMPLICIT_DENY


def resources_of(cfn: dict[str, Any], logical_id: str) -> dict[str, Any]:
    return dict(cfn["Resources"][logical_id]["Properties"])


# ---------------------------------------------------------------- cost and Express limits


def test_executions_without_attempt_default_to_attempt_zero() -> None:
    """An older start function (during a deployment) sends no attempt, or no delivery id:
    still one record. The happy path's only check is the one Choice."""
    states = image_flow()["States"]
    attempt, delivery = states["CheckAttempt"]["Choices"]
    assert attempt == {"Variable": "$.attempt", "IsPresent": False, "Next": "DefaultAttempt"}
    assert states["DefaultAttempt"] == {
        "Type": "Pass",
        "Result": 0,
        "ResultPath": "$.attempt",
        "Next": "DefaultDelivery",  # a start function without attempts had no deliveries
    }
    assert delivery == {
        "Variable": "$.object.delivery",
        "IsPresent": False,
        "Next": "DefaultDelivery",
    }
    assert states["DefaultDelivery"] == {
        "Type": "Pass",
        "InputPath": "$.object.record_id",
        "ResultPath": "$.object.delivery",
        "Next": "SerializeImage",
    }


def test_confidence_branches_straight_to_one_record_state_per_status() -> None:
    from scones.costs.workflow import happy_path, load_workflow

    states = image_flow()["States"]
    choice = states["CheckConfidence"]
    assert choice["Choices"][0]["Next"] == "RecordAccepted"
    assert choice["Default"] == "RecordNeedsReview"
    for name, status in (("RecordAccepted", "ACCEPTED"), ("RecordNeedsReview", "NEEDS_REVIEW")):
        assert states[name]["Parameters"]["Item"]["status"] == {"S": status}
        assert states[name].get("End") is True
    # A good upload enters six states: what a Standard workflow bills, per image.
    assert happy_path(load_workflow()) == [
        "CheckAttempt",
        "SerializeImage",
        "CheckImage",
        "ClassifyImage",
        "CheckConfidence",
        "RecordNeedsReview",
    ]


def test_each_lambda_task_gives_up_two_seconds_after_its_function() -> None:
    """Lambda's init (up to 10 s on a cold start) runs outside the function's Timeout; the
    task's TimeoutSeconds bounds the whole attempt, and States.Timeout is retried."""
    from scones.costs.workflow import load_workflow

    for endpoint_timeout in ("5", "20"):
        workflow = load_workflow({"EndpointTimeoutSeconds": endpoint_timeout})
        for state, function in workflow.lambda_functions.items():
            task = workflow.states[state]
            assert task["TimeoutSeconds"] == workflow.function_timeouts[function] + 2, state
            (retry,) = task["Retry"]
            assert {"States.Timeout", "Lambda.Unknown", "Sandbox.Timedout"} <= set(
                retry["ErrorEquals"]
            ), state


def test_the_slowest_path_fits_an_express_workflows_five_minutes() -> None:
    """Every retry used, every attempt to its timeout, then the failure record and the DLQ
    message: it must still end (with a record) before Express stops it at 300 s."""
    from scones.costs.workflow import EXPRESS_LIMIT_SECONDS, load_workflow, worst_case_seconds

    assert parameter_defaults()["WorkflowType"] == "EXPRESS"
    seconds, path = worst_case_seconds(load_workflow())
    assert seconds <= EXPRESS_LIMIT_SECONDS, (seconds, path)
    assert path[-6:] == [
        "RecordFailure",
        "NotifyDeadLetter",
        "CheckRecorded",
        "ImageFailed",
        "FailIfAnyImageFailed",
        "ClassificationFailed",
    ]
    # The old defaults (4 retries, a 10 s endpoint timeout, 30 s functions) did not fit.
    old = load_workflow({"RetryMaxAttempts": "4", "EndpointTimeoutSeconds": "10"})
    assert worst_case_seconds(old)[0] > EXPRESS_LIMIT_SECONDS


def test_a_backfill_batch_fits_its_express_child_executions_five_minutes() -> None:
    """The Distributed Map runs each batch as an Express child: every retry of the backfill
    function to its timeout, with the longest backoffs, must end before Express stops it."""
    from scones.costs.workflow import EXPRESS_LIMIT_SECONDS, load_workflow, state_worst_seconds

    backfill = load_workflow(machine="BackfillStateMachine")
    (distributed,) = [
        name
        for name, state in backfill.definition["States"].items()
        if state["Type"] == "Map"
        and state["ItemProcessor"]["ProcessorConfig"].get("ExecutionType") == "EXPRESS"
    ]
    assert 0 < state_worst_seconds(backfill, distributed) <= EXPRESS_LIMIT_SECONDS
    # The children's results go to S3: gathered into the Map's output (256 KiB at most),
    # a few dozen tolerated failed batches, each its whole input and error, would fail
    # a backfill whose work was done. A child's output is {}, so the files stay small.
    state = backfill.definition["States"][distributed]
    writer = state["ResultWriter"]
    assert writer["Resource"] == "arn:aws:states:::s3:putObject"
    params = parameter_defaults()
    assert writer["Parameters"] == {
        "Bucket": state["ItemReader"]["Parameters"]["Bucket"],  # the stack's bucket
        "Prefix": params["BackfillResultsPrefix"],
    }
    processor = state["ItemProcessor"]
    for state in processor["States"].values():
        assert state.get("End") is not True or (
            "OutputPath" in state and state["OutputPath"] is None
        )


def test_one_execution_runs_a_batch_and_no_image_can_stop_another() -> None:
    """The top level wraps a lone image into a batch of one and maps the per-image flow
    over the batch. Inside the Map nothing may be a Fail state (it would stop the batch's
    other images before their records); the execution fails only after the Map."""
    from scones.costs.workflow import batch_path, load_workflow

    asl = definition(state_machines()["ClassificationStateMachine"])
    top = asl["States"]
    assert batch_path(load_workflow()) == [
        "CheckBatch",
        "ClassifyEachImage",
        "FailIfAnyImageFailed",
        "EveryImageRecorded",
    ]
    assert top["CheckBatch"]["Choices"] == [
        {"Variable": "$.objects", "IsPresent": True, "Next": "ClassifyEachImage"}
    ]
    assert top["WrapOneImage"]["Parameters"] == {"objects.$": "States.Array($)"}
    mapped = top["ClassifyEachImage"]
    assert mapped["ItemsPath"] == "$.objects"
    assert mapped["ItemProcessor"]["ProcessorConfig"] == {"Mode": "INLINE"}
    assert "MaxConcurrency" not in mapped  # every image of a batch side by side
    inner = image_flow()["States"]
    assert not [name for name, state in inner.items() if state["Type"] == "Fail"]
    # Each image's result is its record id, or FAILED after its FAILED record + DLQ message.
    ends = {
        name: state
        for name, state in inner.items()
        if state.get("End") or state["Type"] == "Succeed"
    }
    assert {
        name: state.get("OutputPath")
        for name, state in ends.items()
        if name not in ("ImageFailed", "ImageUnrecorded")
    } == {
        name: "$.object.record_id"
        for name in ("RecordAccepted", "RecordNeedsReview", "RecordRejected", "AlreadyRecorded")
    }
    assert inner["NotifyDeadLetter"]["Next"] == "CheckRecorded"
    # No task error may escape an image's flow (it would stop the whole Map, and with it
    # the batch's other images): every task catches everything.
    for name, state in inner.items():
        if state["Type"] == "Task":
            assert state["Catch"][-1]["ErrorEquals"] == ["States.ALL"], name
    assert inner["NotifyDeadLetter"]["Catch"][-1]["Next"] == "CheckRecorded"
    # An image whose FAILED record the table refused too is UNRECORDED, whether or not its
    # dead letter went out.
    assert inner["CheckRecorded"]["Choices"] == [
        {"Variable": "$.record_error", "IsPresent": True, "Next": "ImageUnrecorded"}
    ]
    assert inner["CheckRecorded"]["Default"] == "ImageFailed"
    assert inner["RecordFailure"]["Catch"][-1]["ResultPath"] == "$.record_error"
    assert inner["ImageFailed"]["Result"] == "FAILED"
    assert inner["ImageUnrecorded"]["Result"] == "UNRECORDED"
    assert mapped["ResultSelector"]["any_failed.$"] == "States.ArrayContains($, 'FAILED')"
    selector = mapped["ResultSelector"]["any_unrecorded.$"]
    assert selector == "States.ArrayContains($, 'UNRECORDED')"
    unrecorded, failed = top["FailIfAnyImageFailed"]["Choices"]
    assert unrecorded["Variable"] == "$.outcome.any_unrecorded"
    assert unrecorded["Next"] == "ImagesUnrecorded"
    assert failed["Next"] == "ClassificationFailed"
    # The start function reads ClassificationFailed as "every image has its record" (a run
    # it waited on that failed with any other error sends its messages back to the queue).
    fails = {name: state["Error"] for name, state in top.items() if state["Type"] == "Fail"}
    assert fails == {
        "ClassificationFailed": CLASSIFICATION_FAILED,
        "ImagesUnrecorded": IMAGES_UNRECORDED,
    }


def test_the_backfill_is_a_distributed_map_over_the_incoming_prefix() -> None:
    properties = state_machines()["BackfillStateMachine"]
    asl = definition(properties)
    (map_state,) = [s for s in asl["States"].values() if s["Type"] == "Map"]
    # The role may list only the incoming prefix: anything else fails first, by name.
    check = asl["States"][asl["StartAt"]]
    (rule,) = check["Choices"]
    assert rule["Next"] == "ClassifyEveryObject" and check["Default"] == "PrefixOutsideIncoming"
    incoming = parameter_defaults()["IncomingPrefix"]
    assert {"Variable": "$.prefix", "StringMatches": f"{incoming}*"} in rule["And"]
    assert map_state["ItemReader"]["Resource"] == "arn:aws:states:::s3:listObjectsV2"
    assert map_state["ItemReader"]["Parameters"]["Prefix.$"] == "$.prefix"
    assert map_state["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED"
    # An object S3 will not head fails its batch without a retry, which would start the
    # batch's other objects again; the error is the one the function raises, by name.
    from scones_core.errors import ObjectsUnreadable

    (task,) = map_state["ItemProcessor"]["States"].values()
    first, *others = task["Retry"]
    assert first == {"ErrorEquals": [ObjectsUnreadable.__name__], "MaxAttempts": 0}
    assert "States.TaskFailed" in others[0]["ErrorEquals"]
    defaults = parameter_defaults()
    assert map_state["ItemBatcher"]["MaxItemsPerBatch"] == int(defaults["BackfillBatchSize"])
    assert map_state["MaxConcurrency"] == int(defaults["BackfillMaxConcurrency"])
    # Each batch is one invocation of the function: no more at once than it may run.
    reserved = load_template()["Resources"]["BackfillFunction"]["Properties"][
        "ReservedConcurrentExecutions"
    ]
    assert (
        load_template()["Parameters"]["BackfillMaxConcurrency"]["MaxValue"] == reserved["Fn::If"][1]
    )
    assert map_state["ToleratedFailurePercentage"] == int(
        defaults["BackfillToleratedFailurePercentage"]
    )
    cfn = transformed()
    resolve = resolver_for(cfn)
    statements = role_statements(resolve, "BackfillFunctionRole")
    table = resolve({"Fn::GetAtt": ["ResultsTable", "Arn"]})
    machine = resolve({"Ref": "ClassificationStateMachine"})
    assert decide(statements, Request("dynamodb:BatchGetItem", table)) == ALLOW
    assert decide(statements, Request("dynamodb:PutItem", table)) == IMPLICIT_DENY
    assert decide(statements, Request("dynamodb:Scan", table)) == IMPLICIT_DENY
    assert decide(statements, Request("states:StartExecution", machine)) == ALLOW


@pytest.mark.parametrize(
    ("minutes", "expression"), [("60", "rate(60 minutes)"), ("1", "rate(1 minute)")]
)
def test_the_monitor_runs_once_per_window(minutes: str, expression: str) -> None:
    """The schedule comes from ``MonitorWindowMinutes``: a schedule set apart from the
    window would skip traffic (runs further apart) or count it twice (closer together).
    Scheduler wants ``minute`` for 1 and ``minutes`` otherwise."""
    from scones.template_params import condition_value

    template = load_template()
    schedule = template["Resources"]["MonitorFunction"]["Properties"]["Events"]["Schedule"]
    condition, single, plural = schedule["Properties"]["ScheduleExpression"]["Fn::If"]
    values = {**parameter_defaults(), "MonitorWindowMinutes": minutes}
    chosen = single if condition_value(template, condition, values) else plural
    if isinstance(chosen, dict):
        chosen = chosen["Fn::Sub"].replace("${MonitorWindowMinutes}", minutes)
    assert chosen == expression
    assert "MonitorSchedule" not in template["Parameters"]
    # The monitor refuses a window the template would accept, and the reverse.
    from scones_core.monitoring.settings import _MAX_WINDOW_MINUTES

    spec = template["Parameters"]["MonitorWindowMinutes"]
    assert (spec["MinValue"], spec["MaxValue"]) == (1, _MAX_WINDOW_MINUTES)


def test_one_parameter_names_the_endpoints_variant_everywhere() -> None:
    """The monitor reads the capture of, EndpointErrorAlarm watches, the stack's endpoint
    config serves and a retraining canary deploys one variant: a second spelling would
    leave an existing endpoint's traffic unread or its canary's errors unwatched."""
    resources = load_template()["Resources"]
    ref = {"Ref": "EndpointVariantName"}
    monitor = resources["MonitorFunction"]["Properties"]["Environment"]["Variables"]
    assert monitor["ENDPOINT_VARIANT"] == ref
    (variant,) = resources["SageMakerEndpointConfig"]["Properties"]["ProductionVariants"]
    assert variant["VariantName"] == ref
    dimensions = resources["EndpointErrorAlarm"]["Properties"]["Dimensions"]
    assert {"Name": "VariantName", "Value": ref} in dimensions
    retraining = resources["RetrainingStateMachine"]["Properties"]
    assert retraining["DefinitionSubstitutions"]["EndpointVariantName"] == ref
    definition = (PROJECT_ROOT / retraining["DefinitionUri"]).read_text()
    assert '"VariantName": "${EndpointVariantName}"' in definition
    assert "AllTraffic" not in definition


@pytest.mark.parametrize(
    "machine", ["ClassificationStateMachine", "BackfillStateMachine", "RetrainingStateMachine"]
)
def test_service_integrations_are_named_in_the_stacks_partition(machine: str) -> None:
    """An `arn:aws:states:::…` integration deploys in China or GovCloud but cannot run
    there: each comes from the stack's partition, as the template's IAM ARNs do."""
    properties = load_template()["Resources"][machine]["Properties"]
    assert properties["DefinitionSubstitutions"]["Partition"] == {"Ref": "AWS::Partition"}
    text = (PROJECT_ROOT / properties["DefinitionUri"]).read_text()
    resources = re.findall(r'"Resource":\s*"([^"]*)"', text)
    assert resources and all(
        r.startswith("arn:${Partition}:states:::") or r.startswith("${") for r in resources
    ), resources
    china = {**sample_substitutions(properties), "Partition": "aws-cn"}
    assert check_definition(text, china) == []
    substituted = substitute(text, china)
    assert "arn:aws:states:::" not in substituted
    assert substituted.count('"arn:aws-cn:states:::') == text.count('"arn:${Partition}:states:::')
    # The static checks read each integration's API model in every partition.
    from scones.asl_check import _output_shape

    for partition in ("aws", "aws-cn", "aws-us-gov"):
        assert _output_shape(f"arn:{partition}:states:::sagemaker:createTrainingJob.sync")


def test_every_workflow_and_function_logs_to_a_group_the_stack_keeps_for_log_retention_days() -> (
    None
):
    """Each state machine logs its failures (ERROR, no execution data) and each function its
    lines to a log group of the template, kept LogRetentionDays: none logs to a group that
    Lambda or Step Functions would create without retention (kept forever, billed)."""
    resources = load_template()["Resources"]
    kept = {
        name
        for name, resource in resources.items()
        if resource["Type"] == "AWS::Logs::LogGroup"
        and resource["Properties"].get("RetentionInDays") == {"Ref": "LogRetentionDays"}
    }
    for name, resource in resources.items():
        props = resource["Properties"]
        if resource["Type"] == "AWS::Serverless::StateMachine":
            logging = props.get("Logging")
            assert logging is not None, name
            assert (logging["Level"], logging["IncludeExecutionData"]) == ("ERROR", False), name
            [destination] = logging["Destinations"]
            group = destination["CloudWatchLogsLogGroup"]["LogGroupArn"]["Fn::GetAtt"][0]
            assert group in kept, name
            actions = {
                action
                for policy in props["Policies"]
                for statement in (policy.get("Statement", []) if isinstance(policy, dict) else [])
                if isinstance(statement, dict)
                for action in as_list(statement.get("Action", []))
            }
            assert "logs:CreateLogDelivery" in actions, name
        if resource["Type"] == "AWS::Serverless::Function":
            assert props["LoggingConfig"]["LogGroup"]["Ref"] in kept, name


def referenced(node: Any, conditions: dict[str, bool]) -> set[str]:
    """The logical ids a template fragment refers to (Ref, GetAtt, Sub), taking each
    ``Fn::If`` branch its condition's value picks: what CloudFormation orders it after."""
    if isinstance(node, list):
        return set().union(*(referenced(item, conditions) for item in node))
    if not isinstance(node, dict):
        return set()
    if "Fn::If" in node:
        name, when_true, when_false = node["Fn::If"]
        return referenced(when_true if conditions[name] else when_false, conditions)
    found: set[str] = set()
    for key, value in node.items():
        if key == "Ref" and isinstance(value, str):
            found.add(value)
        elif key == "Fn::GetAtt":
            found.add(value[0] if isinstance(value, list) else value.split(".")[0])
        elif key == "Fn::Sub":
            text = value[0] if isinstance(value, list) else value
            found |= {name.split(".")[0] for name in re.findall(r"\$\{([^}!]+)\}", text)}
            if isinstance(value, list):
                found |= referenced(value[1], conditions)
        else:
            found |= referenced(value, conditions)
    return found


@pytest.mark.parametrize("create_endpoint", [True, False])
def test_the_classify_function_calls_the_endpoint_once_it_exists(create_endpoint: bool) -> None:
    """With CreateEndpoint=true, a new EndpointName creates a new endpoint (minutes), and
    the function and its grant must move to it only once it is in service: they refer to
    the endpoint resource, so CloudFormation updates them after it, not beside it."""
    cfn = transformed()
    conditions = {"ShouldCreateEndpoint": create_endpoint, "IsTracingActive": False}
    function = cfn["Resources"]["ClassifyImageFunction"]["Properties"]
    role = cfn["Resources"]["ClassifyImageFunctionRole"]["Properties"]
    for part in (function["Environment"]["Variables"]["ENDPOINT_NAME"], role["Policies"]):
        assert ("SageMakerEndpoint" in referenced(part, conditions)) is create_endpoint
        assert ("EndpointName" in referenced(part, conditions)) is not create_endpoint


@pytest.mark.parametrize("machine", sorted(state_machines()))
def test_every_value_a_parameter_allows_keeps_the_definition_parseable(machine: str) -> None:
    """A substitution lands in the definition's text: a value with an apostrophe that a
    parameter's AllowedPattern admits (a key such as ``o'neil/``) must never end up inside a
    States.Format literal, where it deploys and then fails with States.Runtime."""
    properties = state_machines()[machine]
    text = (PROJECT_ROOT / properties["DefinitionUri"]).read_text()
    parameters = load_template()["Parameters"]
    tried = 0
    for name, value in properties["DefinitionSubstitutions"].items():
        if not (isinstance(value, dict) and set(value) == {"Ref"}):
            continue
        spec = parameters.get(value["Ref"], {})
        pattern, default = spec.get("AllowedPattern"), str(spec.get("Default", ""))
        quoted = f"o'{default}"
        if spec.get("Type") != "String" or not pattern or not re.fullmatch(pattern, quoted):
            continue
        substitutions = sample_substitutions(properties) | {name: quoted}
        assert check_definition(text, substitutions) == [], (name, quoted)
        tried += 1
    if machine == "RetrainingStateMachine":
        assert tried, "BaselineKey admits an apostrophe and is substituted"


def test_a_functions_environment_resolves_conditions_and_names_no_resource_it_cannot_know() -> None:
    """``function_environment`` (the CLI's and reports' reading of a function's settings) and
    ``deployed_environment`` (a cold start's, with stand-ins) share one resolver."""
    endpoint = parameter_defaults()["EndpointName"]
    assert function_environment("ClassifyImageFunction")["ENDPOINT_NAME"] == endpoint
    created = {"CreateEndpoint": "true"}
    assert "ENDPOINT_NAME" not in function_environment("ClassifyImageFunction", overrides=created)
    assert deployed_environment("ClassifyImageFunction", created)["ENDPOINT_NAME"].startswith(
        "arn:"
    )
    monitor = deployed_environment("MonitorFunction")
    assert monitor["DATA_CAPTURE_S3_URI"].endswith(f"/{parameter_defaults()['DataCapturePrefix']}")
    assert monitor["POWERTOOLS_SERVICE_NAME"] == "scones-classifier"
    assert "POWERTOOLS_SERVICE_NAME" not in function_environment("MonitorFunction")
    assert "DATA_CAPTURE_S3_URI" not in function_environment("MonitorFunction")


def test_the_backfill_parameters_say_how_many_uploads_of_a_key_it_examines() -> None:
    """The operator sizes BackfillMaxConcurrency from its description: the number of uploads
    of a key a batch examines is the code's, not a second copy that could drift."""
    from scones_core.backfill import MAX_VERSIONS_PER_KEY

    parameters = load_template()["Parameters"]
    assert (
        f"newest {MAX_VERSIONS_PER_KEY} uploads" in parameters["BackfillBatchSize"]["Description"]
    )
    concurrency = parameters["BackfillMaxConcurrency"]["Description"]
    assert f"up to {MAX_VERSIONS_PER_KEY} x BackfillBatchSize" in concurrency
