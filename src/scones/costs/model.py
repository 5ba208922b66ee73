"""The cost per million images, line by line, from the template, the ASL and measurements.

Inputs: the template's settings (``WorkflowType``, each function's ``MemorySize`` and
architecture, ``TracingMode``, ``UploadRetentionDays``, ``CaptureRetentionDays``,
``DataCaptureSamplingPercentage``, the SQS batch size), the workflow's happy path
(``scones.costs.workflow``), and what ``scones bench handlers`` measured: each function's
duration, log bytes and the record's item size. Prices come from ``scones.costs.prices``
(dated, with sources).

Every figure is for one million images in one month (so a monthly fixed cost, the
real-time endpoint's instance, is divided by the month's images).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from scones_core.image_rules import lambda_cpu_share

from scones.costs.prices import REALTIME_INSTANCE_PRICES, price
from scones.costs.workflow import batch_path, happy_path, is_record_writer, load_workflow
from scones.template_params import load_template, parameter_defaults

MILLION = 1_000_000
HOURS_PER_MONTH = 730
# Lambda's own lines per invocation (START/END come from the offline worker too; REPORT
# does not): "REPORT RequestId: <36> Duration: ... Billed Duration: ... Memory Size: ...
# Max Memory Used: ..." is about 160 bytes.
REPORT_LINE_BYTES = 160
# The offline worker's own START and END lines ("START RequestId: <uuid>" and "END ...").
WORKER_LINES_BYTES = 106
# What a Step Functions task adds to the measured function time on AWS (invoke, the state's
# own bookkeeping), and a direct service integration's round trip; Express duration only.
TASK_OVERHEAD_MS = 25.0
SERVICE_CALL_MS = 15.0
# What a function waits for on AWS, per invocation (assumed, not measured: offline the waits
# are the emulator's, inflated by the shared machine). S3 GET: first byte plus the body at
# 80 MB/s; InvokeEndpoint: the shipped model's own 3 ms (`scones bench model`) plus 12 ms of
# network and SageMaker; StartExecution: 25 ms, one per SQS batch.
S3_FIRST_BYTE_MS = 20.0
S3_MB_PER_S = 80.0
ENDPOINT_MS = 15.0
START_EXECUTION_MS = 25.0
SECONDS_PER_MONTH = 30 * 86400
# An S3 event notification is about 1.5 KB: one SQS request (64 KB chunks).
EXPRESS_MEMORY_STEP_MB = 64


@dataclass(frozen=True)
class Settings:
    workflow_type: str
    tracing: str
    memory_mb: dict[str, int]
    architectures: dict[str, str]
    platform_logs: dict[str, bool]  # False where SystemLogLevel drops START/END/REPORT
    upload_retention_days: int
    capture_retention_days: int
    batch_size: int
    batch_window_s: float
    capture_percent: float
    log_level: str
    instance_type: str
    instance_count: int  # outside a retraining canary (EndpointInstanceCount)

    @classmethod
    def from_template(cls, overrides: dict[str, str] | None = None) -> Settings:
        params = {**parameter_defaults(), **(overrides or {})}
        template = load_template()
        globals_ = template["Globals"]["Function"]
        memory: dict[str, int] = {}
        arch: dict[str, str] = {}
        platform_logs: dict[str, bool] = {}

        def value(setting: Any) -> str:
            return params[setting["Ref"]] if isinstance(setting, dict) else str(setting)

        for name, resource in template["Resources"].items():
            if resource["Type"] != "AWS::Serverless::Function":
                continue
            props = resource["Properties"]
            memory[name] = int(
                overrides_get(overrides, f"{name}.MemorySize")
                or value(props.get("MemorySize", globals_["MemorySize"]))
            )
            arch[name] = next(iter(props.get("Architectures", globals_["Architectures"])))
            system = props.get("LoggingConfig", {}).get("SystemLogLevel", "INFO")
            platform_logs[name] = system in ("DEBUG", "INFO")
        mapping = template["Resources"]["StartWorkflowUploadsMapping"]["Properties"]

        return cls(
            workflow_type=params["WorkflowType"],
            tracing=params["TracingMode"],
            memory_mb=memory,
            architectures=arch,
            platform_logs=platform_logs,
            upload_retention_days=int(params["UploadRetentionDays"]),
            capture_retention_days=int(params["CaptureRetentionDays"]),
            batch_size=int(value(mapping["BatchSize"])),
            batch_window_s=float(value(mapping.get("MaximumBatchingWindowInSeconds", 0))),
            capture_percent=float(params["DataCaptureSamplingPercentage"]),
            log_level=params["LogLevel"],
            instance_type=params["EndpointInstanceType"],
            instance_count=int(params["EndpointInstanceCount"]),
        )


def overrides_get(overrides: dict[str, str] | None, key: str) -> str | None:
    return (overrides or {}).get(key)


@dataclass
class Line:
    item: str
    usd: float  # per million images
    basis: str
    counts_toward_target: bool = True


@dataclass
class Estimate:
    title: str
    lines: list[Line] = field(default_factory=list)

    def add(self, item: str, usd: float, basis: str, target: bool = True) -> None:
        self.lines.append(Line(item, usd, basis, target))

    @property
    def total(self) -> float:
        return sum(line.usd for line in self.lines)

    @property
    def target_total(self) -> float:
        return sum(line.usd for line in self.lines if line.counts_toward_target)


def lambda_gb_second(architecture: str) -> float:
    return price("lambda_arm_gb_second" if architecture == "arm64" else "lambda_x86_gb_second")


def aws_wait_ms(logical_id: str, upload_bytes: float, execution_ms: float = 0.0) -> float:
    """What ``logical_id`` waits for on AWS per invocation (the assumptions above).

    ``execution_ms``: how long the start function waits for its batch's execution (under
    Express it runs each one to its end, the queue's backpressure; 0 under Standard)."""
    if logical_id == "SerializeImageFunction":
        return S3_FIRST_BYTE_MS + upload_bytes / (S3_MB_PER_S * 1e6) * 1000
    if logical_id == "ClassifyImageFunction":
        return ENDPOINT_MS
    if logical_id == "StartWorkflowFunction":
        return START_EXECUTION_MS + execution_ms  # one execution per batch
    return 0.0


