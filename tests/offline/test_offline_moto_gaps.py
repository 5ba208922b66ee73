"""moto's known gaps, checked on a raw deployment (no filling), in-process.

Kept apart from the running-stack tests: ``mock_aws`` resets moto's global
state when it exits, which would wipe a stack running in the same process.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from scones.offline.deploy import transform
from scones.offline.gaps import package_state_machines
from scones.offline.packaging import package_template
from scones.template_params import PROJECT_ROOT, load_template
from tests.conftest import express_machine


def cfn_template() -> dict[str, Any]:
    template = load_template()
    packaged, _ = package_template(template, PROJECT_ROOT, "artifacts")
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="artifacts")
        definitions = package_state_machines(packaged, PROJECT_ROOT, s3, "artifacts")
    return {"cfn": transform(packaged, "us-east-1"), "definitions": definitions}


def _create_raw_stack(built: dict[str, Any]) -> dict[str, str]:
    """Create the transformed template in moto as it is (inside ``mock_aws``); physical ids."""
    cfn = boto3.client("cloudformation", region_name="us-east-1")
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="artifacts")
    for key, data in _artifacts():
        s3.put_object(Bucket="artifacts", Key=key, Body=data)
    template = dict(built["cfn"])
    # moto cannot take the layer Ref at all; leave layers out to see the rest.
    for resource in template["Resources"].values():
        resource.get("Properties", {}).pop("Layers", None)
    cfn.create_stack(
        StackName="raw", TemplateBody=json.dumps(template), Capabilities=["CAPABILITY_IAM"]
    )
    return {
        r["LogicalResourceId"]: r["PhysicalResourceId"]
        for r in cfn.list_stack_resources(StackName="raw")["StackResourceSummaries"]
    }


def test_moto_still_drops_what_the_deployment_fills(monkeypatch: pytest.MonkeyPatch) -> None:
    """When this fails, a moto upgrade closed a gap: drop that part of scones.offline.gaps."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    built = cfn_template()
    with mock_aws():
        resources = _create_raw_stack(built)
        s3 = boto3.client("s3", region_name="us-east-1")
        bucket = resources["ImageBucket"]
        assert "QueueConfigurations" not in s3.get_bucket_notification_configuration(Bucket=bucket)
        with pytest.raises(s3.exceptions.ClientError, match="NoSuchLifecycleConfiguration"):
            s3.get_bucket_lifecycle_configuration(Bucket=bucket)
        table = resources["ResultsTable"]
        pitr = boto3.client("dynamodb", region_name="us-east-1").describe_continuous_backups(
            TableName=table
        )["ContinuousBackupsDescription"]["PointInTimeRecoveryDescription"]
        assert pitr["PointInTimeRecoveryStatus"] == "DISABLED"
        ttl = boto3.client("dynamodb", region_name="us-east-1").describe_time_to_live(
            TableName=resources["MonitorStateTable"]
        )["TimeToLiveDescription"]
        assert ttl["TimeToLiveStatus"] == "DISABLED"
        assert (
            boto3.client("cloudwatch", region_name="us-east-1").describe_alarms()["MetricAlarms"]
            == []
        )
        # The alert key is created and rotated, but its policy is stored as an object, so
        # GetKeyPolicy returns no policy text (gaps fills it with PutKeyPolicy).
        kms = boto3.client("kms", region_name="us-east-1")
        key = resources["AlertTopicKey"]
        assert kms.get_key_rotation_status(KeyId=key)["KeyRotationEnabled"] is True
        assert not isinstance(kms.get_key_policy(KeyId=key, PolicyName="default")["Policy"], str)
        # The topic keeps its key, but AWS::SNS::TopicPolicy is ignored: SNS's default policy.
        sns = boto3.client("sns", region_name="us-east-1")
        topic = sns.get_topic_attributes(TopicArn=resources["AlertTopic"])["Attributes"]
        assert topic["KmsMasterKeyId"].endswith(key)
        assert "cloudwatch.amazonaws.com" not in topic["Policy"]
        assert "AlertTopicPolicy" not in resources and "DeadLetterQueuePolicy" not in resources
        # The explicit event source mapping is kept as written (the offline poller reads it).
        [mapping] = boto3.client("lambda", region_name="us-east-1").list_event_source_mappings()[
            "EventSourceMappings"
        ]
        assert mapping["BatchSize"] == 10
        assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert mapping["EventSourceArn"].endswith(resources["IngestQueue"].rsplit("/", 1)[-1])


