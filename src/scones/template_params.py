"""Read ``template.yaml``'s parameter defaults, the one source of configuration.

The CLI, the offline stack and the reports take their defaults (threshold, image
limits, endpoint name, ...) from here, so a value is written in exactly one place.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from samtranslator.yaml_helper import yaml_parse

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = PROJECT_ROOT / "template.yaml"


@cache
def load_template(path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    """The template as a dict; CloudFormation short forms (``!Ref``) become long forms."""
    return dict(yaml_parse(path.read_text(encoding="utf-8")))


def parameter_defaults(path: Path = TEMPLATE_PATH) -> dict[str, str]:
    """``{ParameterName: Default}`` for every parameter that has a default, as strings."""
    params = load_template(path).get("Parameters", {})
    return {name: str(spec["Default"]) for name, spec in params.items() if "Default" in spec}


def parameter_default(name: str, path: Path = TEMPLATE_PATH) -> str:
    defaults = parameter_defaults(path)
    if name not in defaults:
        raise KeyError(f"template parameter {name!r} has no default in {path}")
    return defaults[name]