def modelled_duration_ms(function: dict[str, Any], memory_mb: int, wait_ms: float) -> float:
    """Duration at ``memory_mb``: the measured CPU time per invocation scaled by Lambda's CPU
    share (one vCPU at 1,769 MB, taken as one core of the measuring machine), plus what the
    function waits for on AWS (``aws_wait_ms``). A model, not a measurement on Lambda."""
    return float(function["cpu_ms_mean"]) / lambda_cpu_share(memory_mb) + wait_ms


def start_function_run_wait_ms(
    measured: dict[str, Any], kind: str, overrides: dict[str, str] | None = None
) -> float:
    """How long the start function waits for each batch's execution with these settings:
    the execution's modelled time under Express, 0 under Standard."""
    settings = Settings.from_template(overrides)
    if settings.workflow_type != "EXPRESS":
        return 0.0
    workflow = load_workflow(overrides)
    data = measured["kinds"][kind]
    return express_execution_ms(
        workflow,
        happy_path(workflow),
        data["functions"],
        settings,
        float(data["upload_bytes_mean"]),
    )


def express_execution_ms(
    workflow: Any,
    path: list[str],
    functions: dict[str, Any],
    settings: Settings,
    upload_bytes: float,
) -> float:
    """How long one execution runs (its batch's images side by side, so about one image's
    path): each Lambda task's modelled duration and overhead, and each service call."""
    lambda_ms = 0.0
    for state in path:
        if state in workflow.lambda_functions:
            logical_id = workflow.lambda_functions[state]
            lambda_ms += TASK_OVERHEAD_MS + modelled_duration_ms(
                functions[logical_id],
                settings.memory_mb[logical_id],
                aws_wait_ms(logical_id, upload_bytes),
            )
    service_ms = SERVICE_CALL_MS * sum(
        1
        for state in path
        if workflow.states[state]["Type"] == "Task" and state not in workflow.lambda_functions
    )
    return lambda_ms + service_ms


def batch_fill(images_per_month: int, batch_size: int, window_s: float) -> float:
    """Messages per start-function invocation: what arrives within the batching window."""
    rate = images_per_month / SECONDS_PER_MONTH
    return max(1.0, min(float(batch_size), rate * window_s))


