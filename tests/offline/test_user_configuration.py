"""The offline stack's process hides the user's AWS settings while it runs, and only then."""

from __future__ import annotations

import os

import boto3
import pytest

from scones.offline.user_configuration import (
    HiddenUserConfiguration,
    botocore_variables,
    hidden_user_configuration,
)


def test_every_setting_botocore_reads_is_hidden_and_put_back_as_it_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert {"AWS_PROFILE", "AWS_RETRY_MODE", "AWS_MAX_ATTEMPTS", "AWS_CONFIG_FILE"} <= (
        botocore_variables()
    )
    for name in botocore_variables():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    monkeypatch.setenv("AWS_RETRY_MODE", "bogus")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "mars-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "the user's")  # credentials: moto passes its own
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "the user's secret")
    before = dict(os.environ)
    with pytest.raises(Exception, match="could not be found"):
        boto3.session.Session()

    hidden = HiddenUserConfiguration("us-east-1")
    hidden.hide()
    hidden.hide()  # a second hide keeps the first one's saved values
    try:
        for name in ("AWS_PROFILE", "AWS_RETRY_MODE", "AWS_ENDPOINT_URL_S3"):
            assert name not in os.environ
        assert os.environ["AWS_CONFIG_FILE"] == os.devnull
        assert os.environ["AWS_SHARED_CREDENTIALS_FILE"] == os.devnull
        assert os.environ["AWS_DEFAULT_REGION"] == "us-east-1"
        assert os.environ["AWS_ACCESS_KEY_ID"] == "the user's"
        client = boto3.session.Session().client("s3")  # what moto's interpreter does
        assert client.meta.region_name == "us-east-1"
    finally:
        hidden.restore()
    hidden.restore()  # a second restore changes nothing
    assert dict(os.environ) == before


def test_the_block_form_puts_the_settings_back_when_the_block_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_PROFILE", "mine")
    monkeypatch.delenv("AWS_CONFIG_FILE", raising=False)
    with pytest.raises(RuntimeError), hidden_user_configuration("us-east-1"):
        assert "AWS_PROFILE" not in os.environ
        raise RuntimeError("an import failed")
    assert os.environ["AWS_PROFILE"] == "mine"
    assert "AWS_CONFIG_FILE" not in os.environ
