"""Shared by the retraining step tests: the stack's bucket in moto."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.moto_s3 import moto_bucket

BUCKET = "scones-test-images"


@pytest.fixture
def s3() -> Iterator[Any]:
    with moto_bucket(BUCKET) as client:
        yield client
