"""Fill what moto's CloudFormation drops, through the public AWS APIs.

``GAPS`` is the one registry of moto's gaps: each :class:`Gap` names the resource
type, the settings moto drops and why, whether the resource is removed from the
template moto receives, and how it is filled (the API calls). ``plan`` and ``fill``
follow it, ``deploy.py`` derives the resource types it accepts from it
(``supported_resource_types``), ``docs/offline.md`` holds its table
(``gaps_markdown``, checked by a test), and the guard tests in
``tests/offline/test_offline_moto_gaps.py`` are named by each gap.

Values inside the dropped settings (``Ref``, ``Fn::GetAtt``, ``Fn::Sub`` ...) are
resolved by moto itself: before the stack is created each intrinsic becomes a stack
output, and after creation the outputs hold the resolved values.

This module does not import ``deploy.py`` (``deploy.py`` imports it): the stack it
fills is anything with the :class:`FilledStack` attributes.
"""

from __future__ import annotations

import contextlib
import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from scones.asl_check import check_definition, substitute
from scones.offline import asl_emulation

if TYPE_CHECKING:
    import boto3

OUTPUT_PREFIX = "SconesOfflineResolve"
_INTRINSICS = {
    "Ref",
    "Fn::GetAtt",
    "Fn::Sub",
    "Fn::Join",
    "Fn::If",
    "Fn::Select",
    "Fn::Split",
    "Fn::FindInMap",
    "Fn::Base64",
    "Fn::GetAZs",
    "Fn::ImportValue",
}
_MARKER = "__scones_resolve__"


@dataclass(frozen=True)
class Gap:
    """One thing moto 5.2.5's CloudFormation drops, and what the offline stack does."""

    name: str
    resource_type: str
    # The resource's properties this gap concerns; empty: the whole resource.
    properties: tuple[str, ...]
    why: str  # what moto does with it
    removed: bool  # the resource is left out of the template moto receives
    fill: str  # how it is filled ("" when it is not)
    # The step of ``fill`` that applies it; None: not filled (harmless offline).
    kind: str | None
    # The test in tests/offline/test_offline_moto_gaps.py that fails once moto closes it.
    guard: str = ""

    @property
    def filled(self) -> bool:
        return self.kind is not None


_DROPS = "test_moto_still_drops_what_the_deployment_fills"