def test_moto_cloudformation_still_drops_bucket_versioning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When this fails, moto keeps VersioningConfiguration: drop the "bucket versioning" gap."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    built = cfn_template()
    bucket_props = built["cfn"]["Resources"]["ImageBucket"]["Properties"]
    assert bucket_props["VersioningConfiguration"] == {"Status": "Enabled"}
    with mock_aws():
        bucket = _create_raw_stack(built)["ImageBucket"]
        s3 = boto3.client("s3", region_name="us-east-1")
        assert "Status" not in s3.get_bucket_versioning(Bucket=bucket)
        assert "VersionId" not in s3.put_object(Bucket=bucket, Key="incoming/a.png", Body=b"a")


def _queued_s3_events(bucket: str, versioned: bool) -> list[dict[str, Any]]:
    """Put one object into a new bucket that notifies a queue; the object parts of its events."""
    s3 = boto3.client("s3", region_name="us-east-1")
    sqs = boto3.client("sqs", region_name="us-east-1")
    queue = sqs.create_queue(QueueName=f"{bucket}-events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    s3.create_bucket(Bucket=bucket)
    if versioned:
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]
        },
    )
    put = s3.put_object(Bucket=bucket, Key="incoming/a.png", Body=b"a")
    objects = []
    for message in sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]:
        for record in json.loads(message["Body"]).get("Records", []):  # not the s3:TestEvent
            objects.append({**record["s3"]["object"], "put_version": put.get("VersionId")})
    return objects


def test_moto_s3_events_still_lack_the_version_id_and_the_fix_adds_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When the first half fails, moto sends ``versionId`` itself: drop s3_event_fixes."""
    from scones.offline import s3_event_fixes

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        [raw] = _queued_s3_events("raw-versioned", versioned=True)
    assert raw["put_version"]  # PutObject answered with a version id...
    assert "versionId" not in raw  # ...that the notification leaves out.

    s3_event_fixes.install()
    try:
        with mock_aws():
            [fixed] = _queued_s3_events("fixed-versioned", versioned=True)
            [plain] = _queued_s3_events("fixed-plain", versioned=False)
    finally:
        s3_event_fixes.uninstall()
    assert fixed["versionId"] == fixed["put_version"]
    assert plain["put_version"] is None and "versionId" not in plain  # as AWS: none to send


def _artifacts() -> list[tuple[str, bytes]]:
    _, artifacts = package_template(load_template(), PROJECT_ROOT, "artifacts")
    return [(a.key, a.data) for a in artifacts]


def _start_time_execution() -> dict[str, Any]:
    import time

    sfn = boto3.client("stepfunctions", region_name="us-east-1")
    definition = {
        "StartAt": "P",
        "States": {
            "P": {
                "Type": "Pass",
                "Parameters": {"t.$": "$$.Execution.StartTime", "e.$": "$$.State.EnteredTime"},
                "End": True,
            }
        },
    }
    arn = sfn.create_state_machine(
        name="start-time",
        roleArn="arn:aws:iam::123456789012:role/x",
        definition=json.dumps(definition),
    )["stateMachineArn"]
    execution = sfn.start_execution(stateMachineArn=arn, name="n1", input="{}")["executionArn"]
    for _ in range(600):  # 30 s: a loaded machine may run the interpreter's threads late
        described = sfn.describe_execution(executionArn=execution)
        if described["status"] != "RUNNING":
            return dict(described)
        time.sleep(0.05)
    raise AssertionError("execution did not finish")


def test_moto_start_time_is_still_a_datetime_and_the_fix_makes_it_aws_shaped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When the first half fails, moto fixed ``$$.Execution.StartTime``: drop interpreter_fixes."""
    import re

    from scones.offline import interpreter_fixes

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with (
        mock_aws(config={"stepfunctions": {"execute_state_machine": True}}),
        pytest.raises(TypeError, match="datetime is not JSON serializable"),
    ):
        _start_time_execution()
    interpreter_fixes.install()
    try:
        with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
            described = _start_time_execution()
    finally:
        interpreter_fixes.uninstall()
    assert described["status"] == "SUCCEEDED"
    output = json.loads(described["output"])
    aws_form = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z"
    assert re.fullmatch(aws_form, output["t"]), output
    assert re.fullmatch(aws_form, output["e"]), output


