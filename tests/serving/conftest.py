"""Fixtures for the model server: the shipped model, bundled images, live servers."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from fastapi import FastAPI
from PIL import Image

from scones.model.artifact import OnnxClassifier
from scones.paths import PROJECT_ROOT, SHIPPED_MODEL_DIR
from scones.serving.app import create_app
from scones.serving.capture import CaptureWriter
from scones.serving.faults import FaultPlan
from scones.serving.server import ModelServer

MODEL_DIR = SHIPPED_MODEL_DIR
IMAGES_DIR = PROJECT_ROOT / "data" / "cifar100-bicycle-motorcycle" / "train"
ENDPOINT = "test-endpoint"
VARIANT = "AllTraffic"
MAX_BODY = 64 * 1024
MAX_PIXELS = 1024 * 1024


def image_files(label: str, count: int) -> list[Path]:
    files = sorted((IMAGES_DIR / label).glob("*.png"))[:count]
    assert len(files) == count, f"expected {count} bundled {label} images in {IMAGES_DIR}"
    return files


@pytest.fixture(scope="session")
def classifier() -> OnnxClassifier:
    return OnnxClassifier(MODEL_DIR)


@pytest.fixture(scope="session")
def bicycle_png() -> bytes:
    return image_files("bicycle", 1)[0].read_bytes()


@pytest.fixture(scope="session")
def motorcycle_png() -> bytes:
    return image_files("motorcycle", 1)[0].read_bytes()


@pytest.fixture(scope="session")
def sample_pngs() -> list[bytes]:
    """Four bicycles and four motorcycles, in a fixed order."""
    return [p.read_bytes() for p in image_files("bicycle", 4) + image_files("motorcycle", 4)]


def to_jpeg(png: bytes) -> bytes:
    out = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").save(out, format="JPEG", quality=95)
    return out.getvalue()


AppFactory = Callable[..., FastAPI]


@pytest.fixture
def make_app(classifier: OnnxClassifier) -> AppFactory:
    def factory(**overrides: Any) -> FastAPI:
        model = overrides.pop("classifier", classifier)
        options: dict[str, Any] = {
            "endpoint_name": ENDPOINT,
            "variant_name": VARIANT,
            "max_body_bytes": MAX_BODY,
            "max_image_pixels": MAX_PIXELS,
        }
        options.update(overrides)
        return create_app(model, **options)

    return factory


def runtime_client(base_url: str, *, retries: int = 1, **config: Any) -> Any:
    """A real boto3 sagemaker-runtime client aimed at a local server."""
    return boto3.client(
        "sagemaker-runtime",
        endpoint_url=base_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": retries, "mode": "standard"}, **config),
    )


def jsonl_files(root: Path) -> list[Path]:
    """The capture files under ``root``, in the order they were written."""
    return sorted(root.rglob("*.jsonl"))


def read_records(root: Path) -> list[dict[str, Any]]:
    """Every capture record under ``root``, file by file."""
    return [
        json.loads(line)
        for path in jsonl_files(root)
        for line in path.read_text(encoding="utf-8").splitlines()
    ]


class LiveServer:
    """A real uvicorn server on a free loopback port, with faults and local capture."""

    def __init__(self, server: ModelServer, capture: CaptureWriter, faults: FaultPlan) -> None:
        self.server = server
        self.capture = capture
        self.faults = faults
        self.base_url = server.base_url


@pytest.fixture
def live_server(make_app: AppFactory, tmp_path: Path) -> Iterator[LiveServer]:
    from scones.serving.capture import LocalCaptureSink

    capture = CaptureWriter(
        LocalCaptureSink(tmp_path / "capture"),
        endpoint_name=ENDPOINT,
        variant_name=VARIANT,
        flush_interval_s=60,
    )
    faults = FaultPlan()
    server = ModelServer(make_app(capture=capture, faults=faults))
    server.start()
    try:
        yield LiveServer(server, capture, faults)
    finally:
        server.stop()


READY = re.compile(r"^scones serve: .* at (http://127\.0\.0\.1:\d+) ")


class ServeProcess:
    """A child process whose stdout and stderr are collected line by line."""

    def __init__(self, command: list[str], env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=PROJECT_ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._ready = threading.Event()
        self.base_url = ""
        self._readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.stdout.append(line)
            match = READY.match(line)
            if match:
                self.base_url = match.group(1)
                self._ready.set()
        self._ready.set()

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr.append(line)

    def wait_ready(self) -> str:
        assert self._ready.wait(60), "server did not announce itself"
        assert self.base_url, f"server exited: {''.join(self.stdout + self.stderr)}"
        return self.base_url

    def stop(self, sig: int = signal.SIGINT) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(30)
        self._drain()
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._drain()

    def _drain(self) -> None:
        """Every line the process wrote, collected: its last lines may still be in a pipe
        when it has exited."""
        for reader in self._readers:
            reader.join(10)
