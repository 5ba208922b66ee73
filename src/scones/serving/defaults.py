"""Defaults shared by the server, its CLI and the container (cheap to import)."""

from __future__ import annotations

# SageMaker hosting sends requests to this port inside the container.
SAGEMAKER_PORT = 8080
DEFAULT_HOST = "127.0.0.1"
# SageMaker's name for the only variant of a single-model endpoint created by the template.
DEFAULT_VARIANT = "AllTraffic"
DEFAULT_CAPTURE_PERCENT = 100.0
# Seconds between capture file writes (SageMaker writes every few minutes; offline wants seconds).
DEFAULT_FLUSH_INTERVAL_S = 2.0

# The request hardening defaults (issue #10); `scones serve --help` names the flags.
# Seconds a request may wait for an inference slot before it is refused as throttled:
# well inside the workflow's 10 s endpoint timeout, so its retry-with-backoff takes over.
DEFAULT_QUEUE_WAIT_S = 2.0
# Seconds a client has to send a whole request head (line and headers). Slowloris guard.
DEFAULT_HEADER_TIMEOUT_S = 10.0
# Seconds a client has to send the whole body: a 5 MiB body (MaxImageBytes) needs 175 KB/s.
DEFAULT_BODY_TIMEOUT_S = 30.0
# The pixel limit is this many times the model's input area (64x per side: 2048x2048 for a
# 32x32 model, a 4-megapixel photo). The model sees input_size pixels, so more only costs
# memory: the cap keeps one decoded image near 16 MB (RGBA) instead of gigabytes.
PIXELS_PER_INPUT_PIXEL = 64 * 64
