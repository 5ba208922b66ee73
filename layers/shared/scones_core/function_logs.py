"""The functions' Powertools ``Logger``, with the AWS SDK's own loggers held at WARNING.

Lambda's Python runtime gives the root logger the function's application log level
(``AWS_LAMBDA_LOG_LEVEL``, from the template's ``LogLevel`` for the JSON-logging
functions) and a handler writing to the function's log. Every library logger without a
level of its own logs at that level, so at ``LogLevel=DEBUG`` botocore would write each
request into CloudWatch Logs, kept ``LogRetentionDays``: its parameters and body (the whole
normalised image sent to InvokeEndpoint, base64), the S3 keys it reads (a key can name a
customer), and the X-Ray SDK each trace segment it sends. :func:`logger` holds those
loggers at WARNING whatever the level is; the function's own logger and
``scones_core``'s keep it.
"""

from __future__ import annotations

import logging
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

# botocore (requests, bodies, signing), boto3, urllib3 (each URL, the key in it),
# s3transfer, and the X-Ray SDK (every segment it sends, S3 keys in its metadata).
SDK_LOGGERS = ("botocore", "boto3", "urllib3", "s3transfer", "aws_xray_sdk")
SDK_LOG_LEVEL = logging.WARNING
# Python's level names that Lambda spells otherwise.
LAMBDA_LEVEL_NAMES = {"WARNING": "WARN", "CRITICAL": "FATAL"}


def quiet_sdk_loggers() -> None:
    """Hold the SDK's loggers at :data:`SDK_LOG_LEVEL` or above (a higher level set
    elsewhere is kept)."""
    for name in SDK_LOGGERS:
        sdk = logging.getLogger(name)
        sdk.setLevel(max(sdk.level, SDK_LOG_LEVEL))


class LambdaLogFormatter(LambdaPowertoolsFormatter):
    """Powertools' JSON lines, written so that Lambda's log-level filter reads their level.

    With the JSON log format Lambda reads a line's ``level`` only if it is one of its own
    (``TRACE``, ``DEBUG``, ``INFO``, ``WARN``, ``ERROR``, ``FATAL``) beside a valid RFC 3339
    ``timestamp``, and counts any other line as INFO (Lambda Developer Guide, "Log-level
    filtering"). Powertools writes Python's names (``WARNING``, ``CRITICAL``) and, by
    default, ``2026-12-06 12:24:39,645+0000``; at the template's default level (WARN) Lambda
    would drop every warning the functions log. Here a line says ``WARN`` and
    ``2026-12-06T12:24:39.645+00:00`` (UTC)."""

    def __init__(self) -> None:
        super().__init__(use_rfc3339=True, utc=True)

    def serialize(self, log: Any) -> str:
        level = log.get("level")
        log["level"] = LAMBDA_LEVEL_NAMES.get(level, level)
        return super().serialize(log)


def logger() -> Logger:
    """Powertools' ``Logger`` for a function's handler module, created at its cold start,
    before the first client: the SDK's loggers are quiet from the first request on."""
    quiet_sdk_loggers()
    return Logger(logger_formatter=LambdaLogFormatter())
