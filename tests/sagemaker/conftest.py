"""Real boto3 clients behind botocore's Stubber, with dummy credentials: nothing reaches AWS."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from sagemaker_fixtures import REGION


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture
def sagemaker() -> Any:
    return boto3.client("sagemaker", region_name=REGION)


@pytest.fixture
def stubber(sagemaker: Any) -> Iterator[Stubber]:
    with Stubber(sagemaker) as stub:
        yield stub
        stub.assert_no_pending_responses()
