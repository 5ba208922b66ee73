"""Read a JSON template as JSON in moto's CloudFormation, not with pure-Python YAML.

moto 5.2.5's ``Stack.parse_template`` (each stack creation and update) reads every
template with PyYAML's pure-Python ``yaml.Loader`` and falls back to ``json.loads`` only
when that fails. The offline stack sends the translated template as JSON, which is also
YAML, so each start spent about 0.25 s in the YAML parser. A text that is a JSON object
is read with ``json.loads`` (a JSON document means the same read either way); any other
text goes to moto's own parse, tags and errors included.

A guard test checks that moto still reads YAML first, so an upgrade that reads JSON
first fails loudly and this module can go.
"""

from __future__ import annotations

import json
from typing import Any

from moto.cloudformation.models import Stack

_ORIGINAL = Stack.parse_template


def _parse_template(template: str) -> dict[str, Any]:
    if template.lstrip().startswith("{"):
        try:
            parsed = json.loads(template)
        except ValueError:
            pass
        else:
            if isinstance(parsed, dict):
                return parsed
    return _ORIGINAL(template)


def install() -> None:
    Stack.parse_template = staticmethod(_parse_template)  # type: ignore[method-assign]


def uninstall() -> None:
    Stack.parse_template = staticmethod(_ORIGINAL)  # type: ignore[method-assign]