def estimate(  # noqa: PLR0915 (one line item after the other)
    measured: dict[str, Any],
    *,
    kind: str = "photo",
    workflow_type: str | None = None,
    endpoint: str = "none",
    images_per_month: int = MILLION,
    overrides: dict[str, str] | None = None,
    title: str | None = None,
) -> Estimate:
    """Per-million-image cost of the deployed template with ``measured`` numbers."""
    settings = Settings.from_template(overrides)
    wf_type = workflow_type or settings.workflow_type
    workflow = load_workflow(overrides)
    data = measured["kinds"][kind]
    functions = data["functions"]
    est = Estimate(title or f"{wf_type.title()}, {kind} uploads, endpoint: {endpoint}")
    m = MILLION

    # -- ingest: the uploader's PUT, S3 -> SQS -> start function ------------------------
    est.add("S3 PUT (the uploader's)", m * price("s3_put"), "1 PUT per image", target=False)
    per_batch = batch_fill(images_per_month, settings.batch_size, settings.batch_window_s)
    upload_bytes = float(data["upload_bytes_mean"])
    est.add(
        "SQS (send, receive, delete)",
        m * (1 + 2 / per_batch) * price("sqs_request"),
        f"1 send per image + receive and delete per batch of {per_batch:g}",
    )
    # -- the workflow's Lambda functions (from the ASL's happy path) ---------------------
    path = happy_path(workflow)
    # The batch's images run side by side: the execution lasts about one image's time.
    execution_ms = express_execution_ms(workflow, path, functions, settings, upload_bytes)
    invoked = ["StartWorkflowFunction"] + [
        workflow.lambda_functions[s] for s in path if s in workflow.lambda_functions
    ]
    for logical_id in dict.fromkeys(invoked):
        memory = settings.memory_mb[logical_id]
        fn = functions[logical_id]
        per_image = 1 / per_batch if logical_id == "StartWorkflowFunction" else 1.0
        # The start function was measured at ``messages_per_invocation``; its CPU is taken
        # to grow with the messages of a batch (all of it: an upper bound).
        per_message = float(fn.get("messages_per_invocation") or 1.0)
        cpu_fn = {
            **fn,
            "cpu_ms_mean": float(fn["cpu_ms_mean"])
            * (per_batch / per_message if per_image < 1 else 1),
        }
        # Under Express the start function waits for its batch's execution (the queue's
        # backpressure, scones_core.ingest), and is billed for the wait.
        waits_for_run = logical_id == "StartWorkflowFunction" and wf_type == "EXPRESS"
        wait = aws_wait_ms(logical_id, upload_bytes, execution_ms if waits_for_run else 0.0)
        duration = modelled_duration_ms(cpu_fn, memory, wait)
        gb_s = duration / 1000 * memory / 1024
        arch = settings.architectures[logical_id]
        usd = m * per_image * (price("lambda_request") + gb_s * lambda_gb_second(arch))
        est.add(
            f"Lambda {logical_id.removesuffix('Function')}",
            usd,
            f"{duration:.0f} ms x {memory} MB {arch}"
            + (f", per batch of {per_batch:g}" if per_image < 1 else "")
            + (f", {execution_ms:.0f} ms of it waiting for the execution" if waits_for_run else ""),
        )
    # -- Step Functions: one execution per batch; its Map runs the images side by side --
    per_execution = batch_path(workflow)
    executions = 1 / per_batch if per_execution else 1.0
    if wf_type == "STANDARD":
        transitions = len(path) + len(per_execution) * executions
        est.add(
            "Step Functions Standard",
            m * transitions * price("sfn_standard_transition"),
            f"{transitions:g} transitions per image ({' > '.join(path)}"
            + (f"; + {len(per_execution)} per batch of {per_batch:g}" if per_execution else "")
            + ")",
        )
    else:
        billed_ms = math.ceil(execution_ms / 100) * 100
        gb_s = billed_ms / 1000 * EXPRESS_MEMORY_STEP_MB / 1024
        est.add(
            "Step Functions Express",
            m * executions * (price("sfn_express_request") + gb_s * price("sfn_express_gb_second")),
            f"1 request + {billed_ms} ms x 64 MB ({len(path)} states)"
            + (f" per batch of {per_batch:g}" if per_execution else ""),
        )
    # -- records ----------------------------------------------------------------------------
    writes = sum(1 for s in path if is_record_writer(workflow.states[s]))
    item = float(data["record_item_bytes"].get("max") or 1024)
    wru = math.ceil(item / 1024)
    indexes = len(
        load_template()["Resources"]["ResultsTable"]["Properties"].get("GlobalSecondaryIndexes", [])
    )
    est.add(
        "DynamoDB writes",
        m * writes * wru * (1 + indexes) * price("dynamodb_wru"),
        f"{writes} putItem of {item:.0f} B = {wru} WRU, + {indexes} index write(s)",
    )
    gb = m * item * (1 + indexes) / 1e9
    est.add(
        "DynamoDB storage + PITR (per month kept)",
        gb * (price("dynamodb_storage_gb_month") + price("dynamodb_pitr_gb_month")),
        f"{gb:.2f} GB with the index; grows each month the records are kept",
        target=False,
    )
    # -- S3 -----------------------------------------------------------------------------------
    est.add("S3 GET (serialize)", m * price("s3_get"), "1 GET of the exact version")
    upload_gb = m * float(data["upload_bytes_mean"]) / 1e9
    months, basis = _kept(upload_gb, settings.upload_retention_days, "UploadRetentionDays")
    est.add(
        "S3 storage of uploads (per month kept)",
        upload_gb * months * price("s3_gb_month"),
        basis,
        target=False,
    )
    # -- logs and traces --------------------------------------------------------------------
    log_bytes = 0.0
    for logical_id in dict.fromkeys(invoked):
        fn = functions[logical_id]
        per = fn["log_bytes"] / max(1, fn["invocations"])
        if settings.platform_logs[logical_id]:
            per += REPORT_LINE_BYTES
        else:
            per = max(0.0, per - WORKER_LINES_BYTES)
        log_bytes += per / per_batch if logical_id == "StartWorkflowFunction" else per
    est.add(
        "CloudWatch Logs ingest",
        m * log_bytes / 1e9 * price("logs_ingest_gb"),
        f"{log_bytes:.0f} B per image at {measured.get('log_level', '?')} (measured; "
        "Lambda's START/END/REPORT lines only where SystemLogLevel keeps them)",
    )
    traced = settings.tracing == "Active"
    est.add(
        "X-Ray",
        m * price("xray_trace") if traced else 0.0,
        "1 trace per image (Active)" if traced else "PassThrough: no traces of its own",
    )
    est.add(
        "KMS (SSE-KMS with a bucket key)",
        0.0,
        "the bucket key caches the data key: ~0 requests per object (without it: 2 = $6/M)",
    )
    # -- endpoint ---------------------------------------------------------------------------
    classify = functions["ClassifyImageFunction"]
    if endpoint == "realtime":
        count = settings.instance_count
        monthly = count * HOURS_PER_MONTH * price(REALTIME_INSTANCE_PRICES[settings.instance_type])
        est.add(
            f"SageMaker real-time {settings.instance_type}",
            monthly * m / images_per_month,
            f"{count} instance(s) x {HOURS_PER_MONTH} h, {images_per_month:,} images a month",
            target=False,
        )
    elif endpoint == "serverless":
        inference_s = float(classify["wall_ms"]["mean"]) / 1000
        est.add(
            "SageMaker serverless 1 GB",
            m * inference_s * price("sagemaker_serverless_gb_second"),
            f"{inference_s * 1000:.0f} ms x 1 GB per image (cold starts not billed)",
            target=False,
        )
    if endpoint != "none":
        request_kb = float(classify["request_bytes_max"]) / 1024
        est.add(
            "SageMaker data processed",
            m * request_kb / 1024 / 1024 * 2 * price("sagemaker_data_processed_gb"),
            f"~{request_kb:.1f} KB in + out per image",
            target=False,
        )
    if endpoint == "realtime":
        # Serverless Inference has no data capture (nor a second variant for the canary).
        capture_gb = m * request_kb * 1.4 / 1024 / 1024 * settings.capture_percent / 100
        months, basis = _kept(capture_gb, settings.capture_retention_days, "CaptureRetentionDays")
        est.add(
            "Data capture in S3 (per month kept)",
            capture_gb * months * price("s3_gb_month"),
            f"{settings.capture_percent:g}% sampled, {basis}",
            target=False,
        )
    return est


