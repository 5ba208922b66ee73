"""Where a SageMaker job's own program says why it failed.

SageMaker reads the first 1 KB of a file the program writes before it exits: a training
job's ``/opt/ml/output/failure`` becomes its ``FailureReason``, a processing job's
``/opt/ml/output/message`` its ``ExitMessage``. So a refusal reaches the retraining
run's record as the program's sentence, not a traceback's last line.
"""

from __future__ import annotations

from pathlib import Path

EXIT_MESSAGE_BYTES = 1024  # SageMaker keeps the first 1 KB; it must stay valid UTF-8
TRAINING_JOB_CONFIG = Path("/opt/ml/input/config/hyperparameters.json")
TRAINING_FAILURE = Path("/opt/ml/output/failure")
PROCESSING_JOB_CONFIG = Path("/opt/ml/config/processingjobconfig.json")
PROCESSING_EXIT_MESSAGE = Path("/opt/ml/output/message")


def write_exit_message(path: Path, text: str) -> None:
    """``text`` cut to SageMaker's 1 KB on a character boundary (bytes that are not UTF-8
    would fail the job with a ClientError instead of naming the error)."""
    data = text.encode("utf-8")[:EXIT_MESSAGE_BYTES].decode("utf-8", errors="ignore")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data, encoding="utf-8")