GAPS: tuple[Gap, ...] = (
    Gap(
        "bucket versioning",
        "AWS::S3::Bucket",
        ("VersioningConfiguration",),
        "dropped: GetBucketVersioning has no Status, PutObject returns no VersionId",
        removed=False,
        fill="PutBucketVersioning",
        kind="bucket_versioning",
        guard="test_moto_cloudformation_still_drops_bucket_versioning",
    ),
    Gap(
        "bucket notifications",
        "AWS::S3::Bucket",
        ("NotificationConfiguration",),
        "ignored: no queue is notified",
        removed=False,
        fill="PutBucketNotificationConfiguration",
        kind="bucket_notifications",
        guard=_DROPS,
    ),
    Gap(
        "bucket policies",
        "AWS::S3::BucketPolicy",
        (),
        "not supported. moto's policy check also ignores Condition blocks, so a conditional "
        "Deny (the TLS-only statement) would deny every request: such statements are left out",
        removed=True,
        fill="PutBucketPolicy (without conditional Deny statements)",
        kind="bucket_policy",
    ),
    Gap(
        "queue policies",
        "AWS::SQS::QueuePolicy",
        (),
        "ignored",
        removed=True,
        fill="SetQueueAttributes(Policy)",
        kind="queue_policy",
        guard=_DROPS,
    ),
    Gap(
        "topic policies",
        "AWS::SNS::TopicPolicy",
        (),
        "ignored: the topic keeps SNS's default policy",
        removed=True,
        fill="SetTopicAttributes(Policy)",
        kind="topic_policy",
        guard=_DROPS,
    ),
    Gap(
        "key policies",
        "AWS::KMS::Key",
        ("KeyPolicy",),
        "the key is created (with its rotation setting) but KeyPolicy is stored as an "
        "object, so GetKeyPolicy returns no policy text",
        removed=False,
        fill="PutKeyPolicy",
        kind="key_policy",
        guard=_DROPS,
    ),
    Gap(
        "state machines",
        "AWS::StepFunctions::StateMachine",
        (),
        "DefinitionSubstitutions, S3 definitions, type, logging and tracing are ignored, and "
        "the executing interpreter cannot see a state machine created this way",
        removed=False,
        fill="DeleteStateMachine, then CreateStateMachine with the substituted definition",
        kind="state_machine",
    ),
    Gap(
        "distributed map batching",
        "AWS::StepFunctions::StateMachine",
        ("DefinitionUri",),
        "moto's ASL grammar has no ItemBatcher, no Express child workflows and no integer "
        "ToleratedFailurePercentage",
        removed=False,
        fill="scones.offline.asl_emulation rewrites the definition: one item per batch, "
        "Standard children, a decimal percentage",
        kind="state_machine",
        guard="test_moto_still_refuses_the_distributed_map_as_aws_takes_it",
    ),
    Gap(
        "layers",
        "AWS::Lambda::LayerVersion",
        (),
        "yields no ARN (functions that Ref it cannot be created)",
        removed=True,
        fill="PublishLayerVersion",
        kind="layer",
    ),
    Gap(
        "layers on functions",
        "AWS::Lambda::Function",
        ("Layers",),
        "dropped (and a Ref to a layer version has no ARN)",
        removed=False,
        fill="UpdateFunctionConfiguration(Layers) with the published layer",
        kind="layer_users",
    ),
    Gap(
        "alarms",
        "AWS::CloudWatch::Alarm",
        (),
        "ignored",
        removed=True,
        fill="PutMetricAlarm",
        kind="alarm",
        guard=_DROPS,
    ),
    Gap(
        "model package groups",
        "AWS::SageMaker::ModelPackageGroup",
        (),
        "skipped (moto's SageMaker API keeps registered versions once the group exists)",
        removed=True,
        fill="CreateModelPackageGroup",
        kind="model_package_group",
    ),
    Gap(
        "schedules",
        "AWS::Scheduler::Schedule",
        (),
        "ignored",
        removed=True,
        fill="CreateSchedule",
        kind="schedule",
    ),
    Gap(
        "table settings",
        "AWS::DynamoDB::Table",
        ("PointInTimeRecoverySpecification", "SSESpecification", "TimeToLiveSpecification"),
        "point-in-time recovery, SSE and TTL are dropped",
        removed=False,
        fill="UpdateContinuousBackups, UpdateTable, UpdateTimeToLive",
        kind="table",
        guard=_DROPS,
    ),
    Gap(
        "event source mappings",
        "AWS::Lambda::EventSourceMapping",
        (),
        "SQS mappings run inside SendMessage, once per message, and ignore batchItemFailures "
        "and the dead-letter queue",
        removed=False,
        fill="UpdateEventSourceMapping(Enabled=false); scones.offline.sqs_poller drains the "
        "queue as Lambda's poller does, MaximumConcurrency batches at once (without "
        "MaximumBatchingWindowInSeconds: it hands a batch over as soon as messages wait, so "
        "IngestBatchingWindowSeconds changes nothing offline)",
        kind="event_source_mappings",
    ),
    Gap(
        "bucket lifecycle rules",
        "AWS::S3::Bucket",
        ("LifecycleConfiguration",),
        "dropped (GetBucketLifecycleConfiguration answers NoSuchLifecycleConfiguration), and "
        "moto never expires an object: UploadRetentionDays, CaptureRetentionDays and the "
        "backfill results' expiry change nothing offline",
        removed=False,
        fill="",
        kind=None,
        guard=_DROPS,
    ),
    Gap(
        "function tracing and architectures",
        "AWS::Lambda::Function",
        ("TracingConfig", "Architectures"),
        "ignored, even through UpdateFunctionConfiguration",
        removed=False,
        fill="",
        kind=None,
    ),
    Gap(
        "function logging config",
        "AWS::Lambda::Function",
        ("LoggingConfig",),
        "dropped; offline each function logs to WORK_DIR/logs/FUNCTION.log (rotated at 5 MB, "
        "3 older files kept: FUNCTION.log.1 the newest), and a JSON "
        "LogFormat's application log level (INFO when none is named) reaches the function "
        "as AWS_LAMBDA_LOG_LEVEL, as Lambda passes it (``plan``); the worker sets the root "
        "logger up as Lambda's runtime does (that level, a handler writing JSON lines, or "
        "text lines without the JSON format)",
        removed=False,
        fill="",
        kind=None,
    ),
    Gap(
        "state machine log delivery",
        "AWS::StepFunctions::StateMachine",
        ("LoggingConfiguration",),
        "kept in the state machine's configuration, but moto delivers no execution logs",
        removed=False,
        fill="",
        kind=None,
    ),
)