def _kept(gb: float, days: int, parameter: str) -> tuple[float, str]:
    """How many months of a month's ``gb`` a lifecycle rule of ``days`` keeps (0: forever),
    and the line's basis. The bucket is versioned: the data goes a day after it expires."""
    if not days:
        return 1.0, f"{gb:.1f} GB per month, forever ({parameter}=0)"
    months = (days + 1) / 30
    months = min(months, 1.0) if days >= 30 else months
    return months, f"{gb:.1f} GB kept {days} d (+1 d noncurrent)"


def original_project(measured: dict[str, Any], kind: str = "photo") -> Estimate:
    """The original Udacity flow: Standard, three x86 Lambdas at 128 MB (serialize, classify,
    filter), no records, no queue, traces off; the same measured handler times."""
    data = measured["kinds"][kind]["functions"]
    est = Estimate("Original project: Standard, three Lambdas (x86, 128 MB), no records")
    m = MILLION
    est.add("S3 PUT (the uploader's)", m * price("s3_put"), "1 PUT per image", target=False)
    est.add("S3 GET (serialize)", m * price("s3_get"), "1 GET")
    upload = float(measured["kinds"][kind]["upload_bytes_mean"])
    durations = {
        "serialize": modelled_duration_ms(
            data["SerializeImageFunction"], 128, aws_wait_ms("SerializeImageFunction", upload)
        ),
        "classify": modelled_duration_ms(
            data["ClassifyImageFunction"], 128, aws_wait_ms("ClassifyImageFunction", upload)
        ),
        "filter": 1.0,
    }
    for name, ms in durations.items():
        est.add(
            f"Lambda {name}",
            m * (price("lambda_request") + ms / 1000 * 0.125 * price("lambda_x86_gb_second")),
            f"{ms:.0f} ms x 128 MB x86",
        )
    est.add(
        "Step Functions Standard",
        m * 3 * price("sfn_standard_transition"),
        "3 transitions (serialize > classify > filter)",
    )
    return est
