"""Parameters that name something outside the stack: a value the template accepts deploys,
and the function it reaches runs with it. A value that only fails at run time would pass
``sam deploy`` and then fail every scheduled monitor run."""

from __future__ import annotations

import pytest
from scones_core.errors import SettingsError
from scones_core.monitoring.settings import MonitorSettings
from scones_core.retraining.settings import RetrainingSettings
from scones_core.settings import parse_labels

from scones.offline.deploy import DeployError, effective_parameters
from scones.template_params import load_template
from tests.workflow.iam_policy import ALLOW, Request, Resolver, decide, role_statements
from tests.workflow.test_workflow_template import transformed

ROLE = "arn:aws:iam::123456789012:role/scones-retraining"
ARN = "arn:aws:states:us-east-1:123456789012"
STATE_MACHINE = f"{ARN}:stateMachine:retrain"


@pytest.mark.parametrize(
    ("name", "value", "accepted"),
    [
        ("RetrainingJobConfigS3Uri", "", True),
        ("RetrainingJobConfigS3Uri", "s3://my-bucket/configs/train.json", True),
        # A folder or a bucket: the monitor needs the request object itself.
        ("RetrainingJobConfigS3Uri", "s3://my-bucket/configs/", False),
        ("RetrainingJobConfigS3Uri", "s3://my-bucket/", False),
        ("RetrainingJobConfigS3Uri", "s3://my-bucket", False),
        # Without s3:// the monitor's GetObject grant cannot be built (Fn::Select).
        ("RetrainingJobConfigS3Uri", "my-bucket/configs/train.json", False),
        ("RetrainingStateMachineArn", "", True),
        ("RetrainingStateMachineArn", STATE_MACHINE, True),
        (
            "RetrainingStateMachineArn",
            "arn:aws-cn:states:cn-north-1:123456789012:stateMachine:Re_2",
            True,
        ),
        ("RetrainingStateMachineArn", "retrain", False),
        ("RetrainingStateMachineArn", f"{STATE_MACHINE}:live", False),
        ("RetrainingStateMachineArn", f"{ARN}:execution:retrain:r1", False),
    ],
)
def test_a_retraining_target_the_template_accepts_is_one_the_monitor_runs_with(
    name: str, value: str, accepted: bool
) -> None:
    template = load_template()
    overrides = {name: value}
    if name == "RetrainingJobConfigS3Uri" and value:
        overrides["RetrainingRoleArn"] = ROLE  # the template's Rule asks for it
    try:
        values = effective_parameters(template, overrides)
    except DeployError as exc:
        assert not accepted, exc
        assert f"{name}={value!r} does not match the AllowedPattern" in str(exc)
        return
    assert accepted, f"{name}={value!r} deploys, and the monitor refuses it"
    cfn = transformed()
    resolve = Resolver(cfn, values)
    env = resolve(cfn["Resources"]["MonitorFunction"]["Properties"]["Environment"]["Variables"])
    try:
        settings = MonitorSettings.from_env(env)
    except SettingsError as exc:
        pytest.fail(f"{name}={value!r}: {exc}")
    statements = role_statements(resolve, "MonitorFunctionRole")
    if name == "RetrainingJobConfigS3Uri" and value:
        assert settings.retraining_job_config is not None
        job_config = f"arn:aws:s3:::{value.removeprefix('s3://')}"
        assert decide(statements, Request("s3:GetObject", job_config)) == ALLOW
    if name == "RetrainingStateMachineArn" and value:
        assert settings.retraining_state_machine_arn == value
        assert decide(statements, Request("states:StartExecution", value)) == ALLOW


PARAMETERS = load_template()["Parameters"]
PREFIXES = [name for name in PARAMETERS if name.endswith("Prefix") or name == "BaselineKey"]


@pytest.mark.parametrize("name", PREFIXES)
def test_a_prefix_cannot_widen_the_iam_grants_built_from_it(name: str) -> None:
    """Each prefix ends up in IAM resource ARNs (``bucket/${Prefix}*``), where "*" is a
    wildcard: ``*/`` would grant the whole bucket."""
    template = load_template()
    default = PARAMETERS[name]["Default"]
    effective_parameters(template, {name: default})  # the default deploys
    wide = "*/" if default.endswith("/") else "*"
    with pytest.raises(DeployError, match=f"{name}='\\{wide}' does not match the AllowedPattern"):
        effective_parameters(template, {name: wide})