# Resource types that moto's CloudFormation creates (some with a gap above).
CREATED_BY_MOTO = frozenset(
    {
        "AWS::S3::Bucket",
        "AWS::DynamoDB::Table",
        "AWS::KMS::Key",
        "AWS::SQS::Queue",
        "AWS::Lambda::Function",
        "AWS::Lambda::EventSourceMapping",
        "AWS::Lambda::Permission",
        "AWS::IAM::Role",
        "AWS::Logs::LogGroup",
        "AWS::SNS::Topic",
        "AWS::SNS::Subscription",
        "AWS::StepFunctions::StateMachine",
    }
)
# The optional SageMaker hosting resources cannot run here; their condition must be false.
NOT_OFFLINE = frozenset(
    {
        "AWS::SageMaker::Model",
        "AWS::SageMaker::EndpointConfig",
        "AWS::SageMaker::Endpoint",
        "AWS::SageMaker::DataQualityJobDefinition",
        "AWS::SageMaker::MonitoringSchedule",
    }
)
REMOVED_TYPES = frozenset(g.resource_type for g in GAPS if g.removed)


def supported_resource_types() -> frozenset[str]:
    """Every resource type the offline deployment handles: created by moto or filled here."""
    return CREATED_BY_MOTO | REMOVED_TYPES


def gaps_markdown() -> str:
    """The registry as the Markdown table in docs/offline.md."""
    lines = [
        "| gap | resource type | what moto does | removed | how it is filled |",
        "|---|---|---|---|---|",
    ]
    for gap in GAPS:
        settings = f" ({', '.join(gap.properties)})" if gap.properties else ""
        lines.append(
            f"| {gap.name} | `{gap.resource_type}`{settings} | {gap.why} | "
            f"{'yes' if gap.removed else 'no'} | {gap.fill or 'not filled (harmless offline)'} |"
        )
    return "\n".join(lines) + "\n"


class FilledStack(Protocol):
    """What ``fill`` needs of a deployed stack (``deploy.DeployedStack`` has it)."""

    stack_name: str
    endpoint_url: str
    filled: list[str]
    physical_ids: dict[str, str]

    def physical_id(self, logical_id: str) -> str: ...


@dataclass
class Plan:
    template: dict[str, Any]
    definitions: dict[str, str]
    # (kind, logical_id, properties with markers)
    fills: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    layer_users: dict[str, list[str]] = field(default_factory=dict)


def package_state_machines(
    template: dict[str, Any], project_root: Path, s3: Any, bucket: str
) -> dict[str, str]:
    """Upload each state machine definition like ``sam package``; return their texts."""
    definitions: dict[str, str] = {}
    for logical_id, resource in template.get("Resources", {}).items():
        if resource.get("Type") != "AWS::Serverless::StateMachine":
            continue
        uri = resource.get("Properties", {}).get("DefinitionUri")
        if not isinstance(uri, str):
            continue
        text = (project_root / uri).read_text(encoding="utf-8")
        key = f"statemachine/{logical_id}.asl.json"
        s3.put_object(Bucket=bucket, Key=key, Body=text.encode("utf-8"))
        resource["Properties"]["DefinitionUri"] = f"s3://{bucket}/{key}"
        definitions[logical_id] = text
    return definitions


