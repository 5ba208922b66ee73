"""Every way outside text can fail to load as JSON is one named error (``NotJSON``)."""

from __future__ import annotations

import sys

import pytest
from scones_core.json_text import NotJSON, load_json


@pytest.mark.parametrize(
    ("text", "reason", "line"),
    [
        ('{\n"a": 1,\n', "not JSON: ", 3),
        (b'{"a": "\xc3("}', "not UTF-8 text", None),
        ("[" + "7" * (sys.get_int_max_str_digits() + 1) + "]", "an integer longer than", None),
        ("[" * 100_000 + "]" * 100_000, "nested deeper than the parser goes", None),
        (None, "not JSON text but NoneType", None),
        ('{"size": NaN}', "NaN is not a finite number", None),
        ('{"attempt": -Infinity}', "-Infinity is not a finite number", None),
        ('{"size": 1e400}', "1e400 is not a finite number", None),
    ],
)
def test_every_failure_is_not_json_with_its_reason(text, reason: str, line: int | None) -> None:
    with pytest.raises(NotJSON) as caught:
        load_json(text)
    assert reason in str(caught.value)
    assert caught.value.line == line
    assert isinstance(caught.value, ValueError)  # callers that catch ValueError still do


def test_json_at_the_limits_still_loads() -> None:
    digits = "7" * sys.get_int_max_str_digits()
    assert load_json(f"[{digits}]") == [int(digits)]
    assert load_json(b'{"a": [1.5, "\\u00e9"]}') == {"a": [1.5, "é"]}