@pytest.mark.parametrize(
    ("labels", "accepted"),
    [
        ("bicycle,motorcycle", True),
        ("vélo,moto", True),
        ("cat,dog,bird", True),
        # A label names a folder of images and is a JSON string in the retraining ASL.
        ("e-bike/pedelec,motorcycle", False),
        ("back\\slash,motorcycle", False),
        ('say "bike",motorcycle', False),
        ("bicycle", False),
        ("bicycle,,motorcycle", False),
    ],
)
def test_labels_the_template_accepts_are_labels_every_function_accepts(
    labels: str, accepted: bool
) -> None:
    """A label with '/' deployed, was recorded and copied to labelled/e-bike/pedelec/, and
    retraining, which reads one folder level, never saw those images."""
    template = load_template()
    try:
        effective_parameters(template, {"ModelLabels": labels})
    except DeployError as exc:
        assert not accepted, exc
        assert "does not match the AllowedPattern" in str(exc)
        with pytest.raises(ValueError, match="label"):
            parse_labels(labels)
        return
    assert accepted, f"ModelLabels={labels!r} deploys"
    assert parse_labels(labels) == tuple(labels.split(","))


@pytest.mark.parametrize(
    "labels", [".,motorcycle", "bicycle,..", "bicycle,bicycle", "cat,dog,neither"]
)
def test_labels_no_pattern_can_refuse_are_refused_by_every_function(labels: str) -> None:
    """``neither`` is the review page's answer for an image of no label: as a label, its
    answers could not be told from the model's class."""
    with pytest.raises(ValueError, match="label"):
        parse_labels(labels)


@pytest.mark.parametrize(
    ("overrides", "refused"),
    [
        ({}, None),
        ({"DataCapturePrefix": "incoming2"}, None),
        ({"IncomingPrefix": "uploads/", "TrainingDataPrefix": "uploads-old/"}, None),
        # A key is an object, not a folder: nothing lies inside it.
        ({"IncomingPrefix": "baseline-uploads/", "BaselineKey": "baseline"}, None),
        # Folder prefixes that the retraining functions would refuse at their first run.
        ({"TrainingDataPrefix": "/training/"}, "TrainingDataPrefix='/training/' does not match"),
        ({"GateDataPrefix": "training//gate/"}, "GateDataPrefix='training//gate/' does not match"),
        ({"IncomingPrefix": "/incoming/"}, "IncomingPrefix='/incoming/' does not match"),
        # Retraining reads its areas as separate data sets.
        (
            {"TrainingDataPrefix": "training/", "GateDataPrefix": "training/gate/"},
            "TrainingDataPrefix='training/' and GateDataPrefix='training/gate/'",
        ),
        (
            {"RetrainingPrefix": "labelled/runs/"},
            "LabelledDataPrefix='labelled/' and RetrainingPrefix='labelled/runs/'",
        ),
        # Whatever lies under IncomingPrefix is classified as an upload.
        (
            {"DataCapturePrefix": "incoming/datacapture"},
            "IncomingPrefix='incoming/' and DataCapturePrefix='incoming/datacapture'",
        ),
        (
            {"IncomingPrefix": "monitoring/"},
            "IncomingPrefix='monitoring/' and MonitoringReportsPrefix='monitoring/reports'",
        ),
        (
            {"BaselineKey": "incoming/baseline.json"},
            "IncomingPrefix='incoming/' and BaselineKey='incoming/baseline.json'",
        ),
        (
            {"IncomingPrefix": "training/"},
            "IncomingPrefix='training/' and TrainingDataPrefix='training/train/'",
        ),
        # The backfill's result files, under the incoming prefix, would be classified.
        (
            {"BackfillResultsPrefix": "incoming/backfill/"},
            "IncomingPrefix='incoming/' and BackfillResultsPrefix='incoming/backfill/'",
        ),
        ({"BackfillResultsPrefix": "backfill-results/"}, None),
        # Lifecycle rules expire the backfill's results and the capture: nothing else may
        # lie inside them, or contain them.
        (
            {"BackfillResultsPrefix": "training/"},
            "BackfillResultsPrefix='training/' and TrainingDataPrefix='training/train/': one "
            "lies inside the other, and a lifecycle rule expires every object under "
            "BackfillResultsPrefix",
        ),
        (
            {"BackfillResultsPrefix": "models/"},
            "BackfillResultsPrefix='models/' and BaselineKey='models/bicycle-motorcycle/",
        ),
        (
            {"DataCapturePrefix": "labelled/capture"},
            "DataCapturePrefix='labelled/capture' and LabelledDataPrefix='labelled/'",
        ),
        (
            {"BackfillResultsPrefix": "datacapture/backfill/"},
            "DataCapturePrefix='datacapture' and BackfillResultsPrefix='datacapture/backfill/'",
        ),
    ],
)
def test_a_bucket_layout_the_template_accepts_is_one_every_function_runs_with(
    overrides: dict[str, str], refused: str | None
) -> None:
    """``DataCapturePrefix=incoming/datacapture`` deployed, and every capture file the
    endpoint wrote was classified as an upload and recorded REJECTED; a retraining prefix
    the template took failed the retraining function at its first run."""
    template = load_template()
    try:
        values = effective_parameters(template, overrides)
    except DeployError as exc:
        assert refused is not None, exc
        assert refused in str(exc)
        return
    assert refused is None, f"{overrides} deploys"
    cfn = transformed()
    env = Resolver(cfn, values)(
        cfn["Resources"]["RetrainDatasetFunction"]["Properties"]["Environment"]["Variables"]
    )
    settings = RetrainingSettings.from_env(env)
    assert settings.training_prefix == values["TrainingDataPrefix"]


