"""The offline stack's clients take none of a user's AWS configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from scones.offline.client import OFFLINE_CREDENTIAL, offline_session


def test_the_offline_session_reads_no_aws_setting_from_the_environment_or_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AWS_MAX_ATTEMPTS=abc failed every offline run ("invalid literal for int()"), and a
    profile that does not exist, or a broken ~/.aws/config, failed the stack's clients."""
    config = tmp_path / "config"
    config.write_text("[profile broken\nthis is not ini\n")
    for name, value in {
        "AWS_MAX_ATTEMPTS": "abc",
        "AWS_RETRY_MODE": "bogus",
        "AWS_DEFAULTS_MODE": "bogus",
        "AWS_PROFILE": "does-not-exist",
        "AWS_CONFIG_FILE": str(config),
        "AWS_SHARED_CREDENTIALS_FILE": str(config),
        "AWS_USE_FIPS_ENDPOINT": "true",
    }.items():
        monkeypatch.setenv(name, value)

    session = offline_session()
    client = session.client("s3", endpoint_url="http://127.0.0.1:9")

    assert client.meta.region_name == "us-east-1"
    assert client.meta.endpoint_url == "http://127.0.0.1:9"
    assert client.meta.config.retries["mode"] != "bogus"  # botocore's own default
    assert session.get_credentials().access_key == OFFLINE_CREDENTIAL
