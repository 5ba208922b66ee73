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
