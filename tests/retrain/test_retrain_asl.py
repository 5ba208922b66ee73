"""The real retraining ASL: its SageMaker requests validated by botocore's Stubber, and the
definition executed by moto's interpreter as far as moto can run it.

What moto's interpreter cannot do, and so what these tests do not execute:

* ``arn:aws:states:::sagemaker:createTrainingJob.sync`` and ``createProcessingJob.sync``:
  moto lists ``sagemaker`` among its unsupported optimized integrations, so the
  execution from the start fails at TrainCandidate (tested: a FAILED item and an alert);
* ``aws-sdk:sagemaker:updateEndpoint``: moto has no UpdateEndpoint (tested: the run from
  the gate registers, creates model and endpoint config in moto, checks production again,
  then fails there).

The states after those are run as sub-machines: the same deployed definition with
``StartAt`` moved to JudgeCandidate or CheckDeployment and the state those steps would
have produced as input. ``scones retrain`` runs the whole sequence offline.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore import xform_name
from botocore.exceptions import ParamValidationError
from botocore.stub import Stubber
from moto.s3.exceptions import S3AccessDeniedError
from moto.sns.exceptions import SNSException
from scones_core.retraining.dataset import RunNames
from scones_core.retraining.gate import CANDIDATE_BASELINE_FILE
from scones_core.retraining.outcome import (
    ALERT_STATES,
    FAILED,
    NOTIFICATION_FAILED,
    PROMOTED,
    REJECTED,
    ROLLED_BACK,
    SUBJECTS,
    alert_subject,
)
from scones_core.training_split import min_images_per_class

from scones.asl_check import substitute
from scones.offline.stack import OfflineStack, StackOptions
from scones.sagemaker.source_bundle import PROGRAM
from scones.template_params import PROJECT_ROOT, load_template, parameter_defaults
from tests.workflow.test_workflow_template import sample_substitutions, state_machines

# The moto tests share one offline stack (one per process): keep the module on one worker.
pytestmark = [pytest.mark.xdist_group("retrain-asl-stack")]

ACCOUNT = "123456789012"
STARTED = "2026-12-01T12:30:05Z"


def definition(substitutions: dict[str, str] | None = None) -> dict[str, Any]:
    properties = state_machines()["RetrainingStateMachine"]
    text = (PROJECT_ROOT / properties["DefinitionUri"]).read_text()
    values = sample_substitutions(properties)
    values.update(
        {
            "TrainingImageUri": f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2",
            "ModelImageUri": f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/scones-serve:1",
            "RetrainingSageMakerRoleArn": f"arn:aws:iam::{ACCOUNT}:role/scones-retraining",
            "SourceBundleUri": "s3://bucket/retraining/code/sourcedir.tar.gz",
            "GateDataUri": "s3://bucket/training/gate/",
            "DataCaptureUri": "s3://bucket/datacapture",
            "ModelPackageGroupName": "scones-models",
            "Region": "us-east-1",
            **(substitutions or {}),
        }
    )
    return dict(json.loads(substitute(text, values)))


def sample_state(bucket: str = "bucket", endpoint: str = "scones-bicycle-motorcycle") -> dict:
    base = RunNames.for_run(endpoint, datetime(2026, 12, 1, 12, 30, 5, tzinfo=UTC), "sample-run")
    run_prefix = f"s3://{bucket}/retraining/{base.base}"
    return {
        "run": {
            "endpoint_name": endpoint,
            "run_name": "scones-bicycle-motorcycle-retrain-20261201-1200",
            "execution_arn": f"arn:aws:states:us-east-1:{ACCOUNT}:execution:retrain:run",
            "started_at": STARTED,
            # As Prepare names them from the template's defaults (the canary's, then the
            # serving count a promotion returns to).
            "instances": {"serving": 1, "canary": 2},
            "instance_type": "ml.m5.large",
        },
        "production": {"endpoint_config_name": "scones-config-1"},
        "production_config": {"variant": {"ModelName": "scones-model-1"}},
        "production_model": {"model_data_url": f"s3://{bucket}/models/production/model.tar.gz"},
        # A model made from a model package names the package, not an artifact.
        "production_model_description": {
            "PrimaryContainer": {
                "ModelPackageName": f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:model-package/"
                "scones-models/1"
            }
        },
        "dataset": {
            "names": {
                "base": base.base,
                "processing_job": base.processing_job,
                "evaluation_reruns": list(base.evaluation_reruns),
                "client_token": base.client_token,
            },
            "input_data_config": [
                {
                    "ChannelName": "train",
                    "DataSource": {
                        "S3DataSource": {
                            "S3DataType": "ManifestFile",
                            "S3Uri": f"{run_prefix}/dataset/train.manifest",
                            "S3DataDistributionType": "FullyReplicated",
                        }
                    },
                    "InputMode": "File",
                }
            ],
            "training_output_uri": f"{run_prefix}/training",
            "evaluation_output_uri": f"{run_prefix}/evaluation",
            "evaluation_uri": f"{run_prefix}/evaluation/gate-evaluation.json",
            "drift_baseline_source": f"{bucket}/retraining/{base.base}/evaluation/"
            "candidate-baseline.json",
        },
        # As NameEvaluationJob names the first evaluation job.
        "evaluation_job": {
            "name": base.processing_job,
            "reruns": 0,
            "reruns_left": len(base.evaluation_reruns),
        },
        "training": {
            "job_name": base.base,
            "model_data_url": f"{run_prefix}/training/{base.base}/output/model.tar.gz",
        },
        "gate": {
            "passed": True,
            "summary": "candidate abc: accuracy 0.97 vs production 0.96; passed",
            "description": "candidate abc: accuracy 0.97 vs production 0.96; passed",
            "metadata": {"candidate_version": "abc", "gate_accuracy": "0.970000"},
        },
        "model_package": {
            "arn": f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:model-package/scones-models/1"
        },
    }


def resolve(value: Any, state: dict[str, Any]) -> Any:
    """The ``Parameters`` of a state for ``state``: ``"key.$": "$.a.b"`` paths, and
    ``States.Array`` of one path."""
    if isinstance(value, list):
        return [resolve(v, state) for v in value]
    if not isinstance(value, dict):
        return value
    resolved = {}
    for key, item in value.items():
        if key.endswith(".$"):
            array = re.fullmatch(r"States\.Array\((\$\.[\w.]+)\)", item)
            path = array.group(1) if array else item
            assert path.startswith("$.") and "(" not in path, f"{key}: {item}"
            node: Any = state
            for part in path[2:].split("."):
                node = node[part]
            resolved[key[:-2]] = [node] if array else node
        else:
            resolved[key] = resolve(item, state)
    return resolved


def minimal(shape: Any) -> Any:
    """A response with every required member filled, for the Stubber to accept."""
    if shape.type_name == "structure":
        return {name: minimal(shape.members[name]) for name in shape.required_members}
    if shape.type_name == "list":
        return [minimal(shape.member)] * shape.metadata.get("min", 0)
    if shape.type_name == "map":
        return {}
    if shape.type_name in ("integer", "long"):
        return 1
    if shape.type_name in ("float", "double"):
        return 1.0
    if shape.type_name == "boolean":
        return True
    if shape.type_name == "timestamp":
        return datetime(2026, 12, 1, tzinfo=UTC)
    if shape.enum:
        return shape.enum[0]
    return "x" * max(1, shape.metadata.get("min", 1))


def sagemaker_states(
    substitutions: dict[str, str] | None = None,
) -> dict[str, tuple[str, dict[str, Any]]]:
    """Every state that calls SageMaker: (operation, resolved request)."""
    found = {}
    for name, state in definition(substitutions)["States"].items():
        resource = state.get("Resource", "")
        for prefix in ("arn:aws:states:::sagemaker:", "arn:aws:states:::aws-sdk:sagemaker:"):
            if resource.startswith(prefix):
                api = resource[len(prefix) :].removesuffix(".sync")
                found[name] = (xform_name(api), resolve(state["Parameters"], sample_state()))
    return found


def test_every_sagemaker_request_of_the_retraining_asl_is_valid_for_botocore() -> None:
    states = sagemaker_states()
    assert set(states) == {
        "FindProductionEndpoint",
        "FindProductionConfig",
        "FindProductionModel",
        "FindProductionPackage",
        "TrainCandidate",
        "EvaluateCandidate",
        "RegisterCandidate",
        "CreateCandidateModel",
        "FindCandidateModel",
        "CreateCandidateEndpointConfig",
        "FindCandidateEndpointConfig",
        "DeployCanary",
        "CheckDeployment",
        "FindLostDeployment",
        "RecheckProduction",
        "ApproveCandidate",
        "ReturnToServingCapacity",
        "RejectRolledBackCandidate",
        "RejectFailedCandidate",
    }
    client = boto3.client("sagemaker", region_name="us-east-1")
    with Stubber(client) as stubber:
        for operation, request in states.values():
            output = client.meta.service_model.operation_model(
                client.meta.method_to_api_mapping[operation]
            ).output_shape
            stubber.add_response(operation, minimal(output), expected_params=request)
            getattr(client, operation)(**request)  # ParamValidationError if the shape is wrong
        stubber.assert_no_pending_responses()


def test_the_stubber_would_catch_a_malformed_request() -> None:
    operation, request = sagemaker_states()["DeployCanary"]
    broken = json.loads(json.dumps(request))
    broken["DeploymentConfig"]["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"][
        "CanarySize"
    ]["Value"] = "half"
    client = boto3.client("sagemaker", region_name="us-east-1")
    with Stubber(client) as stubber, pytest.raises(ParamValidationError, match="Invalid type"):
        stubber.add_response(
            operation, {"EndpointArn": "arn:aws:sagemaker:x:1:endpoint/e"}, expected_params=None
        )
        getattr(client, operation)(**broken)


def test_the_gate_job_runs_the_bundles_program_on_the_folders_it_reads() -> None:
    """The processing job's entry point, folders and the template's bundle location are
    spelled in template.yaml and the ASL, the program's in Python: each tied to its home
    (``source_bundle``, ``evaluate_entry``'s defaults), since a mismatch fails only on AWS."""
    from scones.sagemaker.evaluate_entry import build_parser
    from scones.sagemaker.source_bundle import BUNDLE_NAME, EVALUATE_PROGRAM, STACK_BUNDLE_KEY

    _, request = sagemaker_states()["EvaluateCandidate"]
    inputs = {i["InputName"]: i["S3Input"]["LocalPath"] for i in request["ProcessingInputs"]}
    defaults = build_parser().parse_args(["--threshold", "0.9"])
    assert inputs["candidate"] == str(defaults.candidate)
    assert inputs["production"] == str(defaults.production)
    assert inputs["gate"] == str(defaults.gate)
    (output,) = request["ProcessingOutputConfig"]["Outputs"]
    assert output["S3Output"]["LocalPath"] == str(defaults.out)
    script = request["AppSpecification"]["ContainerEntrypoint"][2]
    assert script.startswith(f"cd {inputs['code']} && tar -xzf {BUNDLE_NAME} && ")
    assert script.endswith(f'exec python3 {EVALUATE_PROGRAM} "$@"')
    properties = state_machines()["RetrainingStateMachine"]
    bundle = properties["DefinitionSubstitutions"]["SourceBundleUri"]["Fn::Sub"]
    assert bundle == f"s3://${{ImageBucket}}/${{RetrainingPrefix}}{STACK_BUNDLE_KEY}"


def test_the_registered_candidate_declares_what_the_model_server_accepts() -> None:
    """The model package's content types are the container's own list (serving.media)."""
    from scones.serving.app import RESPONSE_CONTENT_TYPE
    from scones.serving.media import SUPPORTED_CONTENT_TYPES

    _, request = sagemaker_states()["RegisterCandidate"]
    inference = request["InferenceSpecification"]
    assert inference["SupportedContentTypes"] == list(SUPPORTED_CONTENT_TYPES)
    assert inference["SupportedResponseMIMETypes"] == [RESPONSE_CONTENT_TYPE]


def test_the_training_job_runs_the_projects_script_with_the_assembled_channels() -> None:
    _, request = sagemaker_states()["TrainCandidate"]
    hyperparameters = request["HyperParameters"]
    assert json.loads(hyperparameters["sagemaker_program"]) == PROGRAM
    assert json.loads(hyperparameters["network"]) == "mobilenetv3-coco"
    assert request["InputDataConfig"] == sample_state()["dataset"]["input_data_config"]
    # A job failed by SageMaker's own InternalServerError is run again by SageMaker.
    assert request["RetryStrategy"] == {"MaximumRetryAttempts": 2}
    _, evaluation = sagemaker_states()["EvaluateCandidate"]
    inputs = {i["InputName"]: i["S3Input"]["S3Uri"] for i in evaluation["ProcessingInputs"]}
    assert inputs["candidate"].endswith("/output/model.tar.gz")
    assert inputs["production"] == sample_state()["production_model"]["model_data_url"]
    assert "scones_evaluate.py" in " ".join(evaluation["AppSpecification"]["ContainerEntrypoint"])
    _, deploy = sagemaker_states()["DeployCanary"]
    alarms = deploy["DeploymentConfig"]["AutoRollbackConfiguration"]["Alarms"]
    # Only the canary's own failures: LowConfidenceShare is the whole endpoint's, still high
    # from the production model whose low confidence started the retraining.
    assert [a["AlarmName"] for a in alarms] == [
        "arn:aws:example:us-east-1:123456789012:EndpointErrorAlarmName",
    ]
    policy = deploy["DeploymentConfig"]["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]
    assert policy["Type"] == "CANARY" and policy["CanarySize"]["Type"] == "CAPACITY_PERCENT"


@pytest.mark.parametrize("labels", [None, "cat,dog,bird"])
def test_the_training_job_trains_the_stacks_labels(labels: str | None) -> None:
    """The candidate answers the stack's ModelLabels in their order, or the gate (which
    compares labels) could never pass it: the program reads them as the toolkit passes them."""
    from scones.sagemaker.entry_point import build_parser, toolkit_argv

    _, request = sagemaker_states({"ModelLabels": labels} if labels else None)["TrainCandidate"]
    hyperparameters = {k: json.loads(v) for k, v in request["HyperParameters"].items()}
    argv = toolkit_argv(hyperparameters)
    args = build_parser().parse_args([*argv, "--data", ".", "--model-dir", "."])
    expected = labels or parameter_defaults()["ModelLabels"]
    assert args.labels == tuple(expected.split(","))


@pytest.mark.parametrize(
    "network", load_template()["Parameters"]["RetrainingNetwork"]["AllowedValues"]
)
def test_the_rehearsals_short_recipe_fits_every_network_retraining_may_train(
    network: str,
) -> None:
    """`scones retrain` lays its short recipe over the deployed TrainCandidate's
    hyperparameters; for each RetrainingNetwork the training program takes it (the
    from-scratch ResNet has no input side to shrink: no ``resize``)."""
    from scones.offline.retrain import OfflineRetrain, RetrainOptions

    run = OfflineRetrain(RetrainOptions())
    run.asl_states = definition({"RetrainingNetwork": network})["States"]
    assert run._training_split() == {"validation_fraction": 0.2, "members": 2}
    job = {k: json.loads(v) for k, v in run._job_hyperparameters().items()}
    assert job["network"] == network and job["recipe"] == "ensemble" and job["epochs"] == 3
    assert ("resize" in job) == (network != "resnet")


def test_every_sagemaker_call_retries_a_throttle_and_no_failed_job_is_started_again() -> None:
    """A throttled or 5xx SageMaker call would otherwise fail the run, and the next one waits
    out the cooldown (a day by default): the job-creating calls too. A job that ended
    Failed (States.TaskFailed) is not retried: its name is taken. SageMaker's own
    RetryStrategy restarts a training job that failed on the platform; an evaluation job
    that did is started again under a new name (EvaluationJobFailed, tested below)."""
    states = definition()["States"]
    calls = {n for n, s in states.items() if ":sagemaker:" in s.get("Resource", "")}
    assert {"TrainCandidate", "EvaluateCandidate"} <= calls and len(calls) == 19
    for name in calls:
        retried = {e for retry in states[name].get("Retry", []) for e in retry["ErrorEquals"]}
        assert {"SageMaker.ThrottlingException", "SageMaker.AmazonSageMakerException"} <= (
            retried
        ), name
        assert not retried & {"States.ALL", "States.TaskFailed"}, name


def test_outcomes_survive_a_throttle_and_rollback_watches_only_the_canarys_errors() -> None:
    """Every outcome write and alert retries throttling (the put is keyed by the run, so a
    retry rewrites the same item), and the canary is rolled back by its errors only."""
    states = definition()["States"]
    throttles = {
        "dynamodb:putItem": "DynamoDB.ProvisionedThroughputExceededException",
        "sns:publish": "SNS.ThrottledException",
    }
    outcomes = [name for name in states if name.startswith(("Record", "Notify", "Alert"))]
    assert len(outcomes) == 8
    for name in outcomes:
        state = states[name]
        throttle = throttles[state["Resource"].rsplit(":::", 1)[1]]
        retried = {e for retry in state["Retry"] for e in retry["ErrorEquals"]}
        assert throttle in retried, name
        assert "States.ALL" not in retried, name
    deploy = states["DeployCanary"]["Parameters"]["DeploymentConfig"]
    (alarm,) = deploy["AutoRollbackConfiguration"]["Alarms"]
    assert "EndpointError" in alarm["AlarmName"]


# ------------------------------------------------------------------ moto's interpreter
@pytest.fixture(scope="module")
def stack() -> Iterator[OfflineStack]:
    # The shortest poll the template allows: the runs that watch a deployment wait it once.
    with OfflineStack(StackOptions(overrides={"DeploymentPollSeconds": "5"})) as running:
        yield running


@pytest.fixture(scope="module")
def alerts(stack: OfflineStack) -> Any:
    sqs = stack.client("sqs")
    queue = sqs.create_queue(QueueName="retraining-alerts")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]
    stack.client("sns").subscribe(
        TopicArn=stack.stack.outputs["AlertTopicArn"], Protocol="sqs", Endpoint=arn["QueueArn"]
    )

    def read(field: str = "Subject") -> list[str]:
        messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
        for message in messages:
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
        return [json.loads(m["Body"])[field] for m in messages]

    return read


def subject(stack: OfflineStack, outcome: str) -> str:
    return alert_subject(outcome, stack.parameters["EndpointName"])


def test_each_alert_subject_is_the_one_outcome_module_gives_and_fits_sns() -> None:
    """One home for the subjects (the offline rehearsal sends the same): each names the
    endpoint, and even with the longest EndpointName stays under SNS's 100 characters."""
    states = definition()["States"]
    for outcome, state in ALERT_STATES.items():
        expected = f"States.Format('Scones retraining on {{}}: {SUBJECTS[outcome]}', "
        assert states[state]["Parameters"]["Subject.$"] == expected + "$.run.endpoint_name)"
        longest = alert_subject(
            outcome, "e" * load_template()["Parameters"]["EndpointName"]["MaxLength"]
        )
        assert len(longest) < 100, longest


def deployed_definition(stack: OfflineStack) -> tuple[dict[str, Any], str]:
    described = stack.client("stepfunctions").describe_state_machine(
        stateMachineArn=stack.stack.outputs["RetrainStateMachineArn"]
    )
    return json.loads(described["definition"]), described["roleArn"]


def quick_waits(node: Any) -> None:
    """Every retry and Wait state of the definition waits a second (moto really sleeps,
    and the waits' lengths are not under test)."""
    if isinstance(node, dict):
        for retry in node.get("Retry", []):
            retry["IntervalSeconds"] = 1
            retry["BackoffRate"] = 1.0
        if node.get("Type") == "Wait" and isinstance(node.get("Seconds"), int):
            node["Seconds"] = 1
        for value in node.values():
            quick_waits(value)
    elif isinstance(node, list):
        for value in node:
            quick_waits(value)


def execute(stack: OfflineStack, start_at: str | None, state: dict[str, Any], name: str) -> dict:
    """Run the deployed state machine, or its definition from ``start_at`` with quick
    retries and waits, to its end."""
    sfn = stack.client("stepfunctions")
    if start_at is None:
        arn = stack.stack.outputs["RetrainStateMachineArn"]
    else:
        document, role = deployed_definition(stack)
        document["StartAt"] = start_at
        quick_waits(document)
        arn = sfn.create_state_machine(
            name=f"retrain-from-{start_at}-{name}", definition=json.dumps(document), roleArn=role
        )["stateMachineArn"]
    execution = sfn.start_execution(stateMachineArn=arn, name=name, input=json.dumps(state))
    deadline = time.monotonic() + 120
    while True:
        described = sfn.describe_execution(executionArn=execution["executionArn"])
        if described["status"] != "RUNNING" or time.monotonic() > deadline:
            return dict(described)
        time.sleep(0.2)


def outcome_of(stack: OfflineStack, run_name: str) -> dict[str, str]:
    table = stack.stack.physical_id("MonitorStateTable")
    endpoint = stack.parameters["EndpointName"]
    item = stack.client("dynamodb").get_item(
        TableName=table, Key={"pk": {"S": f"retraining#{endpoint}#{run_name}"}}
    )["Item"]
    return {name: value["S"] for name, value in item.items()}


def moto_endpoint(
    stack: OfflineStack,
    config_name: str,
    instances: int = 1,
    variant: str | None = None,
    instance_type: str = "ml.m5.large",
) -> None:
    """What the production endpoint looks like to the describe calls, in moto's SageMaker."""
    sagemaker = stack.client("sagemaker")
    model = f"{config_name}-model"
    sagemaker.create_model(
        ModelName=model,
        ExecutionRoleArn=f"arn:aws:iam::{ACCOUNT}:role/sagemaker",
        PrimaryContainer={
            "Image": f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/scones-serve:1",
            "ModelDataUrl": f"s3://{stack.bucket}/models/production/model.tar.gz",
        },
    )
    sagemaker.create_endpoint_config(
        EndpointConfigName=config_name,
        ProductionVariants=[
            {
                "VariantName": variant or stack.parameters["EndpointVariantName"],
                "ModelName": model,
                "InstanceType": instance_type,
                "InitialInstanceCount": instances,
            }
        ],
    )
    name = stack.parameters["EndpointName"]
    existing = [e["EndpointName"] for e in sagemaker.list_endpoints()["Endpoints"]]
    if name in existing:
        sagemaker.delete_endpoint(EndpointName=name)
    sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=config_name)