def _raw_then_fixed(
    name: str, definition: dict[str, Any], run: Callable[[Any, str], Any]
) -> list[Any]:
    """``run(sfn, state_machine_arn)`` in a fresh moto, first as moto is, then with
    ``interpreter_fixes`` installed."""
    from scones.offline import interpreter_fixes

    results = []
    for fixed in (False, True):
        if fixed:
            interpreter_fixes.install()
        try:
            with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
                sfn = boto3.client("stepfunctions", region_name="us-east-1")
                arn = sfn.create_state_machine(
                    name=name,
                    roleArn="arn:aws:iam::123456789012:role/x",
                    definition=json.dumps(definition),
                )["stateMachineArn"]
                results.append(run(sfn, arn))
        finally:
            interpreter_fixes.uninstall()
    return results


def test_moto_state_entered_time_is_still_python_isoformat_and_the_fix_makes_it_aws_shaped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When the first half fails, moto writes ``$$.State.EnteredTime`` as AWS does: drop the
    EnteredTime fix in interpreter_fixes."""
    import re

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    definition = {
        "StartAt": "P",
        "States": {
            "P": {"Type": "Pass", "Parameters": {"e.$": "$$.State.EnteredTime"}, "End": True}
        },
    }
    outputs = _raw_then_fixed(
        "entered-time",
        definition,
        lambda sfn, arn: _wait(sfn, sfn.start_execution(stateMachineArn=arn, name="n")),
    )
    raw, fixed_output = (json.loads(o["output"])["e"] for o in outputs)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00", raw), raw
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z", fixed_output), fixed_output


def test_moto_still_names_an_unnamed_execution_none_and_the_fix_gives_it_a_uuid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When the first half fails, moto names executions started without a name as AWS
    does: drop the naming fix in interpreter_fixes."""
    import re

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")

    def start_two(sfn: Any, arn: str) -> list[str]:
        try:
            started = [
                sfn.start_execution(stateMachineArn=arn, input=json.dumps({"n": n}))
                for n in range(2)
            ]
        except ClientError as exc:
            return [str(exc)]
        return [a["executionArn"].rsplit(":", 1)[-1] for a in started]

    definition = {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}
    raw, named = _raw_then_fixed("unnamed", definition, start_two)
    assert "ExecutionAlreadyExists" in raw[-1] and "execution:unnamed:None" in raw[-1], raw
    assert len(set(named)) == 2
    assert all(re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", n) for n in named)


def _wait(sfn: Any, started: dict[str, Any]) -> dict[str, Any]:
    import time

    for _ in range(600):  # 30 s: a loaded machine may run the interpreter's threads late
        described = sfn.describe_execution(executionArn=started["executionArn"])
        if described["status"] != "RUNNING":
            return dict(described)
        time.sleep(0.05)
    raise AssertionError("execution did not finish")


def test_moto_still_copies_whatever_copy_source_if_match_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When this fails, moto honours CopySourceIfMatch: the review's HeadObject(IfMatch)
    before its copy (``scones_core.review.ReviewService._copy``) can go; AWS refuses the
    copy itself with 412 PreconditionFailed."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="uploads")
        s3.put_object(Bucket="uploads", Key="incoming/a.png", Body=b"newer bytes")
        s3.copy_object(
            Bucket="uploads",
            Key="labelled/a.png",
            CopySource={"Bucket": "uploads", "Key": "incoming/a.png"},
            CopySourceIfMatch='"an-etag-the-object-does-not-have"',
        )
        assert (
            s3.get_object(Bucket="uploads", Key="labelled/a.png")["Body"].read() == b"newer bytes"
        )
        # HeadObject's IfMatch is honoured, which is what the review checks first.
        with pytest.raises(ClientError, match="412"):
            s3.head_object(Bucket="uploads", Key="incoming/a.png", IfMatch='"other"')


def test_moto_still_answers_an_empty_primary_container_for_a_multi_container_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When this fails, moto leaves PrimaryContainer out as AWS does. Until then an executed
    retraining run cannot show what its absence does, so ``scones.asl_check`` refuses any
    ResultSelector that selects an optional member (States.Runtime, which no Catch takes)
    and the retraining ASL keeps DescribeModel's answer whole."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        sagemaker = boto3.client("sagemaker", region_name="us-east-1")
        sagemaker.create_model(
            ModelName="pipeline",
            ExecutionRoleArn="arn:aws:iam::123456789012:role/sagemaker",
            Containers=[
                {"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/pre:1"},
                {"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/model:1"},
            ],
        )
        described = sagemaker.describe_model(ModelName="pipeline")
        assert described["PrimaryContainer"] == {}
        assert len(described["Containers"]) == 2


def _key_per_listed_object(bucket: str, **reader: Any) -> dict[str, Any]:
    """A Distributed Map whose children answer each listed object's key; ``reader`` holds
    the item reader's prefix parameter, any other keyword another field of the Map."""
    prefix = {k: v for k, v in reader.items() if k.startswith("Prefix")}
    others = {k: v for k, v in reader.items() if not k.startswith("Prefix")}
    return {
        "StartAt": "EachObject",
        "States": {
            "EachObject": {
                "Type": "Map",
                "ItemReader": {
                    "Resource": "arn:aws:states:::s3:listObjectsV2",
                    "Parameters": {"Bucket": bucket, **prefix},
                },
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                    "StartAt": "Key",
                    "States": {"Key": {"Type": "Pass", "OutputPath": "$.Key", "End": True}},
                },
                **others,
                "End": True,
            }
        },
    }


