"""One dated price table: AWS list prices in us-east-1 (N. Virginia), USD.

Every price names the page it comes from and the day it was read. These machines
cannot open the live pricing pages (they render their tables in the browser from a
price feed), so the figures are stated as published on ``READ_ON`` on those pages;
where a public copy could be checked it says so in ``note``. Re-read the pages before
relying on a figure: prices change (DynamoDB's on-demand writes were halved in
November 2024).
"""

from __future__ import annotations

from dataclasses import dataclass

READ_ON = "2026-12-01"
REGION = "us-east-1"

STEP_FUNCTIONS = "https://aws.amazon.com/step-functions/pricing/"
LAMBDA = "https://aws.amazon.com/lambda/pricing/"
DYNAMODB = "https://aws.amazon.com/dynamodb/pricing/on-demand/"
SQS = "https://aws.amazon.com/sqs/pricing/"
S3 = "https://aws.amazon.com/s3/pricing/"
CLOUDWATCH = "https://aws.amazon.com/cloudwatch/pricing/"
XRAY = "https://aws.amazon.com/xray/pricing/"
KMS = "https://aws.amazon.com/kms/pricing/"
SAGEMAKER = "https://aws.amazon.com/sagemaker/ai/pricing/"


@dataclass(frozen=True)
class Price:
    usd: float
    unit: str
    source: str
    note: str = ""


PRICES: dict[str, Price] = {
    "sfn_standard_transition": Price(
        0.025 / 1000, "state transition", STEP_FUNCTIONS, "$0.025 per 1,000 transitions"
    ),
    "sfn_express_request": Price(1.00 / 1e6, "execution", STEP_FUNCTIONS, "$1.00 per million"),
    "sfn_express_gb_second": Price(
        0.00001667,
        "GB-second",
        STEP_FUNCTIONS,
        "first 1,000 GB-hours a month; billed in 64 MB and 100 ms increments",
    ),
    "lambda_arm_gb_second": Price(
        0.0000133334, "GB-second (arm64)", LAMBDA, "first 7.5 billion GB-s a month; 1 ms billing"
    ),
    "lambda_x86_gb_second": Price(0.0000166667, "GB-second (x86_64)", LAMBDA),
    "lambda_request": Price(0.20 / 1e6, "request", LAMBDA, "$0.20 per million"),
    "dynamodb_wru": Price(
        0.625 / 1e6,
        "write request unit (1 KB)",
        DYNAMODB,
        "on-demand, after the November 2024 cut from $1.25 (checked against a public copy); "
        "a write to a global secondary index costs its own WRUs",
    ),
    "dynamodb_storage_gb_month": Price(0.25, "GB-month", DYNAMODB, "first 25 GB a month free"),
    "dynamodb_pitr_gb_month": Price(0.20, "GB-month", DYNAMODB, "continuous backups (PITR)"),
    "sqs_request": Price(0.40 / 1e6, "request (64 KB chunk)", SQS, "standard queue"),
    "s3_get": Price(0.40 / 1e6, "GET request", S3),
    "s3_put": Price(5.00 / 1e6, "PUT request", S3, "the uploader's own PUT"),
    "s3_gb_month": Price(0.023, "GB-month", S3, "S3 Standard, first 50 TB"),
    "logs_ingest_gb": Price(0.50, "GB ingested", CLOUDWATCH, "standard log class"),
    "logs_store_gb_month": Price(0.03, "GB-month stored", CLOUDWATCH, "compressed size"),
    "cloudwatch_custom_metric_month": Price(
        0.30,
        "custom metric-month",
        CLOUDWATCH,
        "first 10,000 metrics; pro-rated by the hour a metric is sent; 10 free a month",
    ),
    "cloudwatch_alarm_metric_month": Price(
        0.10,
        "alarm metric-month (standard resolution)",
        CLOUDWATCH,
        "a metric-math alarm pays for each metric it reads; 10 free a month",
    ),
    "xray_trace": Price(5.00 / 1e6, "trace recorded", XRAY, "first 100,000 a month free"),
    "kms_request": Price(0.03 / 10000, "request", KMS, "$0.03 per 10,000"),
    "kms_key_month": Price(
        1.00,
        "customer managed key-month",
        KMS,
        "pro-rated by the hour; each of the first two automatic rotations adds $1 a month",
    ),
    "sagemaker_ml_m5_large_hour": Price(0.115, "instance-hour (ml.m5.large, real-time)", SAGEMAKER),
    "sagemaker_serverless_gb_second": Price(
        0.0000200, "GB-second (serverless inference)", SAGEMAKER, "$0.00002 per second per GB"
    ),
    "sagemaker_data_processed_gb": Price(
        0.016, "GB in or out", SAGEMAKER, "serverless and real-time data processed"
    ),
}


# The real-time instance types priced here (EndpointInstanceType), each with its price's name.
REALTIME_INSTANCE_PRICES = {"ml.m5.large": "sagemaker_ml_m5_large_hour"}


def price(name: str) -> float:
    return PRICES[name].usd
