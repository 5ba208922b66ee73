"""A Lambda execution environment in a child process.

``python -m scones.offline.lambda_worker HANDLER REQUEST_FD RESPONSE_FD [FUNCTION_NAME]``
imports the handler once (the cold start) with the function's environment and
``sys.path`` (code folder, then ``/opt/python`` of the layers), then serves
invocations: one JSON line in, one JSON line out. Anything the handler prints
goes to this process's stderr, which the parent keeps as the function's log.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback
import uuid
from typing import Any


class LambdaContext:
    """The attributes of the real context object that handlers and Powertools read."""

    def __init__(self, request_id: str, deadline_ms: float) -> None:
        self.aws_request_id = request_id
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.invoked_function_arn = os.environ.get("SCONES_FUNCTION_ARN", "")
        self.memory_limit_in_mb = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"))
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int(self._deadline_ms - time.time() * 1000))


def error_payload(exc: BaseException, request_id: str) -> dict[str, Any]:
    """The body Lambda returns for an unhandled exception."""
    return {
        "errorMessage": str(exc),
        "errorType": type(exc).__name__,
        "requestId": request_id,
        "stackTrace": traceback.format_tb(exc.__traceback__),
    }


def main(argv: list[str]) -> int:
    handler_spec, request_fd, response_fd = argv[1], int(argv[2]), int(argv[3])
    # The protocol has its own pipes; the handler's prints go to the log.
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    requests = os.fdopen(request_fd, "r", encoding="utf-8")
    responses = os.fdopen(response_fd, "w", encoding="utf-8")
    module_name, _, function_name = handler_spec.rpartition(".")
    try:
        handler = getattr(importlib.import_module(module_name), function_name)
        init_error = None
    except Exception as exc:  # the cold start failed: report it on every invoke
        handler, init_error = None, exc
        traceback.print_exc()
    for line in requests:
        request = json.loads(line)
        request_id = request.get("request_id") or str(uuid.uuid4())
        print(f"START RequestId: {request_id}", file=sys.stderr, flush=True)
        if handler is None:
            assert init_error is not None
            result = {"ok": False, "payload": error_payload(init_error, request_id)}
        else:
            context = LambdaContext(request_id, float(request["deadline_ms"]))
            try:
                payload = handler(request["event"], context)
                result = {"ok": True, "payload": payload}
            except Exception as exc:  # an unhandled error is the function's result
                traceback.print_exc()
                result = {"ok": False, "payload": error_payload(exc, request_id)}
        print(f"END RequestId: {request_id}", file=sys.stderr, flush=True)
        responses.write(json.dumps(result, default=str) + "\n")
        responses.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