def entered_states(stack: OfflineStack, execution_arn: str) -> list[str]:
    history = stack.client("stepfunctions").get_execution_history(
        executionArn=execution_arn, maxResults=1000
    )["events"]
    return [
        e["stateEnteredEventDetails"]["name"] for e in history if "stateEnteredEventDetails" in e
    ]


def _exited_output(stack: OfflineStack, execution_arn: str, name: str) -> dict[str, Any]:
    history = stack.client("stepfunctions").get_execution_history(
        executionArn=execution_arn, maxResults=1000
    )["events"]
    [output] = [
        json.loads(e["stateExitedEventDetails"]["output"])
        for e in history
        if e.get("stateExitedEventDetails", {}).get("name") == name
    ]
    return dict(output)


def _ended_at_moto_sync(result: dict[str, Any], integration: str) -> None:
    """moto stops at the first .sync SageMaker integration a run reaches, with a runtime
    error (which no Catch may handle, on AWS either): that is where its interpreter ends."""
    assert (result["status"], result["error"]) == ("FAILED", "States.Runtime"), result
    assert f"sagemaker:{integration}.sync" in result["cause"], result["cause"]


def test_moto_runs_the_real_definition_until_the_training_job(stack: OfflineStack) -> None:
    s3 = stack.client("s3")
    for label in ("bicycle", "motorcycle"):
        for i in range(min_images_per_class()):
            key = f"training/train/{label}/a{i}.png"
            s3.put_object(Bucket=stack.bucket, Key=key, Body=f"{label} {i}".encode())
        for i in range(int(stack.parameters["GateMinImagesPerClass"])):
            key = f"{stack.parameters['GateDataPrefix']}{label}/g{i}.png"
            s3.put_object(Bucket=stack.bucket, Key=key, Body=f"gate {label} {i}".encode())
    # Production, deployed outside the stack, runs on another instance type than
    # EndpointInstanceType.
    moto_endpoint(stack, "scones-config-1", instances=3, instance_type="ml.c5.xlarge")
    assert stack.parameters["EndpointInstanceType"] != "ml.c5.xlarge"
    result = execute(stack, None, {"source": "test"}, "from-the-start")
    _ended_at_moto_sync(result, "createTrainingJob")
    assert entered_states(stack, result["executionArn"]) == [
        "Prepare",
        "FindProductionEndpoint",
        "ProductionInService",
        "ProductionCapacity",
        "PickProductionVariant",
        "ProductionInstanceCount",
        "UseProductionCapacity",
        "CanaryAtLeastProduction",
        "RaiseCanaryToProduction",
        "FindProductionConfig",
        "ProductionInstanceType",
        "UseProductionInstanceType",
        "ProductionConfigModel",
        "FindProductionModel",
        "ProductionModelSource",
        "UseProductionModelData",
        "AssembleDataset",
        "DatasetAssembled",
    ]  # TrainCandidate fails before moto records it as entered
    # Production serves on three instances, more than the canary's two: the candidate's
    # fleet gets three, and a promotion leaves the endpoint on production's three.
    raised = _exited_output(stack, result["executionArn"], "RaiseCanaryToProduction")
    assert raised["run"]["instances"] == {"serving": 3, "canary": 3}
    # The candidate's fleet will run on production's instance type.
    typed = _exited_output(stack, result["executionArn"], "UseProductionInstanceType")
    assert typed["run"]["instance_type"] == "ml.c5.xlarge"
    # Everything before it ran for real: the production lookups against moto's SageMaker
    # and the deployed dataset function, which pinned the training channel.
    keys = [
        o["Key"] for o in s3.list_objects_v2(Bucket=stack.bucket, Prefix="retraining/")["Contents"]
    ]
    [manifest] = [k for k in keys if k.endswith("dataset/train.manifest")]
    body = json.loads(s3.get_object(Bucket=stack.bucket, Key=manifest)["Body"].read())
    assert body[1:] == [
        f"{label}/a{i}.png"
        for label in ("bicycle", "motorcycle")
        for i in range(min_images_per_class())
    ]