@pytest.mark.parametrize("prefix", ["incoming/", "uploads/cameras/"])
def test_the_start_function_may_head_an_upload_and_nothing_else_in_the_bucket(prefix: str) -> None:
    """The start function asks S3 which reading of an EventBridge key holds the announced
    version (``ingest.settle_key_readings``): a HEAD, by version, of an object under the
    deployed ``IncomingPrefix``, and the bucket's list permission, without which S3 answers
    a missing key 403. Not the labelled copies, the captures or another bucket, and no
    write."""
    template = load_template()
    values = effective_parameters(template, {"IncomingPrefix": prefix})
    cfn = transformed()
    resolve = Resolver(cfn, values)
    env = resolve(
        cfn["Resources"]["StartWorkflowFunction"]["Properties"]["Environment"]["Variables"]
    )
    assert env["INCOMING_PREFIX"] == prefix
    statements = role_statements(resolve, "StartWorkflowFunctionRole")
    bucket = f"arn:aws:s3:::{env['IMAGE_BUCKET']}"
    for action in ("s3:GetObject", "s3:GetObjectVersion"):
        assert decide(statements, Request(action, f"{bucket}/{prefix}c++/a b.png")) == ALLOW
        for elsewhere in (f"{bucket}/labelled/bicycle/a.png", "arn:aws:s3:::other/" + prefix):
            assert decide(statements, Request(action, elsewhere)) != ALLOW, elsewhere
    assert decide(statements, Request("s3:ListBucket", bucket)) == ALLOW
    assert decide(statements, Request("s3:ListBucket", "arn:aws:s3:::other")) != ALLOW
    for action in ("s3:PutObject", "s3:DeleteObject", "s3:GetObject"):
        assert decide(statements, Request(action, f"{bucket}/labelled/a.png")) != ALLOW
    for action in ("s3:PutObject", "s3:DeleteObject", "s3:PutBucketPolicy"):
        assert decide(statements, Request(action, f"{bucket}/{prefix}a.png")) != ALLOW
        assert decide(statements, Request(action, bucket)) != ALLOW


# What the AWS managed policies SAM attaches to the role it generates for each function
# grant (the AWS managed policy reference): both reach beyond the function.
MANAGED_GRANTS: dict[str, dict[str, object]] = {
    "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole": {
        "Effect": "Allow",
        "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
        "Resource": "*",
    },
    "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess": {
        "Effect": "Allow",
        "Action": [
            "xray:PutTraceSegments",
            "xray:PutTelemetryRecords",
            "xray:GetSamplingRules",
            "xray:GetSamplingTargets",
            "xray:GetSamplingStatisticSummaries",
        ],
        "Resource": "*",
    },
}
FUNCTIONS = [
    name
    for name, resource in load_template()["Resources"].items()
    if resource["Type"] == "AWS::Serverless::Function"
]


@pytest.mark.parametrize("tracing", ["PassThrough", "Active"])
@pytest.mark.parametrize("function", FUNCTIONS)
def test_a_function_writes_only_its_own_log_group_and_traces_only_when_tracing(
    function: str, tracing: str
) -> None:
    """SAM attaches AWSLambdaBasicExecutionRole (logs on "*") and AWSXrayWriteOnlyAccess
    to every function's role. With the role's own statements, a function (SerializeImage
    parses what strangers upload) may write its own log group and no other, and X-Ray
    only with TracingMode=Active."""
    template = load_template()
    values = effective_parameters(template, {"TracingMode": tracing})
    cfn = transformed()
    resolve = Resolver(cfn, values)
    role = resolve(cfn["Resources"][f"{function}Role"]["Properties"])
    attached = role.get("ManagedPolicyArns", [])
    assert set(attached) <= set(MANAGED_GRANTS), f"{function}: a managed policy no test judges"
    statements = role_statements(resolve, f"{function}Role") + [
        MANAGED_GRANTS[arn] for arn in attached
    ]
    group = cfn["Resources"][function]["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
    own = str(resolve({"Fn::GetAtt": [group, "Arn"]})).removesuffix(":*")
    stream = f"{own}:log-stream:2026/12/07/[$LATEST]0123456789abcdef"
    assert decide(statements, Request("logs:CreateLogStream", own)) == ALLOW
    assert decide(statements, Request("logs:PutLogEvents", stream)) == ALLOW
    other = own.rsplit(":log-group:", 1)[0] + ":log-group:/aws/lambda/payroll"
    for action, resource in (
        ("logs:CreateLogGroup", other),
        ("logs:CreateLogStream", other),
        ("logs:PutLogEvents", f"{other}:log-stream:x"),
    ):
        assert decide(statements, Request(action, resource)) != ALLOW, (action, resource)
    tracing_allowed = decide(statements, Request("xray:PutTraceSegments", "*")) == ALLOW
    assert tracing_allowed is (tracing == "Active")