class _Extractor:
    def __init__(self, outputs: dict[str, Any]) -> None:
        self.outputs = outputs

    def __call__(self, value: Any) -> Any:
        if isinstance(value, dict):
            if len(value) == 1 and next(iter(value)) in _INTRINSICS:
                if value == {"Ref": "AWS::NoValue"}:
                    return value
                name = f"{OUTPUT_PREFIX}{len(self.outputs):04d}"
                self.outputs[name] = {"Value": value}
                return {_MARKER: name}
            return {k: self(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self(v) for v in value]
        return value


def resolve(value: Any, resolved: dict[str, str]) -> Any:
    if isinstance(value, dict):
        if set(value) == {_MARKER}:
            return resolved[value[_MARKER]]
        return {k: resolve(v, resolved) for k, v in value.items() if v != {"Ref": "AWS::NoValue"}}
    if isinstance(value, list):
        return [resolve(v, resolved) for v in value if v != {"Ref": "AWS::NoValue"}]
    return value


def plan(cfn: dict[str, Any], definitions: dict[str, str]) -> Plan:
    """Copy the template, pull out what moto drops, and add resolving outputs."""
    template = copy.deepcopy(cfn)
    outputs = template.setdefault("Outputs", {})
    extract = _Extractor(outputs)
    result = Plan(template=template, definitions=definitions)
    resources = template["Resources"]
    for logical_id in list(resources):
        resource = resources[logical_id]
        kind = resource["Type"]
        props = resource.get("Properties", {})
        first_output = len(outputs)
        if kind == "AWS::Lambda::Function":
            _pass_application_log_level(props)
        for gap in _FILLED_BY_TYPE.get(kind, ()):
            if gap.kind == "layer_users":
                for layer in props.pop("Layers", []):
                    if not (isinstance(layer, dict) and "Ref" in layer):
                        raise ValueError(f"{logical_id}: only Ref layers are supported offline")
                    result.layer_users.setdefault(layer["Ref"], []).append(logical_id)
            elif gap.kind == "event_source_mappings":
                result.fills.append((gap.kind, logical_id, {}))
            else:
                wanted = props if not gap.properties else _subset(props, gap.properties)
                if wanted:
                    result.fills.append((str(gap.kind), logical_id, extract(wanted)))
            if gap.removed:
                del resources[logical_id]
        condition = resource.get("Condition")
        if condition:
            # Outputs of a conditional resource exist only when the resource does.
            for name in list(outputs)[first_output:]:
                outputs[name]["Condition"] = condition
    # Resources that were removed may still be named in DependsOn.
    removed = set(cfn["Resources"]) - set(resources)
    for resource in resources.values():
        depends = resource.get("DependsOn")
        if depends:
            kept = [
                d for d in ([depends] if isinstance(depends, str) else depends) if d not in removed
            ]
            if kept:
                resource["DependsOn"] = kept
            else:
                resource.pop("DependsOn")
    return result


def _pass_application_log_level(props: dict[str, Any]) -> None:
    """What Lambda does for a function that logs JSON: its application log level (INFO when
    the config names none) reaches the code as ``AWS_LAMBDA_LOG_LEVEL``, with the format as
    ``AWS_LAMBDA_LOG_FORMAT``. Powertools' Logger takes that level before its own."""
    logging = props.get("LoggingConfig") or {}
    if logging.get("LogFormat") != "JSON":
        return
    variables = props.setdefault("Environment", {}).setdefault("Variables", {})
    variables["AWS_LAMBDA_LOG_LEVEL"] = logging.get("ApplicationLogLevel", "INFO")
    variables["AWS_LAMBDA_LOG_FORMAT"] = "JSON"


def _subset(props: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {name: props[name] for name in names if name in props}


_FILLED_BY_TYPE: dict[str, list[Gap]] = {}
for _gap in GAPS:
    if _gap.filled:
        _FILLED_BY_TYPE.setdefault(_gap.resource_type, []).append(_gap)
_REMOVED_KINDS = frozenset(g.kind for g in GAPS if g.removed)


def fill(plan_: Plan, stack: FilledStack, session: boto3.Session, resolved: dict[str, str]) -> None:
    """Apply every planned fill against the running moto server."""
    client = _Clients(session, stack.endpoint_url)
    layer_arns: dict[str, str] = {}
    ordered = sorted(plan_.fills, key=lambda item: _ORDER.index(item[0]))
    for kind, logical_id, props in ordered:
        if logical_id not in stack.physical_ids and kind not in _REMOVED_KINDS:
            continue  # a conditional resource that was not created
        try:
            values = resolve(props, resolved)
        except KeyError as exc:
            raise RuntimeError(
                f"moto could not resolve a value of {logical_id} ({kind}): {exc}"
            ) from exc
        if kind == "layer":
            layer_arns[logical_id] = _publish_layer(client, values)
            for user in plan_.layer_users.get(logical_id, []):
                client("lambda").update_function_configuration(
                    FunctionName=stack.physical_id(user), Layers=[layer_arns[logical_id]]
                )
            stack.filled.append(f"layer {logical_id}")
        elif kind == "bucket_versioning":
            stack.filled.append(_put_versioning(client, stack, logical_id, values))
        elif kind == "bucket_notifications":
            _put_notifications(
                client, stack.physical_id(logical_id), values["NotificationConfiguration"]
            )
            stack.filled.append(f"notifications {logical_id}")
        elif kind == "queue_policy":
            policy = json.dumps(values["PolicyDocument"])
            for queue_url in values["Queues"]:
                client("sqs").set_queue_attributes(
                    QueueUrl=queue_url, Attributes={"Policy": policy}
                )
            stack.filled.append(f"queue policy {logical_id}")
        elif kind == "topic_policy":
            policy = json.dumps(values["PolicyDocument"])
            for topic_arn in values["Topics"]:
                client("sns").set_topic_attributes(
                    TopicArn=topic_arn, AttributeName="Policy", AttributeValue=policy
                )
            stack.filled.append(f"topic policy {logical_id}")
        elif kind == "key_policy":
            stack.filled.append(_put_key_policy(client, stack, logical_id, values))
        elif kind == "bucket_policy":
            stack.filled.append(_put_bucket_policy(client, logical_id, values))
        elif kind == "state_machine":
            _recreate_state_machine(client, stack, logical_id, values, plan_.definitions)
            stack.filled.append(f"state machine {logical_id}")
        elif kind == "table":
            _complete_table(client, stack.physical_id(logical_id), values)
            stack.filled.append(f"table settings {logical_id}")
        elif kind == "alarm":
            client("cloudwatch").put_metric_alarm(
                AlarmName=str(values.get("AlarmName") or f"{stack.stack_name}-{logical_id}"),
                **_alarm_args(values),
            )
            stack.filled.append(f"alarm {logical_id}")
        elif kind == "schedule":
            _create_schedule(client, stack, logical_id, values)
            stack.filled.append(f"schedule {logical_id}")
        elif kind == "model_package_group":
            stack.filled.append(_create_model_package_group(client, logical_id, values))
        elif kind == "event_source_mappings":
            continue  # all at once, below
    if any(kind == "event_source_mappings" for kind, _, _ in plan_.fills):
        _disable_event_source_mappings(client)
        stack.filled.append("event source mappings (drained by the offline poller)")


_ORDER = [
    "layer",
    "table",
    "key_policy",
    "queue_policy",
    "topic_policy",
    "bucket_policy",
    "bucket_versioning",
    "bucket_notifications",
    "state_machine",
    "alarm",
    "schedule",
    "model_package_group",
    "event_source_mappings",
]


class _Clients:
    def __init__(self, session: boto3.Session, endpoint_url: str) -> None:
        self._session = session
        self._endpoint_url = endpoint_url
        self._cache: dict[str, Any] = {}

    def __call__(self, service: str) -> Any:
        if service not in self._cache:
            self._cache[service] = self._session.client(service, endpoint_url=self._endpoint_url)
        return self._cache[service]


def _publish_layer(client: _Clients, props: dict[str, Any]) -> str:
    content = props["Content"]
    data = client("s3").get_object(Bucket=content["S3Bucket"], Key=content["S3Key"])["Body"].read()
    response = client("lambda").publish_layer_version(
        LayerName=str(props.get("LayerName") or "shared"),
        Description=str(props.get("Description", "")),
        Content={"ZipFile": data},
        CompatibleRuntimes=props.get("CompatibleRuntimes", []),
        CompatibleArchitectures=props.get("CompatibleArchitectures", []),
    )
    return str(response["LayerVersionArn"])


def _put_notifications(client: _Clients, bucket: str, config: dict[str, Any]) -> None:
    queue_configs = []
    for entry in config.get("QueueConfigurations", []):
        rules = entry.get("Filter", {}).get("S3Key", {}).get("Rules", [])
        item: dict[str, Any] = {"QueueArn": entry["Queue"], "Events": [entry["Event"]]}
        if rules:
            item["Filter"] = {
                "Key": {"FilterRules": [{"Name": r["Name"], "Value": r["Value"]} for r in rules]}
            }
        queue_configs.append(item)
    client("s3").put_bucket_notification_configuration(
        Bucket=bucket, NotificationConfiguration={"QueueConfigurations": queue_configs}
    )


def _put_bucket_policy(client: _Clients, logical_id: str, props: dict[str, Any]) -> str:
    document = dict(props["PolicyDocument"])
    statements = document.get("Statement", [])
    kept = [s for s in statements if not (s.get("Effect") == "Deny" and "Condition" in s)]
    if kept:
        document["Statement"] = kept
        client("s3").put_bucket_policy(Bucket=props["Bucket"], Policy=json.dumps(document))
    skipped = len(statements) - len(kept)
    return f"bucket policy {logical_id} ({skipped} conditional Deny statement(s) left out)"


def _recreate_state_machine(
    client: _Clients,
    stack: FilledStack,
    logical_id: str,
    props: dict[str, Any],
    definitions: dict[str, str],
) -> None:
    sfn = client("stepfunctions")
    arn = stack.physical_id(logical_id)
    name = arn.rsplit(":", 1)[-1]
    with contextlib.suppress(sfn.exceptions.StateMachineDoesNotExist):
        sfn.delete_state_machine(stateMachineArn=arn)
    substitutions = props.get("DefinitionSubstitutions", {})
    problems = check_definition(definitions[logical_id], substitutions)
    if problems:
        raise RuntimeError(f"{logical_id} definition: " + "; ".join(problems))
    # moto cannot parse a Distributed Map's ItemBatcher: see scones.offline.asl_emulation.
    definition = asl_emulation.for_moto(substitute(definitions[logical_id], substitutions))
    kwargs: dict[str, Any] = {
        "name": name,
        "definition": definition,
        "roleArn": props["RoleArn"],
        "type": props.get("StateMachineType", "STANDARD"),
    }
    if props.get("TracingConfiguration"):
        kwargs["tracingConfiguration"] = {
            "enabled": str(props["TracingConfiguration"].get("Enabled")).lower() == "true"
        }
    if props.get("LoggingConfiguration"):
        logging = props["LoggingConfiguration"]
        kwargs["loggingConfiguration"] = {
            "level": logging.get("Level", "OFF"),
            "includeExecutionData": str(logging.get("IncludeExecutionData")).lower() == "true",
            "destinations": [
                {
                    "cloudWatchLogsLogGroup": {
                        "logGroupArn": d["CloudWatchLogsLogGroup"]["LogGroupArn"]
                    }
                }
                for d in logging.get("Destinations", [])
            ],
        }
    created = sfn.create_state_machine(**kwargs)["stateMachineArn"]
    if created != arn:
        raise RuntimeError(f"state machine recreated as {created}, expected {arn}")


def _complete_table(client: _Clients, table: str, props: dict[str, Any]) -> None:
    ddb = client("dynamodb")
    pitr = props.get("PointInTimeRecoverySpecification", {})
    if str(pitr.get("PointInTimeRecoveryEnabled")).lower() == "true":
        ddb.update_continuous_backups(
            TableName=table,
            PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
        )
    sse = props.get("SSESpecification", {})
    if str(sse.get("SSEEnabled")).lower() == "true":
        ddb.update_table(TableName=table, SSESpecification={"Enabled": True})
    ttl = props.get("TimeToLiveSpecification", {})
    if str(ttl.get("Enabled")).lower() == "true":
        ddb.update_time_to_live(
            TableName=table,
            TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True},
        )


def _alarm_args(props: dict[str, Any]) -> dict[str, Any]:
    args: dict[str, Any] = {
        "AlarmDescription": props.get("AlarmDescription", ""),
        "EvaluationPeriods": int(props["EvaluationPeriods"]),
        "Threshold": float(props["Threshold"]),
        "ComparisonOperator": props["ComparisonOperator"],
        "AlarmActions": props.get("AlarmActions", []),
    }
    if "Metrics" in props:  # metric math: CloudFormation's shape is the API's
        args["Metrics"] = [_metric_query(query) for query in props["Metrics"]]
    else:
        args |= {
            "Namespace": props["Namespace"],
            "MetricName": props["MetricName"],
            "Dimensions": props.get("Dimensions", []),
            "Statistic": props["Statistic"],
            "Period": int(props["Period"]),
        }
    if "TreatMissingData" in props:
        args["TreatMissingData"] = props["TreatMissingData"]
    return args


def _metric_query(query: dict[str, Any]) -> dict[str, Any]:
    out = dict(query)
    if "ReturnData" in out:
        out["ReturnData"] = str(out["ReturnData"]).lower() == "true"
    if "MetricStat" in out:
        out["MetricStat"] = {**out["MetricStat"], "Period": int(out["MetricStat"]["Period"])}
    return out


def _create_schedule(
    client: _Clients, stack: FilledStack, logical_id: str, props: dict[str, Any]
) -> None:
    target = props["Target"]
    target_args: dict[str, Any] = {"Arn": target["Arn"], "RoleArn": target["RoleArn"]}
    if "RetryPolicy" in target:
        target_args["RetryPolicy"] = {
            "MaximumRetryAttempts": int(target["RetryPolicy"]["MaximumRetryAttempts"])
        }
    if "Input" in target:
        target_args["Input"] = target["Input"]
    if "DeadLetterConfig" in target:
        target_args["DeadLetterConfig"] = {"Arn": target["DeadLetterConfig"]["Arn"]}
    client("scheduler").create_schedule(
        Name=str(props.get("Name") or f"{stack.stack_name}-{logical_id}"),
        ScheduleExpression=props["ScheduleExpression"],
        FlexibleTimeWindow={"Mode": props.get("FlexibleTimeWindow", {}).get("Mode", "OFF")},
        State=props.get("State", "ENABLED"),
        Target=target_args,
    )


def _put_key_policy(
    client: _Clients, stack: FilledStack, logical_id: str, values: dict[str, Any]
) -> str:
    client("kms").put_key_policy(
        KeyId=stack.physical_id(logical_id),
        PolicyName="default",
        Policy=json.dumps(values["KeyPolicy"]),
    )
    return f"key policy {logical_id}"


def _put_versioning(
    client: _Clients, stack: FilledStack, logical_id: str, values: dict[str, Any]
) -> str:
    client("s3").put_bucket_versioning(
        Bucket=stack.physical_id(logical_id),
        VersioningConfiguration={"Status": str(values["VersioningConfiguration"]["Status"])},
    )
    return f"versioning {logical_id}"


def _create_model_package_group(client: _Clients, logical_id: str, props: dict[str, Any]) -> str:
    group: dict[str, Any] = {"ModelPackageGroupName": props["ModelPackageGroupName"]}
    if props.get("ModelPackageGroupDescription"):
        group["ModelPackageGroupDescription"] = props["ModelPackageGroupDescription"]
    client("sagemaker").create_model_package_group(**group)
    return f"model package group {logical_id}"


def _disable_event_source_mappings(client: _Clients) -> None:
    lam = client("lambda")
    for mapping in lam.list_event_source_mappings().get("EventSourceMappings", []):
        lam.update_event_source_mapping(UUID=mapping["UUID"], Enabled=False)