def test_a_promoted_candidates_package_is_found_as_the_production_model(
    stack: OfflineStack,
) -> None:
    """After a promotion the endpoint serves a model made from a model package, whose
    description names no ModelDataUrl (moto's, as SageMaker's): the artifact is read from
    the package, so the next retraining still scores the right production model."""
    sagemaker = stack.client("sagemaker")
    group = "promoted-earlier"  # not the stack's group, whose packages another test counts
    sagemaker.create_model_package_group(ModelPackageGroupName=group)
    artifact = f"s3://{stack.bucket}/retraining/promoted/model.tar.gz"
    package = sagemaker.create_model_package(
        ModelPackageGroupName=group,
        InferenceSpecification={
            "Containers": [
                {
                    "Image": f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/scones-serve:1",
                    "ModelDataUrl": artifact,
                }
            ],
            "SupportedContentTypes": ["image/png"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
        ModelApprovalStatus="Approved",
    )["ModelPackageArn"]
    sagemaker.create_model(
        ModelName="promoted-model",
        ExecutionRoleArn=f"arn:aws:iam::{ACCOUNT}:role/sagemaker",
        PrimaryContainer={"ModelPackageName": package},
    )
    state = sample_state(stack.bucket, stack.parameters["EndpointName"])
    state["production_config"] = {"variant": {"ModelName": "promoted-model"}}
    del state["production_model"], state["production_model_description"]
    result = execute(stack, "FindProductionModel", state, "promoted-production")
    entered = entered_states(stack, result["executionArn"])
    assert entered[:7] == [
        "FindProductionModel",
        "ProductionModelSource",
        "FindProductionPackage",
        "ProductionPackageSource",
        "PickProductionPackageContainer",
        "UseProductionPackageData",
        "AssembleDataset",
    ]
    inputs = [
        json.loads(e["stateEnteredEventDetails"]["input"])
        for e in stack.client("stepfunctions").get_execution_history(
            executionArn=result["executionArn"]
        )["events"]
        if e.get("stateEnteredEventDetails", {}).get("name") == "AssembleDataset"
    ]
    assert inputs[0]["production_model"] == {"model_data_url": artifact}


def test_a_failing_step_leaves_a_failed_record_and_an_alert(
    stack: OfflineStack, alerts: Any
) -> None:
    sagemaker = stack.client("sagemaker")
    name = stack.parameters["EndpointName"]
    if name in [e["EndpointName"] for e in sagemaker.list_endpoints()["Endpoints"]]:
        sagemaker.delete_endpoint(EndpointName=name)
    # The deployed definition from its own start, with quick retries: the describe calls
    # that find no endpoint are retried first.
    start = deployed_definition(stack)[0]["StartAt"]
    result = execute(stack, start, {"source": "test"}, "no-endpoint")
    assert (result["status"], result["error"]) == ("FAILED", "RetrainingFailed")
    record = outcome_of(stack, "no-endpoint")
    assert record["outcome"] == "FAILED" and record["record_type"] == "RETRAINING_OUTCOME"
    assert "Could not find endpoint" in record["reason"]
    assert subject(stack, FAILED) in alerts()


def put_evaluation(stack: OfflineStack, state: dict[str, Any], candidate_accuracy: float) -> None:
    def scored(version: str, accuracy: float) -> dict[str, Any]:
        return {
            "model": {"version": version},
            "images": 40,
            "labels": ["bicycle", "motorcycle"],
            "accuracy": accuracy,
            "per_class": {
                label: {"support": 20, "recall": accuracy} for label in ("bicycle", "motorcycle")
            },
            "at_threshold": {"accepted_accuracy": 1.0, "coverage": 0.6},
        }

    report = {
        "threshold": float(stack.parameters["ConfidenceThreshold"]),
        "candidate": scored("cand", candidate_accuracy),
        "production": scored("prod", 0.9),
    }
    key = state["dataset"]["evaluation_uri"].split("/", 3)[3]
    stack.client("s3").put_object(Bucket=stack.bucket, Key=key, Body=json.dumps(report).encode())


def test_a_refused_candidate_leaves_a_rejected_record_and_an_alert(
    stack: OfflineStack, alerts: Any
) -> None:
    state = sample_state(stack.bucket, stack.parameters["EndpointName"])
    state["run"]["run_name"] = "refused"
    put_evaluation(stack, state, candidate_accuracy=0.5)
    result = execute(stack, "JudgeCandidate", state, "refused")
    assert result["status"] == "SUCCEEDED"
    record = outcome_of(stack, "refused")
    assert record["outcome"] == "REJECTED"
    assert "accuracy 0.5000 is below production's 0.9000" in record["reason"]
    assert subject(stack, REJECTED) in alerts()


def test_a_passing_candidate_is_registered_pending_and_deployed_until_moto_lacks_update_endpoint(
    stack: OfflineStack,
) -> None:
    """Registered, but not yet served: PendingManualApproval, so no deployment of the
    latest approved version picks it before it is promoted."""
    state = passing_run(stack, "passing")
    # Production served on 3 (more than the canary's minimum): the candidate's fleet too.
    state["run"]["instances"] = {"serving": 3, "canary": 3}
    # Production runs on another instance type than EndpointInstanceType (FindProductionConfig).
    state["run"]["instance_type"] = "ml.c5.xlarge"
    moto_endpoint(stack, state["production"]["endpoint_config_name"])  # unchanged since
    result = execute(stack, "JudgeCandidate", state, "passing")
    described = stack_package(stack, state["training"]["model_data_url"])
    assert described["ModelApprovalStatus"] == "PendingManualApproval"
    assert described["CustomerMetadataProperties"]["candidate_version"] == "cand"
    base = state["dataset"]["names"]["base"]
    sagemaker = stack.client("sagemaker")
    [variant] = sagemaker.describe_endpoint_config(EndpointConfigName=base)["ProductionVariants"]
    # The fleet the run chose for the canary (Prepare, or production's count if larger).
    assert variant["InitialInstanceCount"] == state["run"]["instances"]["canary"] == 3
    # On production's instance type, which the package declares it is served on.
    assert variant["InstanceType"] == "ml.c5.xlarge"
    assert described["InferenceSpecification"]["SupportedRealtimeInferenceInstanceTypes"] == [
        "ml.c5.xlarge"
    ]
    # moto has no UpdateEndpoint: its server answers 500 and the interpreter ends the run
    # with a runtime error, so neither a record nor an alert is written here.
    assert (result["status"], result["error"]) == ("FAILED", "States.Runtime")
    assert entered_states(stack, result["executionArn"])[-5:] == [
        "CreateCandidateModel",
        "CreateCandidateEndpointConfig",
        "RecheckProduction",
        "ProductionUnchanged",
        "DeployCanary",
    ]


@pytest.mark.parametrize(
    ("serving", "outcome"), [("candidate", PROMOTED), ("previous", ROLLED_BACK)]
)
def test_the_deployment_check_tells_promotion_from_rollback(
    stack: OfflineStack, alerts: Any, serving: str, outcome: str
) -> None:
    state = sample_state(stack.bucket, stack.parameters["EndpointName"])
    run = f"deployed-{serving}"
    state["run"]["run_name"] = run
    base = state["dataset"]["names"]["base"]
    config = f"{base}-{serving}" if serving == "previous" else f"{base}-x"
    state["dataset"]["names"]["base"] = config if serving == "candidate" else base
    moto_endpoint(stack, config)
    result = execute(stack, "CheckDeployment", state, run)
    assert result["status"] == "SUCCEEDED"
    record = outcome_of(stack, run)
    assert record["outcome"] == outcome, record
    assert subject(stack, outcome) in alerts()


def test_a_rollback_sagemaker_explains_is_recorded_in_its_words(
    stack: OfflineStack, alerts: Any
) -> None:
    """An update SageMaker could not complete (the candidate failed its ping health check)
    also leaves the endpoint InService on the previous config, with FailureReason saying
    why: it was recorded as "an alarm rolled the canary back", and the reason was lost.
    moto's endpoints are never updated, so the description is set in its backend."""
    from moto.sagemaker.models import sagemaker_backends

    state = sample_state(stack.bucket, stack.parameters["EndpointName"])
    state["run"]["run_name"] = run = "update-failed-health-check"
    moto_endpoint(stack, f"{state['dataset']['names']['base']}-previous")
    why = "The primary container for production variant AllTraffic did not pass the ping check."
    endpoints = sagemaker_backends[ACCOUNT]["us-east-1"].endpoints
    endpoints[stack.parameters["EndpointName"]].failure_reason = why
    described = stack.client("sagemaker").describe_endpoint(
        EndpointName=stack.parameters["EndpointName"]
    )
    assert (described["EndpointStatus"], described["FailureReason"]) == ("InService", why)

    result = execute(stack, "CheckDeployment", state, run)

    assert result["status"] == "SUCCEEDED"
    record = outcome_of(stack, run)
    assert record["outcome"] == "ROLLED_BACK"
    assert record["reason"].startswith(f"SageMaker rolled the canary back ({why}): ")
    assert "alarm" not in record["reason"]
    assert subject(stack, ROLLED_BACK) in alerts()


LOST = {
    "Error": "SageMaker.AmazonSageMakerException",
    "Cause": "Cannot update in-progress endpoint",
}


@pytest.mark.parametrize(
    ("serving", "start_at", "outcome"),
    [
        # The first UpdateEndpoint went through; its answer was lost and the retry refused.
        ("candidate", "FindLostDeployment", "PROMOTED"),
        # Refused for real: the endpoint serves the production config and is not updating.
        ("production", "FindLostDeployment", "FAILED"),
        # Still updating when asked: watched; it settles on the candidate's config.
        ("candidate", "IsTheCandidateDeploying", "PROMOTED"),
        # Still updating when asked, then settles elsewhere: whose update that was cannot
        # be told, so the UpdateEndpoint failure stands (not a canary rollback).
        ("production", "IsTheCandidateDeploying", "FAILED"),
    ],
)
def test_a_deploy_error_is_watched_when_the_candidate_may_be_deploying_anyway(
    stack: OfflineStack, serving: str, start_at: str, outcome: str
) -> None:
    state = sample_state(stack.bucket, stack.parameters["EndpointName"])
    run = f"lost-{serving}-{start_at}"
    state["run"]["run_name"] = run
    base = f"{state['dataset']['names']['base']}-{start_at[:4].lower()}-{serving}"
    state["dataset"]["names"]["base"] = base
    state["error"] = LOST
    # A package moto does not know: approving or rejecting it fails, and the outcome stands.
    state["model_package"] = {
        "arn": f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:model-package/never-registered/1"
    }
    moto_endpoint(stack, base if serving == "candidate" else f"{base}-production")
    if start_at == "IsTheCandidateDeploying":  # moto's endpoints are never Updating
        state["lost_deployment"] = {"status": "Updating", "config": "production-config"}
    result = execute(stack, start_at, state, run)
    # A failed run ends in its Fail state after the record and the alert.
    assert result["status"] == ("FAILED" if outcome == "FAILED" else "SUCCEEDED"), result
    entered = entered_states(stack, result["executionArn"])
    record = outcome_of(stack, run)
    assert record["outcome"] == outcome, record
    assert "RejectRolledBackCandidate" not in entered
    if outcome == "FAILED":
        assert "DescribeFailure" in entered
        assert "Cannot update in-progress endpoint" in record["reason"]
        assert "RejectFailedCandidate" in entered
    else:
        assert "WaitForDeployment" in entered and "DescribeFailure" not in entered
        assert "still PendingManualApproval" in record["reason"], record
    watched = start_at == "IsTheCandidateDeploying" or serving == "candidate"
    assert ("CheckDeployment" in entered) == watched, entered


def test_a_rolled_back_candidates_package_is_marked_rejected(stack: OfflineStack) -> None:
    """A rollback must not leave the candidate Approved in the registry, where the next
    deployment of the latest approved version would ship it again. (The parametrized test
    above rolls back a package moto does not know: the update fails, and the outcome is
    still recorded and alerted.)"""
    sagemaker = stack.client("sagemaker")
    group = "rolled-back-candidates"  # not the stack's group, whose packages another test counts
    sagemaker.create_model_package_group(ModelPackageGroupName=group)
    package = sagemaker.create_model_package(
        ModelPackageGroupName=group,
        InferenceSpecification={
            "Containers": [
                {
                    "Image": f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/scones-serve:1",
                    "ModelDataUrl": f"s3://{stack.bucket}/retraining/rb/model.tar.gz",
                }
            ],
            "SupportedContentTypes": ["image/png"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
        ModelApprovalStatus="Approved",
    )["ModelPackageArn"]
    state = sample_state(stack.bucket, stack.parameters["EndpointName"])
    state["run"]["run_name"] = run = "rolled-back-package"
    state["model_package"] = {"arn": package}
    moto_endpoint(stack, f"{state['dataset']['names']['base']}-before")
    result = execute(stack, "CheckDeployment", state, run)
    assert result["status"] == "SUCCEEDED"
    assert outcome_of(stack, run)["outcome"] == "ROLLED_BACK"
    assert "RejectRolledBackCandidate" in entered_states(stack, result["executionArn"])
    described = sagemaker.describe_model_package(ModelPackageName=package)
    assert described["ModelApprovalStatus"] == "Rejected"
    assert "canary was rolled back" in described["ApprovalDescription"]


def test_the_retraining_role_may_reject_only_its_own_groups_packages() -> None:
    from tests.workflow.iam_policy import ALLOW, IMPLICIT_DENY, Request, decide, role_statements
    from tests.workflow.test_workflow_template import resolver_for, transformed

    resolver = resolver_for(transformed())
    statements = role_statements(resolver, "RetrainingStateMachineRole")
    me = ("AWS", f"arn:aws:iam::{ACCOUNT}:role/retraining")
    own = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:model-package/scones-models/3"
    other = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:model-package/someone-elses/3"
    update = "sagemaker:UpdateModelPackage"
    assert decide(statements, Request(update, own, me, {})) == ALLOW
    assert decide(statements, Request(update, other, me, {})) == IMPLICIT_DENY


def test_the_retraining_role_may_scale_only_the_stacks_endpoint() -> None:
    from tests.workflow.iam_policy import ALLOW, IMPLICIT_DENY, Request, decide, role_statements
    from tests.workflow.test_workflow_template import resolver_for, transformed

    statements = role_statements(resolver_for(transformed()), "RetrainingStateMachineRole")
    endpoint = (
        f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:endpoint/" + parameter_defaults()["EndpointName"]
    )
    scale = "sagemaker:UpdateEndpointWeightsAndCapacities"
    assert decide(statements, Request(scale, endpoint)) == ALLOW
    assert decide(statements, Request(scale, f"{endpoint}-other")) == IMPLICIT_DENY


def test_a_run_times_out_after_the_limits_of_every_step_it_waits_for() -> None:
    """A stuck run (a job stuck stopping, a deployment never settling) must end, and so
    page RetrainingUnfinishedAlarm: the monitor starts no retraining while one runs. The
    run's limit leaves room for every step's own limit and an hour more."""
    document = definition()
    limits = []

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("MaxRuntimeInSeconds", "MaximumExecutionTimeoutInSeconds"):
                    limits.append(int(value))
                collect(value)
        elif isinstance(node, list):
            for item in node:
                collect(item)

    collect(document["States"])
    assert sorted(limits) == [3600, 7200, 10800]  # evaluation, deployment, training
    # The evaluation job may run twice more, each after a wait.
    reruns = len(sample_state()["dataset"]["names"]["evaluation_reruns"])
    rerun_wait = document["States"]["WaitBeforeEvaluationRerun"]["Seconds"]
    assert reruns == 2 and rerun_wait == 300
    assert document["TimeoutSeconds"] >= sum(limits) + reruns * (3600 + rerun_wait) + 3600
    alarm = load_template()["Resources"]["RetrainingUnfinishedAlarm"]["Properties"]
    names = {m["MetricStat"]["Metric"]["MetricName"] for m in alarm["Metrics"] if "MetricStat" in m}
    assert names == {"ExecutionsTimedOut", "ExecutionsAborted"}


def test_every_outcome_write_retries_dynamodb_and_still_alerts_when_it_fails() -> None:
    """An outcome item that cannot be written (past its retries) must not end the run
    silently: the Catch goes on to the run's alert or notice."""
    states = definition()["States"]
    writes = {
        n: s for n, s in states.items() if s.get("Resource") == "arn:aws:states:::dynamodb:putItem"
    }
    assert set(writes) == {"RecordPromoted", "RecordRejected", "RecordRolledBack", "RecordFailed"}
    for name, state in writes.items():
        (retry,) = state["Retry"]
        assert "DynamoDB.AmazonDynamoDBException" in retry["ErrorEquals"], name
        (catch,) = state["Catch"]
        assert catch["ErrorEquals"] == ["States.ALL"] and catch["Next"] == state["Next"], name
        assert states[state["Next"]]["Resource"] == "arn:aws:states:::sns:publish", name


# ------------------------------------------------- the registry, production re-check, reasons
def set_endpoint_status(stack: OfflineStack, status: str) -> None:
    """moto's endpoints are always InService: set another status in its backend (the
    offline stack's moto server runs in this process)."""
    from moto.sagemaker.models import sagemaker_backends

    backend = sagemaker_backends[ACCOUNT]["us-east-1"]
    backend.endpoints[stack.parameters["EndpointName"]].endpoint_status = status


def stack_package(stack: OfflineStack, model_data_url: str) -> dict[str, Any]:
    """The version a run registered in the stack's group, found by its artifact (other
    tests register versions there too)."""
    sagemaker = stack.client("sagemaker")
    group = f"{stack.stack.stack_name}-models"
    summaries = sagemaker.list_model_packages(ModelPackageGroupName=group)[
        "ModelPackageSummaryList"
    ]
    found = [
        described
        for summary in summaries
        for described in [
            sagemaker.describe_model_package(ModelPackageName=summary["ModelPackageArn"])
        ]
        if described["InferenceSpecification"]["Containers"][0]["ModelDataUrl"] == model_data_url
    ]
    assert len(found) == 1, found
    return dict(found[0])


def own_package(stack: OfflineStack, group: str, status: str) -> str:
    """A version in a group of the test's own, as a run would have registered it."""
    sagemaker = stack.client("sagemaker")
    groups = sagemaker.list_model_package_groups(NameContains=group)["ModelPackageGroupSummaryList"]
    if group not in [g["ModelPackageGroupName"] for g in groups]:
        sagemaker.create_model_package_group(ModelPackageGroupName=group)
    return str(
        sagemaker.create_model_package(
            ModelPackageGroupName=group,
            InferenceSpecification={
                "Containers": [
                    {
                        "Image": f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/scones-serve:1",
                        "ModelDataUrl": f"s3://{stack.bucket}/retraining/{group}/model.tar.gz",
                    }
                ],
                "SupportedContentTypes": ["image/png"],
                "SupportedResponseMIMETypes": ["application/json"],
            },
            ModelApprovalStatus=status,
        )["ModelPackageArn"]
    )


def passing_run(stack: OfflineStack, run: str) -> dict[str, Any]:
    """A run about to be judged, with a passing report and names of its own."""
    state = sample_state(stack.bucket, stack.parameters["EndpointName"])
    state["run"]["run_name"] = run
    names = state["dataset"]["names"]
    names["base"] = f"{names['base']}-{run}"
    names["client_token"] = f"{names['client_token'][:40]}-{run}"[:64]
    state["training"]["model_data_url"] = f"s3://{stack.bucket}/retraining/{run}/model.tar.gz"
    state["production"] = {"endpoint_config_name": f"{run}-production"}
    del state["model_package"]
    put_evaluation(stack, state, candidate_accuracy=0.95)
    return state


def test_a_promoted_candidate_is_approved_before_its_record(
    stack: OfflineStack, alerts: Any
) -> None:
    state = sample_state(stack.bucket, stack.parameters["EndpointName"])
    state["run"]["run_name"] = run = "approved-on-promotion"
    state["dataset"]["names"]["base"] = config = f"{state['dataset']['names']['base']}-approve"
    state["model_package"] = {"arn": own_package(stack, "promoted-now", "PendingManualApproval")}
    moto_endpoint(stack, config)  # the candidate serves all traffic
    result = execute(stack, "CheckDeployment", state, run)
    assert result["status"] == "SUCCEEDED"
    entered = entered_states(stack, result["executionArn"])
    assert entered.index("ApproveCandidate") < entered.index("RecordPromoted")
    described = stack.client("sagemaker").describe_model_package(
        ModelPackageName=state["model_package"]["arn"]
    )
    assert described["ModelApprovalStatus"] == "Approved"
    record = outcome_of(stack, run)
    assert record["outcome"] == "PROMOTED" and "Approved" in record["reason"], record
    assert subject(stack, PROMOTED) in alerts()


@pytest.mark.parametrize("case", ["copied", "source-missing"])
def test_a_promotion_makes_the_candidates_baseline_the_monitors(
    stack: OfflineStack, alerts: Any, case: str
) -> None:
    """The monitor compares the traffic's label mix with the baseline at BaselineKey and
    names its model: once the candidate serves, the baseline must be the candidate's. A
    copy that fails leaves the promotion standing, and the record and alert say what to
    copy by hand."""
    state = sample_state(stack.bucket, stack.parameters["EndpointName"])
    state["run"]["run_name"] = run = f"baseline-{case}"
    state["dataset"]["names"]["base"] = config = f"{state['dataset']['names']['base']}-{case}"
    state["model_package"] = {"arn": own_package(stack, f"baseline-{case}", "Approved")}
    source_key = f"retraining/{config}/evaluation/{CANDIDATE_BASELINE_FILE}"
    state["dataset"]["drift_baseline_source"] = f"{stack.bucket}/{source_key}"
    s3 = stack.client("s3")
    key = stack.parameters["BaselineKey"]
    before = s3.get_object(Bucket=stack.bucket, Key=key)["Body"].read()
    candidate = json.loads(before)
    candidate.update(model_version=f"candidate-{case}", sample_count=400)
    if case == "copied":
        s3.put_object(Bucket=stack.bucket, Key=source_key, Body=json.dumps(candidate).encode())
    moto_endpoint(stack, config)  # the candidate serves all traffic
    try:
        result = execute(stack, "CheckDeployment", state, run)
        assert result["status"] == "SUCCEEDED", result
        after = s3.get_object(Bucket=stack.bucket, Key=key)
    finally:
        s3.put_object(Bucket=stack.bucket, Key=key, Body=before)
    record = outcome_of(stack, run)
    assert record["outcome"] == "PROMOTED", record
    (message,) = [m for m in alerts("Message") if run in m]
    if case == "copied":
        assert json.loads(after["Body"].read()) == candidate
        assert after["ContentType"] == "application/json"
        said = "the drift baseline is now the candidate's own, from its validation split"
    else:
        assert after["Body"].read() == before
        said = "the drift baseline still describes the previous model: copying it failed ("
        assert "NoSuchKey" in record["reason"], record["reason"]
        assert f"copy s3://{stack.bucket}/{source_key} (the evaluation step" in record["reason"]
        assert f"to s3://{stack.bucket}/{key} by hand" in record["reason"]
        # The evaluation step wrote none: its report says why (no baseline.json, or one
        # the monitor could not use for the candidate).
        report = state["dataset"]["evaluation_uri"]
        assert f"the candidate_baseline of {report} says why" in record["reason"]
    assert said in record["reason"], record["reason"]
    assert said in message, message


def test_prepare_names_the_serving_and_the_canarys_instance_counts() -> None:
    defaults = parameter_defaults()
    assert (
        defaults["EndpointInstanceCount"] == "1"
        and defaults["RetrainingEndpointInstanceCount"] == "2"
    )
    prepared = definition({"EndpointInstanceCount": "3", "RetrainingEndpointInstanceCount": "4"})
    assert prepared["States"]["Prepare"]["Parameters"]["instances"] == {"serving": 3, "canary": 4}
    assert sample_state()["run"]["instances"] == {
        "serving": int(defaults["EndpointInstanceCount"]),
        "canary": int(defaults["RetrainingEndpointInstanceCount"]),
    }


@pytest.mark.parametrize("case", ["scaled-back", "scale-refused", "same-count"])
def test_a_promotion_returns_the_endpoint_to_its_serving_instances(
    stack: OfflineStack, alerts: Any, case: str
) -> None:
    """The canary needs two instances; left there, a promotion would double the endpoint's
    bill for good. Scaling back failing leaves the promotion standing, and says so."""
    state = sample_state(stack.bucket, stack.parameters["EndpointName"])
    state["run"]["run_name"] = run = f"capacity-{case}"
    state["dataset"]["names"]["base"] = config = f"{state['dataset']['names']['base']}-{case}"
    state["model_package"] = {
        "arn": own_package(stack, f"capacity-{case}", "PendingManualApproval")
    }
    # Counts that are neither parameter's default: production served on 3 before the run
    # (what UseProductionCapacity read), and the canary's fleet had 5.
    canary = 2 if case == "same-count" else 5
    state["run"]["instances"] = {"serving": canary if case == "same-count" else 3, "canary": canary}
    # The candidate serves all traffic, on the canary's fleet (under another variant name,
    # UpdateEndpointWeightsAndCapacities is refused).
    moto_endpoint(
        stack, config, instances=canary, variant="other" if case == "scale-refused" else None
    )
    result = execute(stack, "CheckDeployment", state, run)
    assert result["status"] == "SUCCEEDED"
    entered = entered_states(stack, result["executionArn"])
    variant = stack.client("sagemaker").describe_endpoint(
        EndpointName=stack.parameters["EndpointName"]
    )["ProductionVariants"][0]
    record = outcome_of(stack, run)
    assert record["outcome"] == "PROMOTED", record
    if case == "scaled-back":
        assert "ReturnToServingCapacity" in entered and variant["DesiredInstanceCount"] == 3
        assert ", scaling from 5 to 3 instance(s); " in record["reason"]
        assert any("Approved), scaling from 5 to 3 instance(s); " in m for m in alerts("Message"))
    elif case == "scale-refused":
        assert "ReturnToServingCapacity" in entered and variant["DesiredInstanceCount"] == 5
        assert "still on 5 instance(s): scaling to 3 failed (" in record["reason"]
    else:
        assert "ReturnToServingCapacity" not in entered and variant["DesiredInstanceCount"] == 2
        assert ", on 2 instance(s); " in record["reason"]


@pytest.mark.parametrize("failure", ["update-refused", "deployment-failed"])
def test_a_failure_after_registration_marks_the_package_rejected(
    stack: OfflineStack, alerts: Any, failure: str
) -> None:
    """A candidate that was registered but never promoted must not stay in the registry
    as a version a deployment could pick."""
    state = sample_state(stack.bucket, stack.parameters["EndpointName"])
    state["run"]["run_name"] = run = f"rejected-after-{failure}"
    base = f"{state['dataset']['names']['base']}-{failure}"
    state["dataset"]["names"]["base"] = base
    state["model_package"] = {"arn": own_package(stack, "failed-runs", "PendingManualApproval")}
    if failure == "update-refused":  # UpdateEndpoint refused; production still serves
        state["error"] = {"Error": "SageMaker.ValidationException", "Cause": "Could not find alarm"}
        moto_endpoint(stack, f"{base}-production")
        start_at = "FindLostDeployment"
    else:  # SageMaker ended the deployment as Failed
        moto_endpoint(stack, base)
        set_endpoint_status(stack, "Failed")
        start_at = "CheckDeployment"
    result = execute(stack, start_at, state, run)
    assert (result["status"], result["error"]) == ("FAILED", "RetrainingFailed"), result
    assert "RejectFailedCandidate" in entered_states(stack, result["executionArn"])
    described = stack.client("sagemaker").describe_model_package(
        ModelPackageName=state["model_package"]["arn"]
    )
    assert described["ModelApprovalStatus"] == "Rejected"
    assert outcome_of(stack, run)["outcome"] == "FAILED"
    assert subject(stack, FAILED) in alerts()


@pytest.mark.parametrize("start_at", ["CheckDeployment", "FindLostDeployment"])
def test_a_deployment_that_cannot_be_watched_leaves_its_candidate_pending(
    stack: OfflineStack, alerts: Any, start_at: str
) -> None:
    """The endpoint cannot be described while the canary may be deploying: SageMaker
    carries on and may promote the candidate, so the run must not mark it Rejected (the
    registry would disown the model the endpoint serves). FAILED, alerted, and the reason
    says what a person has to settle."""
    state = sample_state(stack.bucket, stack.parameters["EndpointName"])
    state["run"]["run_name"] = run = f"unwatched-{start_at}"
    state["model_package"] = {"arn": own_package(stack, "unwatched", "PendingManualApproval")}
    if start_at == "FindLostDeployment":
        state["error"] = {"Error": "SageMaker.SageMakerException", "Cause": "connection reset"}
    sagemaker = stack.client("sagemaker")
    name = stack.parameters["EndpointName"]
    if name in [e["EndpointName"] for e in sagemaker.list_endpoints()["Endpoints"]]:
        sagemaker.delete_endpoint(EndpointName=name)  # describeEndpoint now fails
    result = execute(stack, start_at, state, run)
    assert (result["status"], result["error"]) == ("FAILED", "RetrainingFailed"), result
    entered = entered_states(stack, result["executionArn"])
    assert "KeepCandidatePending" in entered and "RejectFailedCandidate" not in entered
    described = sagemaker.describe_model_package(ModelPackageName=state["model_package"]["arn"])
    assert described["ModelApprovalStatus"] == "PendingManualApproval"
    reason = outcome_of(stack, run)["reason"]
    assert reason.startswith("DeploymentUnknown: "), reason
    # It names what a person has to settle: the package, the endpoint, the candidate's config.
    package = state["model_package"]["arn"]
    config = state["dataset"]["names"]["base"]
    assert f"its model package {package} stays PendingManualApproval" in reason
    assert f"check endpoint {name} (the candidate is config {config})" in reason
    # And, should SageMaker have promoted it after all, what the run would have done.
    serving = state["run"]["instances"]["serving"]
    baseline = state["dataset"]["drift_baseline_source"]
    assert f"back to {serving} instance(s)" in reason
    assert f"copy the drift baseline of the candidate, s3://{baseline}, to the BaselineKey" in (
        reason
    )
    assert "Could not find endpoint" in reason  # the describe error, kept
    if start_at == "FindLostDeployment":
        assert "connection reset" in reason  # and UpdateEndpoint's
    assert subject(stack, FAILED) in alerts()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("promoted-meanwhile", "production changed during the run"),
        ("updating", "the endpoint is Updating"),
    ],
)
def test_production_is_checked_again_before_the_canary(
    stack: OfflineStack, alerts: Any, change: str, reason: str
) -> None:
    """The candidate was gated against the config production served when the run began:
    if another run promoted meanwhile, or the endpoint is updating, it is not deployed."""
    state = passing_run(stack, f"recheck-{change}")
    if change == "promoted-meanwhile":
        moto_endpoint(stack, f"recheck-{change}-promoted-by-another-run")
    else:
        moto_endpoint(stack, state["production"]["endpoint_config_name"])
        set_endpoint_status(stack, "Updating")
    result = execute(stack, "JudgeCandidate", state, f"recheck-{change}")
    assert (result["status"], result.get("error")) == ("FAILED", "RetrainingFailed"), result
    entered = entered_states(stack, result["executionArn"])
    assert "DeployCanary" not in entered
    record = outcome_of(stack, f"recheck-{change}")
    assert record["outcome"] == "FAILED" and reason in record["reason"], record
    assert subject(stack, FAILED) in alerts()
    described = stack_package(stack, state["training"]["model_data_url"])
    assert described["ModelApprovalStatus"] == "Rejected"


def test_retraining_does_not_start_on_an_endpoint_that_is_not_in_service(
    stack: OfflineStack, alerts: Any
) -> None:
    moto_endpoint(stack, "not-in-service-config")
    set_endpoint_status(stack, "Updating")
    result = execute(stack, None, {"source": "test"}, "not-in-service")
    assert (result["status"], result.get("error")) == ("FAILED", "RetrainingFailed"), result
    assert "FindProductionConfig" not in entered_states(stack, result["executionArn"])
    record = outcome_of(stack, "not-in-service")
    assert record["outcome"] == "FAILED" and "the endpoint is Updating" in record["reason"]
    assert subject(stack, FAILED) in alerts()


def test_a_production_package_without_a_model_data_url_is_an_unknown_production_model(
    stack: OfflineStack, alerts: Any
) -> None:
    """ModelDataUrl is optional in a package's container (ModelDataSource, or the model in
    the image): reading it anyway was States.Runtime, which no Catch sees (no record)."""
    sagemaker = stack.client("sagemaker")
    sagemaker.create_model_package_group(ModelPackageGroupName="no-model-data-url")
    package = sagemaker.create_model_package(
        ModelPackageGroupName="no-model-data-url",
        InferenceSpecification={
            "Containers": [{"Image": f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/scones:1"}],
            "SupportedContentTypes": ["image/png"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
        ModelApprovalStatus="Approved",
    )["ModelPackageArn"]
    sagemaker.create_model(
        ModelName="no-model-data-url",
        ExecutionRoleArn=f"arn:aws:iam::{ACCOUNT}:role/sagemaker",
        PrimaryContainer={"ModelPackageName": package},
    )
    assert unknown_production_model(stack, "no-model-data-url", alerts)


def test_a_production_variant_without_a_model_is_an_unknown_production_model(
    stack: OfflineStack, alerts: Any
) -> None:
    """ModelName is optional in a production variant (inference components serve the
    endpoint): reading it anyway was States.Runtime, which no Catch sees (no record)."""
    assert "names no model" in unknown_production_model(stack, None, alerts)


def unknown_production_model(stack: OfflineStack, model: str | None, alerts: Any) -> str:
    """Run from ProductionConfigModel with ``model`` (or none) in production: the run must
    end FAILED as ProductionModelUnknown, recorded and alerted. Returns the recorded reason."""
    state = sample_state(stack.bucket, stack.parameters["EndpointName"])
    state["run"]["run_name"] = run = f"unknown-{model or 'variant-model'}"
    variant = {"VariantName": "AllTraffic"}
    state["production_config"] = {
        "variant": variant if model is None else {**variant, "ModelName": model}
    }
    del state["production_model"], state["production_model_description"], state["model_package"]
    result = execute(stack, "ProductionConfigModel", state, run)
    assert (result["status"], result.get("error")) == ("FAILED", "RetrainingFailed"), result
    assert "DescribeUnknownProductionModel" in entered_states(stack, result["executionArn"])
    reason = str(outcome_of(stack, run)["reason"])
    assert reason.startswith("ProductionModelUnknown: ")
    assert subject(stack, FAILED) in alerts()
    return reason


def test_a_multi_container_production_model_is_an_unknown_production_model(
    stack: OfflineStack, alerts: Any
) -> None:
    """A pipeline model (Containers, no PrimaryContainer) is not one the gate can score:
    the run ends FAILED with a record and an alert. (moto answers an empty PrimaryContainer
    where AWS leaves it out; test_offline_moto_gaps guards that, and asl_check the rest.)"""
    sagemaker = stack.client("sagemaker")
    sagemaker.create_model(
        ModelName="pipeline-model",
        ExecutionRoleArn=f"arn:aws:iam::{ACCOUNT}:role/sagemaker",
        Containers=[
            {"Image": f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/pre:1"},
            {
                "Image": f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/scones:1",
                "ModelDataUrl": f"s3://{stack.bucket}/models/production/model.tar.gz",
            },
        ],
    )
    assert "multi-container" in unknown_production_model(stack, "pipeline-model", alerts)


@pytest.mark.parametrize(
    ("report", "message"),
    [
        (None, "no evaluation report at s3://"),
        (b"{not json", "is not a JSON evaluation report"),
        (b'{"threshold": 0.9, "candidate": {}}', "the candidate report is incomplete"),
    ],
)
def test_a_functions_error_is_recorded_as_its_message_naming_the_report(
    stack: OfflineStack, report: bytes | None, message: str
) -> None:
    """A FAILED reason is the error's own message, never the Lambda error payload with its
    stack trace; a missing or unreadable report names its S3 URI."""
    state = sample_state(stack.bucket, stack.parameters["EndpointName"])
    run = f"report-{'missing' if report is None else len(report)}"
    state["run"]["run_name"] = run
    uri = state["dataset"]["evaluation_uri"].replace("/evaluation/", f"/evaluation-{run}/")
    state["dataset"]["evaluation_uri"] = uri
    if report is not None:
        stack.client("s3").put_object(Bucket=stack.bucket, Key=uri.split("/", 3)[3], Body=report)
    result = execute(stack, "JudgeCandidate", state, run)
    assert (result["status"], result.get("error")) == ("FAILED", "RetrainingFailed"), result
    reason = outcome_of(stack, run)["reason"]
    assert reason.startswith("EvaluationReportError: ") and message in reason, reason
    assert "stackTrace" not in reason and "errorMessage" not in reason, reason
    if report is None or report.startswith(b"{not"):
        assert uri in reason, reason


def test_an_error_without_a_cause_is_still_recorded_and_alerted(stack: OfflineStack) -> None:
    """A Catch's error output may carry no Cause; formatting one would be States.Runtime,
    which no Catch sees, and the run would end with no record."""
    state = sample_state(stack.bucket, stack.parameters["EndpointName"])
    run = "error-without-cause"
    state["run"]["run_name"] = run
    state["error"] = {"Error": "States.Timeout"}
    result = execute(stack, "DescribeFailure", state, run)
    assert (result["status"], result.get("error")) == ("FAILED", "RetrainingFailed"), result
    assert outcome_of(stack, run)["reason"] == "States.Timeout"


def _failed_evaluation_job(state: dict[str, Any], reason: str, compact: bool = True) -> dict:
    """What EvaluateCandidate's Catch receives when its job ends Failed: States.TaskFailed,
    the job's description (DescribeProcessingJob's response) as the Cause."""
    described = {
        "ProcessingJobName": state["evaluation_job"]["name"],
        "ProcessingJobArn": f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:processing-job/"
        + state["evaluation_job"]["name"],
        "ProcessingJobStatus": "Failed",
        "FailureReason": reason,
        "ProcessingEndTime": 1764592205000,
        "CreationTime": 1764591905000,
    }
    separators = (",", ":") if compact else (", ", ": ")
    return {"Error": "States.TaskFailed", "Cause": json.dumps(described, separators=separators)}


def test_an_evaluation_job_failed_by_sagemaker_runs_again_under_its_next_name(
    stack: OfflineStack,
) -> None:
    """A processing job has no RetryStrategy: without a rerun, SageMaker's own fault would
    throw away the trained candidate. The rerun cannot reuse the failed job's name."""
    catches = definition()["States"]["EvaluateCandidate"]["Catch"]
    assert [(c["ErrorEquals"], c["Next"]) for c in catches] == [
        (["States.TaskFailed"], "EvaluationJobFailed"),
        (["States.ALL"], "DescribeFailure"),
    ]
    names = sample_state()["dataset"]["names"]
    for reruns, reason, compact in (
        (0, "InternalServerError: We encountered an internal error.  Please try again.", True),
        (1, "CapacityError: Unable to provision requested ML compute capacity.", False),
    ):
        state = sample_state(stack.bucket, stack.parameters["EndpointName"])
        run = f"evaluation-rerun-{reruns}"
        state["run"]["run_name"] = run
        if reruns:
            state["evaluation_job"] = {
                "name": names["evaluation_reruns"][0],
                "reruns": 1,
                "reruns_left": 1,
            }
        state["error"] = _failed_evaluation_job(state, reason, compact)
        result = execute(stack, "EvaluationJobFailed", state, run)
        _ended_at_moto_sync(result, "createProcessingJob")  # the rerun's
        assert entered_states(stack, result["executionArn"]) == [
            "EvaluationJobFailed",
            "EvaluationRerunLeft",
            "WaitBeforeEvaluationRerun",
            "NameEvaluationRerun",
        ]
        named = _exited_output(stack, result["executionArn"], "NameEvaluationRerun")
        assert named["evaluation_job"] == {
            "name": names["evaluation_reruns"][reruns],
            "reruns": reruns + 1,
            "reruns_left": 1 - reruns,
        }


def test_the_first_evaluation_job_is_named_with_its_reruns_left(stack: OfflineStack) -> None:
    """NameEvaluationJob gives EvaluateCandidate the dataset step's first name and counts
    the reruns the dataset step named."""
    state = sample_state(stack.bucket, stack.parameters["EndpointName"])
    del state["evaluation_job"]
    result = execute(stack, "NameEvaluationJob", state, "first-evaluation-name")
    _ended_at_moto_sync(result, "createProcessingJob")
    named = _exited_output(stack, result["executionArn"], "NameEvaluationJob")
    assert named["evaluation_job"] == {
        "name": state["dataset"]["names"]["processing_job"],
        "reruns": 0,
        "reruns_left": 2,
    }


@pytest.mark.parametrize(
    ("reason", "reruns_left"),
    [
        pytest.param(
            "AlgorithmError: the production model is not a scones ONNX artifact "
            "(InternalServerError: the model server said so)",
            2,
            id="the-programs-own-failure",
        ),
        pytest.param(
            "InternalServerError: We encountered an internal error.  Please try again.",
            0,
            id="no-rerun-left",
        ),
    ],
)
def test_an_evaluation_job_that_is_not_rerun_fails_the_run_with_its_reason(
    stack: OfflineStack, alerts: Any, reason: str, reruns_left: int
) -> None:
    """The program's own failure would fail again: the run fails at once, its reason the
    job's. So does SageMaker's fault once the reruns are used up."""
    state = sample_state(stack.bucket, stack.parameters["EndpointName"])
    run = f"evaluation-not-rerun-{reruns_left}"
    state["run"]["run_name"] = run
    state["evaluation_job"]["reruns_left"] = reruns_left
    state["error"] = _failed_evaluation_job(state, reason)
    alerts()
    result = execute(stack, "EvaluationJobFailed", state, run)
    assert (result["status"], result.get("error")) == ("FAILED", "RetrainingFailed"), result
    entered = entered_states(stack, result["executionArn"])
    assert "WaitBeforeEvaluationRerun" not in entered and "DescribeStepFailure" in entered
    recorded = outcome_of(stack, run)["reason"]
    assert recorded.startswith("States.TaskFailed: {") and reason in recorded, recorded
    assert alerts("Message") == [f"Retraining {run} failed: {recorded}"]


# Step Functions keeps at most this many characters of an error's Cause.
CAUSE_LIMIT = 32768
_TRACE = '  File "/var/task/app.py", line 90, in judge_handler\n    raise exc\n'


def _function_payload(message: str, error_type: str, trace: bool = True) -> str:
    """A Python function's error payload as the Lambda runtime writes it (errorMessage first)."""
    payload: dict[str, Any] = {"errorMessage": message, "errorType": error_type}
    payload.update({"requestId": "5c1d", "stackTrace": [_TRACE] if trace else []})
    return json.dumps(payload)


def _cut_payload_ending_in_a_brace() -> str:
    """A payload over the limit (a message quoting JSON), cut where a ``}`` falls: it still
    starts with ``{"errorMessage"`` and ends with ``}``, and it is not JSON."""
    for pad in range(2):
        message = "the candidate report is incomplete: " + "x" * pad + "{}" * CAUSE_LIMIT
        cut = _function_payload(message, "EvaluationReportError")[:CAUSE_LIMIT]
        if cut.endswith("}"):
            return cut
    raise AssertionError("no padding cuts the payload at a brace")


@pytest.mark.parametrize(
    ("error", "said"),
    [
        pytest.param(
            {"Error": "EvaluationReportError", "Cause": _cut_payload_ending_in_a_brace()},
            'EvaluationReportError: {"errorMessage": "the candidate report is incomplete: {}',
            id="cut-payload-ending-in-a-brace",
        ),
        pytest.param(
            {"Error": "KeyError", "Cause": _function_payload("'evaluation_uri'", "KeyError")},
            "KeyError: the function failed unexpectedly",
            id="bug-with-a-stack-trace",
        ),
        pytest.param(
            {
                "Error": "Runtime.ExitError",
                "Cause": json.dumps(
                    {"errorType": "Runtime.ExitError", "errorMessage": "signal: killed"}
                ),
            },
            'Runtime.ExitError: {"errorType": "Runtime.ExitError", "errorMessage": "signal',
            id="crash",
        ),
        pytest.param({"Error": "States.Timeout", "Cause": ""}, "States.Timeout", id="empty"),
    ],
)
def test_any_cause_a_step_may_fail_with_is_recorded_and_alerted(
    stack: OfflineStack, alerts: Any, error: dict[str, str], said: str
) -> None:
    """Step Functions cuts a Cause at 32,768 characters; one that is cut may still look
    like a function's JSON payload (ending in a brace), and parsing it would be
    States.Runtime, which no Catch takes: the run would end with no record and no alert.
    No Cause is parsed, and a function's stack trace is left to its log group."""
    state = sample_state(stack.bucket, stack.parameters["EndpointName"])
    run = f"cause-{error['Error'].lower().replace('.', '-')}-{len(error['Cause'])}"
    state["run"]["run_name"] = run
    state["error"] = error
    alerts()  # only this run's alert below
    result = execute(stack, "DescribeFailure", state, run)
    assert (result["status"], result.get("error")) == ("FAILED", "RetrainingFailed"), result
    reason = outcome_of(stack, run)["reason"]
    assert reason.startswith(said), reason[:200]
    assert "stackTrace" not in reason and "File " not in reason, reason[:200]
    assert alerts("Message") == [f"Retraining {run} failed: {reason}"]


def test_the_dataset_steps_own_failure_is_recorded_as_its_message(
    stack: OfflineStack, alerts: Any
) -> None:
    """The real dataset function returns its failure as data (ReadDatasetFailure): the
    record and the alert have its message, and Step Functions saw no function error."""
    state = sample_state(stack.bucket, stack.parameters["EndpointName"])
    run = "dataset-refused"
    state["run"]["run_name"] = run
    del state["model_package"]  # the dataset step runs before any candidate is registered
    state["run"]["started_at"] = "not a time"
    alerts()
    result = execute(stack, "AssembleDataset", state, run)
    assert (result["status"], result.get("error")) == ("FAILED", "RetrainingFailed"), result
    reason = outcome_of(stack, run)["reason"]
    assert reason == "DatasetError: started_at 'not a time' is not an ISO 8601 time", reason
    assert alerts("Message") == [f"Retraining {run} failed: {reason}"]
    events = stack.client("stepfunctions").get_execution_history(
        executionArn=result["executionArn"], maxResults=1000
    )["events"]
    assert [e["type"] for e in events if e["type"].endswith("Failed")] == ["ExecutionFailed"]


def test_an_aws_call_the_dataset_step_cannot_make_is_recorded_with_the_services_message(
    stack: OfflineStack, alerts: Any
) -> None:
    """The real dataset function refused the gate set's listing (AccessDenied, as with a
    role or a bucket policy that does not allow it): the record and the alert say which
    call failed and why, not that the function failed unexpectedly (the offline stack's
    moto server runs in this process)."""
    from moto.s3.models import S3Backend

    gate_prefix = stack.parameters["GateDataPrefix"]
    list_objects = S3Backend.list_objects_v2

    def refuse(self: S3Backend, bucket: Any, prefix: str | None, **kwargs: Any) -> Any:
        if prefix == gate_prefix:
            raise S3AccessDeniedError()
        return list_objects(self, bucket, prefix, **kwargs)

    state = sample_state(stack.bucket, stack.parameters["EndpointName"])
    run = "dataset-denied"
    state["run"]["run_name"] = run
    del state["model_package"]  # the dataset step runs before any candidate is registered
    alerts()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(S3Backend, "list_objects_v2", refuse)
        result = execute(stack, "AssembleDataset", state, run)
    assert (result["status"], result.get("error")) == ("FAILED", "RetrainingFailed"), result
    reason = outcome_of(stack, run)["reason"]
    # The error's name, then the service's message, as a raised error's payload had them.
    denied = "An error occurred (AccessDenied) when calling the ListObjectsV2 operation"
    assert reason.endswith(f": {denied}: Access Denied"), reason
    assert alerts("Message") == [f"Retraining {run} failed: {reason}"]


def _task_payload_sizes(stack: OfflineStack, execution_arn: str) -> list[int]:
    """The size of every Cause and result the run's tasks gave Step Functions."""
    events = stack.client("stepfunctions").get_execution_history(
        executionArn=execution_arn, maxResults=1000
    )["events"]
    sizes = []
    for event in events:
        for key, details in event.items():
            if key.startswith(("task", "lambda")) and isinstance(details, dict):
                sizes += [len(details.get(part) or "") for part in ("cause", "output")]
    return sizes


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        # A field the gate reads that is not what it expects: the message quotes it.
        ("images", {f"image-{i}": {} for i in range(4000)}, "the candidate report is incomplete"),
        ("labels", [[f"label-{i}"] for i in range(4000)], "the candidate report is incomplete"),
        # A version is quoted in the summary, the record, the alert and the metadata.
        ("model", {"version": "v" * 300_000}, "the candidate model version is"),
    ],
)
def test_a_report_the_gate_quotes_at_length_fails_with_a_bounded_message(
    stack: OfflineStack, alerts: Any, field: str, value: Any, message: str
) -> None:
    """The real judge function on a report whose content would make its error (or its
    answer) as long as the content: what it gives Step Functions stays far below the
    32,768 characters a Cause is cut at (and the 256 KB of a state), and the record and
    the alert have the message, bounded."""
    state = sample_state(stack.bucket, stack.parameters["EndpointName"])
    run = f"long-{field}"
    state["run"]["run_name"] = run
    uri = state["dataset"]["evaluation_uri"].replace("/evaluation/", f"/evaluation-{run}/")
    state["dataset"]["evaluation_uri"] = uri
    put_evaluation(stack, state, candidate_accuracy=0.97)
    key = uri.split("/", 3)[3]
    report = json.loads(stack.client("s3").get_object(Bucket=stack.bucket, Key=key)["Body"].read())
    report["candidate"][field] = value
    stack.client("s3").put_object(Bucket=stack.bucket, Key=key, Body=json.dumps(report).encode())
    alerts()
    result = execute(stack, "JudgeCandidate", state, run)
    assert (result["status"], result.get("error")) == ("FAILED", "RetrainingFailed"), result
    reason = outcome_of(stack, run)["reason"]
    assert reason.startswith(f"EvaluationReportError: {message}"), reason[:200]
    assert len(reason) < 2000, len(reason)
    assert alerts("Message") == [f"Retraining {run} failed: {reason}"]
    assert max(_task_payload_sizes(stack, result["executionArn"])) < 4000


# ------------------------------------------------------------- an alert that cannot be sent
def test_every_retraining_task_catches_what_its_retries_leave() -> None:
    """A task error past its retries that no Catch takes ends the run with the raw service
    error: after a promotion, that named an SNS error and hid the outcome. Each alert's
    Catch ends the run in its outcome's own Fail state, named NotificationFailed."""
    states = definition()["States"]
    for name, state in states.items():
        if state["Type"] == "Task":
            assert state["Catch"][-1]["ErrorEquals"] == ["States.ALL"], name
    for outcome, name in ALERT_STATES.items():
        (catch,) = states[name]["Catch"]
        failed = states[catch["Next"]]
        assert failed["Type"] == "Fail" and failed["Error"] == NOTIFICATION_FAILED, name
        assert f" ended {outcome} and that outcome stands" in failed["CausePath"], name
        assert catch["ResultPath"] in failed["CausePath"], name


class KMSDisabled(SNSException):
    """What SNS answers a publish to a topic whose KMS key is disabled."""

    code = "KMSDisabled"
    message = "The request was rejected because the specified KMS key is not enabled."


@pytest.fixture
def alert_topic_key_disabled(stack: OfflineStack) -> Iterator[None]:
    """Every publish to the stack's alert topic fails for good, as when its key is disabled
    (the offline stack's moto server runs in this process)."""
    from moto.sns.models import SNSBackend

    topic = stack.stack.outputs["AlertTopicArn"]
    publish = SNSBackend.publish

    def refuse(self: SNSBackend, message: str, arn: str | None, **kwargs: Any) -> str:
        if arn == topic:
            raise KMSDisabled()
        return publish(self, message, arn, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SNSBackend, "publish", refuse)
        yield


def ended_run(stack: OfflineStack, outcome: str, run: str) -> tuple[str, dict[str, Any]]:
    """Where a run starts to end with ``outcome``, and its state there."""
    state = sample_state(stack.bucket, stack.parameters["EndpointName"])
    state["run"]["run_name"] = run
    base = state["dataset"]["names"]["base"]
    if outcome == REJECTED:
        put_evaluation(stack, state, candidate_accuracy=0.5)
        return "JudgeCandidate", state
    if outcome == FAILED:
        state["error"] = {"Error": "States.Timeout"}
        return "DescribeFailure", state
    if outcome == PROMOTED:
        state["dataset"]["names"]["base"] = config = f"{base}-{run}"
        state["model_package"] = {"arn": own_package(stack, run, "PendingManualApproval")}
    else:
        config = f"{base}-{run}-before"
    moto_endpoint(stack, config)  # the candidate's config serves, or the one before it
    return "CheckDeployment", state


@pytest.mark.parametrize("outcome", [PROMOTED, REJECTED, ROLLED_BACK, FAILED])
def test_an_alert_that_cannot_be_published_leaves_the_outcome_and_says_so(
    stack: OfflineStack, alerts: Any, alert_topic_key_disabled: None, outcome: str
) -> None:
    """The alert topic refuses every publish (its KMS key disabled): the outcome stands in
    the monitor state table, and the run ends FAILED as NotificationFailed, its cause
    naming the outcome, the item and SNS's error, not as the raw SNS error."""
    run = f"unsent-{outcome.lower().replace('_', '-')}"
    start_at, state = ended_run(stack, outcome, run)
    result = execute(stack, start_at, state, run)
    assert (result["status"], result.get("error")) == ("FAILED", NOTIFICATION_FAILED), result
    assert outcome_of(stack, run)["outcome"] == outcome
    cause = result["cause"]
    assert cause.startswith(f"Retraining {run} ended {outcome} and that outcome stands"), cause
    endpoint = stack.parameters["EndpointName"]
    table = stack.stack.physical_id("MonitorStateTable")
    assert f"the item retraining#{endpoint}#{run} in {table}" in cause, cause
    assert "SNS.KMSDisabledException" in cause, cause
    entered = entered_states(stack, result["executionArn"])
    assert entered[-2] == ALERT_STATES[outcome], entered
    assert [m for m in alerts("Message") if f"Retraining {run}" in m] == []