def _finished(sfn: Any, started: dict[str, Any]) -> dict[str, Any]:
    """The execution's description once it stops running (five minutes at most)."""
    import time

    deadline = time.monotonic() + 300
    while (described := sfn.describe_execution(executionArn=started["executionArn"]))[
        "status"
    ] == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.2)
    return dict(described)


def test_moto_item_reader_still_reads_one_page_and_fails_on_none_and_the_fix_lists_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When the first half fails, moto's Distributed Map lists a prefix as AWS does: drop
    the item reader fix in interpreter_fixes. Without it a backfill of more than 1,000
    objects classified the first 1,000 and succeeded, and one of an empty prefix failed."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    bucket, listed = "listing", 1001
    definition = _key_per_listed_object(bucket, **{"Prefix.$": "$.prefix"})

    def run(sfn: Any, arn: str) -> list[dict[str, Any]]:
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=bucket)
        for index in range(listed):
            s3.put_object(Bucket=bucket, Key=f"in/{index:04d}.png", Body=b"")
        results = []
        for prefix in ("in/", "none/"):
            started = sfn.start_execution(
                stateMachineArn=arn, name=prefix.strip("/"), input=json.dumps({"prefix": prefix})
            )
            results.append(_finished(sfn, started))
        return results

    (raw_all, raw_none), (fixed_all, fixed_none) = _raw_then_fixed("listing", definition, run)
    assert raw_all["status"] == "SUCCEEDED" and len(json.loads(raw_all["output"])) == 1000
    assert raw_none["status"] == "FAILED" and "Contents" in raw_none.get("cause", "")
    assert fixed_all["status"] == "SUCCEEDED"
    assert json.loads(fixed_all["output"]) == [f"in/{index:04d}.png" for index in range(listed)]
    assert fixed_none["status"] == "SUCCEEDED" and json.loads(fixed_none["output"]) == []


