"""The model server's own defaults (cheap to import: standard library only).

The server owns its settings: the container (``python -m scones.serving``) takes
them from here and from the environment SageMaker gives it; ``scones serve``
replaces the endpoint name, the body limit and the capture percentage with
``template.yaml``'s parameters and passes them in. Nothing here reads the template.
"""

from __future__ import annotations

from pathlib import PurePosixPath

# -- the SageMaker container contract -------------------------------------------------
# SageMaker hosting sends requests to this port inside the container ...
SAGEMAKER_PORT = 8080
# ... unless it sets this variable (inference pipelines give each container its own port).
ENV_PORT = "SAGEMAKER_BIND_TO_PORT"
# SageMaker unpacks the model artifact (ModelDataUrl's model.tar.gz) here.
SAGEMAKER_MODEL_DIR = PurePosixPath("/opt/ml/model")
# SageMaker reaches the container from outside it: listen on every interface.
CONTAINER_HOST = "0.0.0.0"  # noqa: S104
# InvokeEndpoint's documented payload limit for real-time endpoints: SageMaker never
# forwards a larger body, so the container needs no other default.
RUNTIME_MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
# SageMaker does not tell a container its endpoint's name; the runtime route
# (/endpoints/NAME/invocations, for local clients) answers to this one by default.
CONTAINER_ENDPOINT_NAME = "scones-model"

# The container's own variables (not SageMaker's), for running the image elsewhere.
ENV_MODEL_DIR = "SCONES_MODEL_DIR"
ENV_HOST = "SCONES_HOST"
ENV_ENDPOINT_NAME = "SCONES_ENDPOINT_NAME"
# SageMaker's variable for how many requests a model server handles at once (its
# frameworks' worker count); here, the inference slots.
ENV_WORKERS = "SAGEMAKER_MODEL_SERVER_WORKERS"

# -- outside the container (`scones serve`, embedded servers) ----------------------------
DEFAULT_HOST = "127.0.0.1"
# SageMaker's name for the only variant of a single-model endpoint created by the template.
DEFAULT_VARIANT = "AllTraffic"
DEFAULT_CAPTURE_PERCENT = 100.0
# Seconds between capture file writes (SageMaker writes every few minutes; offline wants seconds).
DEFAULT_FLUSH_INTERVAL_S = 2.0
# The longest interval taken: a day (the monitor reads hourly folders; a longer wait only
# holds records in memory, and past threading's own limit the flusher thread dies).
MAX_FLUSH_INTERVAL_S = 86_400.0

# The request hardening defaults; `scones serve --help` names the flags.
# Seconds a request may wait for an inference slot before it is refused as throttled:
# inside the workflow's endpoint timeout (EndpointTimeoutSeconds, default 5 s), so its
# retry-with-backoff takes over.
DEFAULT_QUEUE_WAIT_S = 2.0
# Seconds a client has to send a whole request head (line and headers). Slowloris guard.
DEFAULT_HEADER_TIMEOUT_S = 10.0
# Seconds a client has to send the whole body: a 16 MiB body (MaxImageBytes) needs 560 KB/s.
DEFAULT_BODY_TIMEOUT_S = 30.0
# The pixel limit is this many times the model's input area (64x per side: 2048x2048 for a
# 32x32 model, a 4-megapixel photo). The model sees input_size pixels, so more only costs
# memory: the cap keeps one decoded image near 16 MB (RGBA) instead of gigabytes.
PIXELS_PER_INPUT_PIXEL = 64 * 64
# Request bodies the server holds at once, per inference slot, counted in its largest
# body (--max-body-bytes): enough to keep every slot busy while others arrive, few
# enough that a burst of large bodies cannot take the container's memory.
BODIES_PER_SLOT = 4
