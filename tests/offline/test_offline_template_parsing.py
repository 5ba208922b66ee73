"""``template_params.parse_template_text``: libyaml's parse of the template is the one the
SAM translator's ``yaml_parse`` gives, and its errors are ``yaml_parse``'s."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from samtranslator.yaml_helper import yaml_parse

from scones import template_params
from scones.template_params import TEMPLATE_PATH, parse_template_text


def _refuse_the_slow_parse(text: str) -> Any:
    raise AssertionError("parsed by yaml_parse, not by libyaml")


@pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML without libyaml")
def test_libyaml_parses_the_real_template_as_yaml_parse_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = TEMPLATE_PATH.read_text(encoding="utf-8")
    expected = yaml_parse(text)
    monkeypatch.setattr(template_params, "yaml_parse", _refuse_the_slow_parse)
    parsed = parse_template_text(text)
    assert parsed == expected
    # Short forms became long forms, as the translator reads them.
    bucket = parsed["Resources"]["ImageBucket"]["Properties"]["BucketName"]
    assert set(bucket) == {"Fn::Sub"}


@pytest.mark.parametrize(
    "text",
    [
        "Resources: [unclosed\n",
        "Resources:\n  A: !Ref\n    - x\n  - y\n",
        "Resources:\n\tA: 1\n",
    ],
)
def test_a_text_libyaml_refuses_fails_as_yaml_parse_fails(text: str) -> None:
    with pytest.raises(yaml.YAMLError) as expected:
        yaml_parse(text)
    with pytest.raises(yaml.YAMLError) as raised:
        parse_template_text(text)
    assert type(raised.value) is type(expected.value)
    assert str(raised.value) == str(expected.value)