def test_moto_still_lets_states_all_catch_states_runtime_and_the_fix_fails_as_aws_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When the first half fails, moto's ``States.ALL`` no longer catches ``States.Runtime``
    (a path that finds nothing), as AWS's never does: drop the ErrorEquals fix in
    interpreter_fixes. With the fix the execution fails, as it does on AWS."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    caught = {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Caught"}
    definition = {
        "StartAt": "Send",
        "States": {
            "Send": {
                "Type": "Task",
                "Resource": "arn:aws:states:::sqs:sendMessage",
                "Parameters": {"QueueUrl.$": "$.queue", "MessageBody.$": "$.missing"},
                "Retry": [{"ErrorEquals": ["States.ALL"], "MaxAttempts": 2, "IntervalSeconds": 1}],
                "Catch": [caught],
                "End": True,
            },
            "Caught": {"Type": "Pass", "End": True},
        },
    }

    def run(sfn: Any, arn: str) -> dict[str, Any]:
        queue = boto3.client("sqs", region_name="us-east-1").create_queue(QueueName="q")
        started = sfn.start_execution(
            stateMachineArn=arn, name="runtime", input=json.dumps({"queue": queue["QueueUrl"]})
        )
        return _wait(sfn, started)

    raw, fixed = _raw_then_fixed("runtime", definition, run)
    assert raw["status"] == "SUCCEEDED"
    assert json.loads(raw["output"])["error"]["Error"] == "States.Runtime"
    assert fixed["status"] == "FAILED"
    assert fixed["error"] == "States.Runtime"


def test_moto_still_takes_the_default_on_a_choice_of_a_missing_path_and_the_fix_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When the first half fails, moto's Choice no longer reads a missing ``Variable`` as
    false: drop the comparison fix in interpreter_fixes. With the fix the execution fails
    with ``States.Runtime``, as on AWS; ``IsPresent``, and ``And`` after it, still ask."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    definition = {
        "StartAt": "Asked",
        "States": {
            "Asked": {
                "Type": "Choice",
                "Choices": [
                    {
                        "And": [
                            {"Variable": "$.missing", "IsPresent": True},
                            {"Variable": "$.missing", "StringEquals": "x"},
                        ],
                        "Next": "Done",
                    }
                ],
                "Default": "Compare",
            },
            "Compare": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.missing", "StringEquals": "x", "Next": "Done"}],
                "Default": "Done",
            },
            "Done": {"Type": "Pass", "End": True},
        },
    }

    def run(sfn: Any, arn: str) -> dict[str, Any]:
        result = _wait(sfn, sfn.start_execution(stateMachineArn=arn, name="choice", input="{}"))
        events = sfn.get_execution_history(executionArn=result["executionArn"])["events"]
        entered = [
            e["stateEnteredEventDetails"]["name"]
            for e in events
            if e["type"].endswith("StateEntered")
        ]
        return {**result, "entered": entered}

    raw, fixed = _raw_then_fixed("choice", definition, run)
    assert raw["status"] == "SUCCEEDED" and raw["entered"] == ["Asked", "Compare", "Done"]
    assert (fixed["status"], fixed["error"]) == ("FAILED", "States.Runtime")
    assert "$.missing" in fixed["cause"]
    assert fixed["entered"] == ["Asked", "Compare"]  # the And asked first: no failure there


