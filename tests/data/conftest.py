"""Fixtures: small archives in the official CIFAR-100 format, and a dummy AWS environment."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from cifar_format import FakeCifar, Row, make_rows, official_members, write_tar


@pytest.fixture(scope="session")
def cifar_rows() -> dict[str, list[Row]]:
    return {"train": make_rows(12, 10, offset=0), "test": make_rows(3, 4, offset=100)}


@pytest.fixture
def cifar_archive(tmp_path: Path, cifar_rows: dict[str, list[Row]]) -> FakeCifar:
    path = write_tar(tmp_path / "cifar-100-python.tar.gz", official_members(cifar_rows))
    return FakeCifar(path=path, splits=cifar_rows)


@pytest.fixture
def tar_factory(tmp_path: Path) -> Callable[[dict[str, bytes]], Path]:
    def build(members: dict[str, bytes]) -> Path:
        return write_tar(tmp_path / "custom.tar.gz", members)

    return build


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy credentials and a region, so nothing can reach a real account."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