def _one_sagemaker_task(api: str, parameters: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A definition of one ``aws-sdk:sagemaker`` task (``fields`` added to it), and a
    ``Caught`` state for its ``Catch``."""
    task = {
        "Type": "Task",
        "Resource": f"arn:aws:states:::aws-sdk:sagemaker:{api}",
        "Parameters": parameters,
        **fields,
        "End": True,
    }
    return {
        "StartAt": "Describe",
        "States": {"Describe": task, "Caught": {"Type": "Pass", "End": True}},
    }


def test_moto_still_misnames_a_sagemaker_error_and_the_fix_names_it_as_aws_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When the first half fails, moto names an ``aws-sdk:sagemaker`` task's error as AWS
    does: drop the SageMaker binding in interpreter_fixes. With it, the retraining
    definition's ``SageMaker.SageMakerException`` retries match, as on AWS."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    definition = _one_sagemaker_task(
        "describeModel",
        {"ModelName": "no-such-model"},
        Catch=[{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Caught"}],
    )

    def run(sfn: Any, arn: str) -> str:
        started = sfn.start_execution(stateMachineArn=arn, name="describe", input="{}")
        return str(json.loads(_wait(sfn, started)["output"])["error"]["Error"])

    raw, fixed = _raw_then_fixed("sagemaker-error", definition, run)
    assert raw == "sagemaker.sagemakerException"
    assert fixed == "SageMaker.SageMakerException"


def test_moto_still_hands_an_sdk_result_its_datetimes_and_the_fix_writes_them_as_aws(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When the first half fails, moto's ``aws-sdk`` results carry times as text, as AWS's
    do: drop the result-time fix in interpreter_fixes. With it, a state that keeps a whole
    description (the retraining definition's ``CheckDeployment``) runs offline."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    definition = _one_sagemaker_task(
        "describeModelPackageGroup",
        {"ModelPackageGroupName": "models"},
        ResultSelector={"whole.$": "$"},
    )

    def run(sfn: Any, arn: str) -> str:
        boto3.client("sagemaker", region_name="us-east-1").create_model_package_group(
            ModelPackageGroupName="models"
        )
        started = sfn.start_execution(stateMachineArn=arn, name="describe", input="{}")
        try:
            finished = _wait(sfn, started)
        except TypeError as exc:  # moto cannot even encode the execution's output
            return str(exc)
        return str(json.loads(finished["output"])["whole"]["CreationTime"])

    raw, fixed = _raw_then_fixed("sdk-times", definition, run)
    assert raw == "Object of type datetime is not JSON serializable"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z", fixed), fixed


def test_moto_result_writer_still_writes_a_manifest_without_result_files(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When this fails, moto's Distributed Map ResultWriter writes its result files as AWS
    does (``SUCCEEDED_0.json``, ``FAILED_0.json``, listed in the manifest): say so in
    docs/offline.md and test ``scones backfill``'s naming of failed batches end to end.
    Until then offline a backfill's manifest lists no result files, and the Map's output,
    ``MapRunArn`` and ``ResultWriterDetails``, is AWS's."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    bucket = "results"
    writer = {
        "Resource": "arn:aws:states:::s3:putObject",
        "Parameters": {"Bucket": bucket, "Prefix": "out/"},
    }
    definition = _key_per_listed_object(bucket, Prefix="in/", ResultWriter=writer)

    def run(sfn: Any, arn: str) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=bucket)
        for index in range(3):
            s3.put_object(Bucket=bucket, Key=f"in/{index}.png", Body=b"")
        described = _finished(sfn, sfn.start_execution(stateMachineArn=arn, input="{}"))
        output = json.loads(described["output"])
        details = output["ResultWriterDetails"]
        written = json.loads(s3.get_object(Bucket=bucket, Key=details["Key"])["Body"].read())
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="out/")["Contents"]]
        return output, written, keys

    for output, written, keys in _raw_then_fixed("writer", definition, run):
        assert set(output) == {"MapRunArn", "ResultWriterDetails"}
        assert output["ResultWriterDetails"]["Key"].endswith("/manifest.json")
        assert written["ResultFiles"] == {"FAILED": [], "PENDING": [], "SUCCEEDED": []}
        assert keys == [output["ResultWriterDetails"]["Key"]]


def test_moto_still_reads_an_indexed_path_as_a_list_so_the_asl_uses_array_get_item(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On AWS ``$.a[0].b`` is the number; moto's interpreter gives ``[3]``, so the
    retraining ASL picks production's variant with ``States.ArrayGetItem`` (both read it
    the same). When the first half fails, ``PickProductionVariant`` may become a path."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    definition = {
        "StartAt": "P",
        "States": {
            "P": {
                "Type": "Pass",
                "Parameters": {
                    "indexed.$": "$.v[0].c",
                    "picked.$": "States.ArrayGetItem($.v, 0)",
                },
                "End": True,
            }
        },
    }
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        sfn = boto3.client("stepfunctions", region_name="us-east-1")
        arn = sfn.create_state_machine(
            name="indexed",
            definition=json.dumps(definition),
            roleArn="arn:aws:iam::123456789012:role/sfn",
        )["stateMachineArn"]
        started = sfn.start_execution(stateMachineArn=arn, input=json.dumps({"v": [{"c": 3}]}))
        output = json.loads(_wait(sfn, started)["output"])
    assert output == {"indexed": [3], "picked": {"c": 3}}


def test_moto_still_takes_what_aws_refuses_so_asl_check_refuses_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A States.Format with an argument left over (AWS: "There must be as many remaining
    arguments in the Invocation as there are occurrences of {}") and a catcher after the
    one naming States.ALL (the ASL specification: it "MUST appear in the last" one) are
    created and run by moto, with or without ``interpreter_fixes``. When this fails, moto
    refuses one of them too; ``scones.asl_check`` refuses both either way."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    from scones.asl_check import check_definition

    definition = {
        "StartAt": "Describe",
        "States": {
            "Describe": {
                "Type": "Pass",
                "Parameters": {"reason.$": "States.Format('stopped with {}', $.error, $.cause)"},
                "Next": "Send",
            },
            "Send": {
                "Type": "Task",
                "Resource": "arn:aws:states:::sqs:sendMessage",
                "Parameters": {"QueueUrl": "https://sqs.us-east-1.amazonaws.com/1/none"},
                "Catch": [
                    {"ErrorEquals": ["States.ALL"], "ResultPath": "$.caught", "Next": "Done"},
                    {"ErrorEquals": ["SQS.SdkClientException"], "Next": "Done"},
                ],
                "End": True,
            },
            "Done": {"Type": "Pass", "End": True},
        },
    }

    def run(sfn: Any, arn: str) -> dict[str, Any]:
        started = sfn.start_execution(
            stateMachineArn=arn, input=json.dumps({"error": "E", "cause": "C"})
        )
        return _wait(sfn, started)

    for result in _raw_then_fixed("aws-refuses", definition, run):
        assert result["status"] == "SUCCEEDED"
        output = json.loads(result["output"])
        assert output["reason"] == "stopped with E"  # $.cause dropped without a word
        assert "Error" in output["caught"]  # the first catcher took it
    assert len(check_definition(json.dumps(definition), {})) == 2


def _until_done_or_stalled(sfn: Any, started: dict[str, Any], stall_s: float = 10) -> str:
    """The execution's status once it stops running, or RUNNING once nothing has moved in
    it (its history, its Map Run's counts) for ``stall_s``: a Map whose worker died."""
    import time

    arn = started["executionArn"]
    seen: Any = None
    moved = time.monotonic()
    while (status := sfn.describe_execution(executionArn=arn)["status"]) == "RUNNING":
        try:
            runs = sfn.list_map_runs(executionArn=arn)["mapRuns"]
            history = sfn.get_paginator("get_execution_history").paginate(executionArn=arn)
            progress = (
                sum(len(page["events"]) for page in history),
                [sfn.describe_map_run(mapRunArn=r["mapRunArn"])["itemCounts"] for r in runs],
            )
        except AttributeError:
            # moto drops an execution's worker as it ends, and ListMapRuns then reads None:
            # it ended between the two calls, which the next status says.
            time.sleep(0.5)
            continue
        if progress != seen:
            seen, moved = progress, time.monotonic()
        elif time.monotonic() - moved > stall_s:
            break
        time.sleep(0.5)
    return str(status)


@pytest.mark.parametrize(
    "processor",
    [{"Mode": "INLINE"}, {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}],
    ids=["inline", "distributed"],
)
def test_moto_map_workers_still_recurse_per_item_and_the_fix_takes_any_number(
    monkeypatch: pytest.MonkeyPatch, processor: dict[str, str]
) -> None:
    """When the first half fails, moto's Map workers take their items in a loop: drop the
    worker fix in interpreter_fixes. Without it a worker died of RecursionError after about
    960 items and its Map hung RUNNING: a backfill of more than about 4,800 objects never
    ended and left the rest unclassified."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    items = 1100
    definition = {
        "StartAt": "Each",
        "States": {
            "Each": {
                "Type": "Map",
                "ItemsPath": "$.items",
                "MaxConcurrency": 1,  # one worker takes every item
                "ItemProcessor": {
                    "ProcessorConfig": processor,
                    "StartAt": "Same",
                    "States": {"Same": {"Type": "Pass", "End": True}},
                },
                "ResultSelector": {"items.$": "States.ArrayLength($)"},
                "End": True,
            }
        },
    }

    def run(sfn: Any, arn: str) -> tuple[str, Any]:
        started = sfn.start_execution(
            stateMachineArn=arn, input=json.dumps({"items": list(range(items))})
        )
        status = _until_done_or_stalled(sfn, started)
        output = sfn.describe_execution(executionArn=started["executionArn"]).get("output")
        return status, json.loads(output) if output else None

    raw, fixed = _raw_then_fixed("workers", definition, run)
    assert raw == ("RUNNING", None)
    assert fixed == ("SUCCEEDED", {"items": items})


def test_moto_still_lacks_start_sync_execution_and_the_fix_runs_express_as_aws_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When the first assertion fails, moto answers StartSyncExecution itself: drop
    ``sync_executions``. The fix answers each run when it ends, with AWS's fields; runs a
    repeated name again (Express keeps no names); and refuses a Standard machine."""
    from scones.offline import sync_executions

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        **sync_executions.HOST_PREFIX_ENVIRONMENT,
    }.items():
        monkeypatch.setenv(name, value)
    failing = {
        "StartAt": "Check",
        "States": {
            "Check": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.ok", "BooleanEquals": True, "Next": "Done"}],
                "Default": "Broken",
            },
            "Done": {"Type": "Pass", "Result": {"done": True}, "End": True},
            "Broken": {"Type": "Fail", "Error": "Broken", "Cause": "not ok"},
        },
    }
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        sfn = boto3.client("stepfunctions", region_name="us-east-1")
        role = "arn:aws:iam::123456789012:role/sfn"
        express = sfn.create_state_machine(
            name="express", definition=json.dumps(failing), roleArn=role, type="EXPRESS"
        )["stateMachineArn"]
        standard = sfn.create_state_machine(
            name="standard", definition=json.dumps(failing), roleArn=role
        )["stateMachineArn"]
        with pytest.raises(NotImplementedError, match="start_sync_execution"):
            sfn.start_sync_execution(stateMachineArn=express, name="a", input="{}")
        sync_executions.install()
        try:
            ran = sfn.start_sync_execution(stateMachineArn=express, name="a", input='{"ok":true}')
            again = sfn.start_sync_execution(stateMachineArn=express, name="a", input='{"ok":true}')
            failed = sfn.start_sync_execution(stateMachineArn=express, name="b", input="{}")
            with pytest.raises(ClientError, match="StateMachineTypeNotSupported"):
                sfn.start_sync_execution(stateMachineArn=standard, name="c", input="{}")
        finally:
            sync_executions.uninstall()
    assert (ran["status"], json.loads(ran["output"]), ran["name"]) == (
        "SUCCEEDED",
        {"done": True},
        "a",
    )
    assert ran["stopDate"] >= ran["startDate"] and json.loads(ran["input"]) == {"ok": True}
    assert again["status"] == "SUCCEEDED" and again["startDate"] >= ran["stopDate"]
    assert (failed["status"], failed["error"], failed["cause"]) == ("FAILED", "Broken", "not ok")
    assert "output" not in failed
    assert not sync_executions.is_installed()


def test_a_sync_run_that_lasts_expresss_limit_is_stopped_and_answered_timed_out(
    express_moto: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """moto's interpreter never stops an Express execution; the offline StartSyncExecution
    does at Express's 5 minutes (1 s here), as AWS would, so a start function waiting on a
    run that hangs gets TIMED_OUT and sends its batch back."""
    from scones.offline import sync_executions

    monkeypatch.setattr(sync_executions, "run_limit_seconds", 1.0)
    hanging = {"StartAt": "Wait", "States": {"Wait": {"Type": "Wait", "Seconds": 30, "End": True}}}
    sfn = boto3.client("stepfunctions", region_name="us-east-1")

    run = sfn.start_sync_execution(stateMachineArn=express_machine(hanging), name="a", input="{}")

    assert (run["status"], run["error"]) == ("TIMED_OUT", "States.Timeout")
    assert "output" not in run and run["stopDate"] > run["startDate"]
