"""Read ``template.yaml``'s parameters, the one source of configuration, and check values.

The CLI, the offline stack and the reports take their defaults (threshold, image
limits, endpoint name, ...) from here, so a value is written in exactly one place.

``resolve_parameters`` checks a set of overrides the way ``sam deploy`` (CloudFormation)
does before it creates anything: every declared constraint (``Type`` Number / String /
CommaDelimitedList, ``AllowedValues``, ``AllowedPattern`` as a full match,
``MinValue``/``MaxValue``, ``MinLength``/``MaxLength``) and every ``Rules`` entry
(``RuleCondition`` and ``Assertions`` over the effective values). It reports every
problem at once, as :class:`ParameterError`.
"""

from __future__ import annotations

import contextlib
import difflib
import math
import re
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from samtranslator.yaml_helper import intrinsics_multi_constructor, yaml_parse

from scones.cli.errors import CommandError
from scones.paths import PROJECT_ROOT

TEMPLATE_PATH = PROJECT_ROOT / "template.yaml"
# The stack name the offline stack deploys the template under (its functions' Powertools
# service and metrics' dimension: :func:`service_name`).
LOCAL_STACK_NAME = "scones"


class ParameterError(ValueError):
    """Parameter values that CloudFormation would refuse; ``problems`` lists each one."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__(
            "invalid template parameters:\n" + "\n".join(f"  - {p}" for p in self.problems)
            if len(self.problems) > 1
            else (self.problems[0] if self.problems else "invalid template parameters")
        )


class TemplateError(CommandError):
    """The template cannot be read: not YAML, or not shaped like a template. Every command
    reads it, so this is the CLI's own error type and needs no handling of its own."""


def load_template(path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    """The template as a dict; CloudFormation short forms (``!Ref``) become long forms.
    Parsed once per process and path (about 0.03 s with libyaml, 0.6 s without), however
    the path is passed."""
    return _load_template(Path(path))


# libyaml's parser when PyYAML has it (the template parses in a tenth of the time), with
# the SAM translator's constructors for the short forms: the same dict as ``yaml_parse``.
_FAST_LOADER: Any = None
if yaml.__with_libyaml__:

    class _TemplateLoader(yaml.CSafeLoader):
        """PyYAML's safe loader on libyaml, with CloudFormation's short forms."""

    _TemplateLoader.add_multi_constructor("!", intrinsics_multi_constructor)
    _FAST_LOADER = _TemplateLoader


def parse_template_text(text: str) -> Any:
    """A template's YAML as ``samtranslator``'s ``yaml_parse`` reads it (short forms as long
    forms). A text libyaml refuses is read again by ``yaml_parse``, so that an error is
    the one it raises, with its words and position."""
    if _FAST_LOADER is not None:
        try:
            return yaml.load(text, Loader=_FAST_LOADER)  # noqa: S506 (a safe loader)
        except (yaml.YAMLError, RecursionError):
            pass
    return yaml_parse(text)


@cache
def _load_template(path: Path) -> dict[str, Any]:
    try:
        template = parse_template_text(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise TemplateError(f"{path} is not UTF-8 text: {exc}") from exc
    except yaml.MarkedYAMLError as exc:
        raise TemplateError(f"{path} is not valid YAML: {_yaml_problem(exc)}") from exc
    except yaml.YAMLError as exc:
        raise TemplateError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from exc
    except RecursionError as exc:
        raise TemplateError(f"{path} is not valid YAML: nested too deeply") from exc
    if not isinstance(template, dict):
        raise TemplateError(
            f"{path}: expected a mapping of template sections, not {template!r:.60}"
        )
    for section in ("Parameters", "Resources"):
        entries = template.get(section, {})
        if not isinstance(entries, dict):
            raise TemplateError(f"{path}: {section} is {entries!r:.60}, expected a mapping")
        for name, spec in entries.items():
            if not isinstance(spec, dict):
                raise TemplateError(f"{path}: {section}.{name} is {spec!r:.60}, expected a mapping")
    return template


def _yaml_problem(exc: yaml.MarkedYAMLError) -> str:
    """PyYAML's several-line message as one line: where, what, and where it started."""
    where = ""
    if exc.problem_mark is not None:
        where = f"line {exc.problem_mark.line + 1}, column {exc.problem_mark.column + 1}: "
    problem = exc.problem or exc.context or "cannot be parsed"
    started = ""
    if exc.context and exc.problem and exc.context_mark is not None:
        started = f" ({exc.context} at line {exc.context_mark.line + 1})"
    return where + problem + started


def parameter_defaults(path: Path = TEMPLATE_PATH) -> dict[str, str]:
    """``{ParameterName: Default}`` for every parameter that has a default, as strings."""
    params = load_template(path).get("Parameters", {})
    return {name: str(spec["Default"]) for name, spec in params.items() if "Default" in spec}


def parameter_default(name: str, path: Path = TEMPLATE_PATH) -> str:
    defaults = parameter_defaults(path)
    if name not in defaults:
        raise KeyError(f"template parameter {name!r} has no default in {path}")
    return defaults[name]


def table_definition(logical_id: str, path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    """``CreateTable`` keyword arguments (``TableName`` aside) for a table of the template:
    its billing mode, attributes, key and indexes, as deployed."""
    spec = load_template(path)["Resources"][logical_id]["Properties"]
    keys = ("BillingMode", "AttributeDefinitions", "KeySchema", "GlobalSecondaryIndexes")
    return {key: spec[key] for key in keys if key in spec}


def template_functions(path: Path = TEMPLATE_PATH) -> list[str]:
    """The logical ids of the template's functions."""
    resources = load_template(path).get("Resources", {})
    return sorted(
        logical_id
        for logical_id, resource in resources.items()
        if resource.get("Type") in ("AWS::Serverless::Function", "AWS::Lambda::Function")
    )


def service_name(stack_name: str = LOCAL_STACK_NAME, path: Path = TEMPLATE_PATH) -> str:
    """The functions' Powertools service (Globals' ``POWERTOOLS_SERVICE_NAME``, the
    ``service`` dimension of their metrics and alarms) in a stack of this name."""
    value = load_template(path)["Globals"]["Function"]["Environment"]["Variables"][
        "POWERTOOLS_SERVICE_NAME"
    ]
    if isinstance(value, dict):
        value = str(value["Fn::Sub"]).replace("${AWS::StackName}", stack_name)
    return str(value)


# -- checking values like CloudFormation ---------------------------------------------


class _ResourceReference(Exception):
    """A value names one of the stack's resources, which only a deployment can resolve."""


def _environment(
    logical_id: str,
    path: Path,
    overrides: Mapping[str, str] | None,
    *,
    with_globals: bool,
    placeholders: bool,
) -> dict[str, str]:
    """One function's environment variables as deployed with the defaults (+ ``overrides``):
    ``Ref`` of a parameter or pseudo parameter, ``Fn::If`` on a condition and ``Fn::Sub``
    resolved. A value naming a resource is, with ``placeholders``, a stand-in of its kind (a
    state machine's or topic's ARN, a queue's URL, else a name: its logical id in lower case;
    any other attribute, ``GetAtt`` or ``${Resource.Arn}``, an ARN); without, the variable is
    left out."""
    template = load_template(path)
    params = {**parameter_defaults(path), **(overrides or {})}
    known = params | {
        "AWS::Region": "us-east-1",
        "AWS::AccountId": "123456789012",
        "AWS::Partition": "aws",
        "AWS::StackName": LOCAL_STACK_NAME,
    }
    resources = template["Resources"]
    arn = "arn:aws:states:us-east-1:123456789012:stateMachine:x"
    # Resource types whose Ref is an ARN or a URL, not a name.
    by_type = {
        "AWS::Serverless::StateMachine": arn,
        "AWS::SNS::Topic": "arn:aws:sns:us-east-1:123456789012:x",
        "AWS::SQS::Queue": "https://sqs.us-east-1.amazonaws.com/123456789012/x",
    }

    def named(reference: str) -> str:
        if reference in known:
            return known[reference]
        if not placeholders:
            raise _ResourceReference(reference)
        if "." in reference:
            return arn
        return by_type.get(resources.get(reference, {}).get("Type"), reference.lower())

    def resolve(value: Any) -> str:
        if isinstance(value, dict) and isinstance(value.get("Ref"), str):
            return named(value["Ref"])
        if isinstance(value, dict) and "Fn::If" in value:
            name, if_true, if_false = value["Fn::If"]
            return resolve(if_true if condition_value(template, name, params) else if_false)
        if isinstance(value, dict) and isinstance(value.get("Fn::Sub"), str):
            return re.sub(r"\$\{([^}]+)\}", lambda m: named(m.group(1)), value["Fn::Sub"])
        if isinstance(value, dict):
            return named(".")  # GetAtt and the like: always a resource's
        return str(value)

    function = resources[logical_id]["Properties"]
    variables = {
        **(template["Globals"]["Function"]["Environment"]["Variables"] if with_globals else {}),
        **function.get("Environment", {}).get("Variables", {}),
    }
    resolved = {}
    for name, value in variables.items():
        try:
            resolved[name] = resolve(value)
        except _ResourceReference:
            continue
    return resolved


def function_environment(
    logical_id: str, path: Path = TEMPLATE_PATH, overrides: Mapping[str, str] | None = None
) -> dict[str, str]:
    """A function's own environment variables (not ``Globals``') as deployed with the
    defaults (+ ``overrides``); variables naming other resources are left out."""
    return _environment(logical_id, path, overrides, with_globals=False, placeholders=False)


def deployed_environment(
    logical_id: str, overrides: Mapping[str, str] | None = None, path: Path = TEMPLATE_PATH
) -> dict[str, str]:
    """A function's whole environment (``Globals``' too) as a stack named
    :data:`LOCAL_STACK_NAME` deploys it with the defaults (+ ``overrides``), a stand-in of
    its kind for each resource it names: what a cold start of the handler reads."""
    return _environment(logical_id, path, overrides, with_globals=True, placeholders=True)


def resolve_parameters(
    overrides: Mapping[str, str],
    template: dict[str, Any] | None = None,
    *,
    check_rules: bool = True,
) -> dict[str, str]:
    """Defaults plus ``overrides``, checked; raises :class:`ParameterError` naming every problem.

    ``check_rules=False`` leaves the template's ``Rules`` out (for tests that evaluate
    them on values the rules refuse); deployments and commands always check them.
    """
    template = load_template() if template is None else template
    declared: dict[str, dict[str, Any]] = template.get("Parameters", {}) or {}
    problems: list[str] = []
    for name in overrides:
        if name not in declared:
            close = difflib.get_close_matches(name, list(declared), n=3)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            problems.append(
                f"unknown template parameter {name}: template.yaml has no such parameter{hint}"
            )
    values = {n: str(spec["Default"]) for n, spec in declared.items() if "Default" in spec}
    values.update({k: str(v) for k, v in overrides.items() if k in declared})
    for name, spec in declared.items():
        if name not in values:
            problems.append(f"{name} has no value (no Default in template.yaml and no override)")
            continue
        problems += [
            f"{name}={values[name]!r} {problem}"
            + (f" ({spec['ConstraintDescription']})" if "ConstraintDescription" in spec else "")
            for problem in constraint_problems(values[name], spec)
        ]
    if check_rules:
        problems += rule_problems(template, values)
    if "ModelLabels" in values:
        # What the classify function checks at its cold start (no pattern can: uniqueness).
        from scones_core.settings import parse_labels

        try:
            parse_labels(values["ModelLabels"])
        except ValueError as exc:
            problems.append(f"ModelLabels={values['ModelLabels']!r}: {exc}")
    # What no pattern can say: which areas of the bucket may not lie inside another, and
    # image limits that no image could meet.
    from scones_core.bucket_layout import layout_problems
    from scones_core.settings import sides_conflict

    problems += layout_problems(values)
    with contextlib.suppress(KeyError, ValueError):  # a bad number is named above
        if conflict := sides_conflict(int(values["MinImageSide"]), int(values["MaxImagePixels"])):
            problems.append(f"MinImageSide and MaxImagePixels: {conflict}")
    if problems:
        raise ParameterError(problems)
    return values


def constraint_problems(value: str, spec: Mapping[str, Any]) -> list[str]:
    """What is wrong with one value against its parameter declaration (empty when fine)."""
    kind = str(spec.get("Type", "String"))
    problems: list[str] = []
    if kind == "Number":
        number = _number(value)
        if number is None:
            return ["is not a number (Type: Number)"]
        default = _number(str(spec.get("Default", "")))
        if default is not None and default.is_integer() and _WHOLE.fullmatch(value) is None:
            # This template's convention: a Number with a whole Default is a count, size or
            # duration that the functions, the ASL and SageMaker read as an integer.
            problems.append(f"is not a whole number, as its Default {spec['Default']} is")
        if "MinValue" in spec and number < float(spec["MinValue"]):
            problems.append(f"is less than MinValue {spec['MinValue']}")
        if "MaxValue" in spec and number > float(spec["MaxValue"]):
            problems.append(f"is greater than MaxValue {spec['MaxValue']}")
        allowed = spec.get("AllowedValues")
        if allowed and not any(_number(str(a)) == number for a in allowed):
            problems.append(f"is not one of the AllowedValues {_show(allowed)}")
        return problems
    items = [value]
    if kind == "CommaDelimitedList" or kind.startswith("List<"):
        items = [item.strip() for item in value.split(",")] if value else []
        if kind == "List<Number>":
            problems += [f"item {i!r} is not a number" for i in items if _number(i) is None]
    elif kind != "String" and not kind.startswith("AWS::"):
        return [f"has a Type scones cannot check offline: {kind}"]
    if "MinLength" in spec and len(value) < int(spec["MinLength"]):
        problems.append(f"is shorter than MinLength {spec['MinLength']}")
    if "MaxLength" in spec and len(value) > int(spec["MaxLength"]):
        problems.append(f"is longer than MaxLength {spec['MaxLength']}")
    allowed = spec.get("AllowedValues")
    pattern = spec.get("AllowedPattern")
    for item in items:
        shown = "" if len(items) == 1 and item == value else f"item {item!r} "
        if allowed and item not in [str(a) for a in allowed]:
            problems.append(f"{shown}is not one of the AllowedValues {_show(allowed)}")
        if pattern is not None and re.fullmatch(str(pattern), item) is None:
            problems.append(f"{shown}does not match the AllowedPattern {pattern}")
    return problems


# A number as CloudFormation and JSON write one (the value is pasted into the ASL and the
# environment): not Python's wider float() syntax, which also takes "1_0", " 5" and "٣".
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
# "-0" is no whole number here: CloudFormation's conditions compare it as text ("-0" is
# not "0"), while Python reads it as 0, so the two would disagree about it.
_WHOLE = re.compile(r"0|-?[1-9][0-9]*")


def _number(text: str) -> float | None:
    if _NUMBER.fullmatch(text) is None:
        return None
    number = float(text)
    return number if math.isfinite(number) else None


def _show(allowed: list[Any]) -> str:
    return "[" + ", ".join(str(a) for a in allowed) + "]"


class _RuleError(ValueError):
    pass


def rule_problems(template: dict[str, Any], values: Mapping[str, str]) -> list[str]:
    """The description of every ``Rules`` assertion that fails for these values."""
    declared = template.get("Parameters", {}) or {}
    problems: list[str] = []
    for rule_name, rule in (template.get("Rules", {}) or {}).items():
        try:
            if "RuleCondition" in rule and not _truth(
                _evaluate(rule["RuleCondition"], values, declared)
            ):
                continue
            for assertion in rule.get("Assertions", []):
                if not _truth(_evaluate(assertion["Assert"], values, declared)):
                    description = assertion.get("AssertDescription") or (
                        f"assertion {assertion['Assert']} failed"
                    )
                    problems.append(f"rule {rule_name}: {' '.join(str(description).split())}")
        except _RuleError as exc:
            problems.append(f"rule {rule_name}: {exc}")
    return problems


def mapped_value(value: Any, params: Mapping[str, str]) -> Any:
    """A ``Fn::FindInMap`` resolved with ``params``; any other value unchanged."""
    if isinstance(value, dict) and "Fn::FindInMap" in value:
        mapping, key, attribute = value["Fn::FindInMap"]
        key = params[key["Ref"]] if isinstance(key, dict) else key
        return load_template()["Mappings"][mapping][str(key)][attribute]
    return value


def setting_value(value: Any, params: Mapping[str, str]) -> str | None:
    """A template value that is a setting (a literal, a parameter or a mapping of one) as
    deployed with ``params``; None for one that names a resource (or ``AWS::NoValue``)."""
    value = mapped_value(value, params)
    if isinstance(value, int | float | str):
        return str(value)
    if isinstance(value, dict) and value.get("Ref") in params:
        return params[value["Ref"]]
    if isinstance(value, dict) and value.get("Ref") == "AWS::Partition":
        return "aws"  # the cost model prices the commercial partition
    return None


def condition_value(template: dict[str, Any], name: str, values: Mapping[str, str]) -> bool:
    """The template's condition ``name`` for these parameter values (``Condition`` references
    to other conditions followed); raises ``ValueError`` for a function it cannot evaluate."""
    declared = template.get("Parameters", {}) or {}
    conditions = template.get("Conditions", {}) or {}

    def expand(expr: Any) -> Any:
        if isinstance(expr, dict) and set(expr) == {"Condition"}:
            return condition_value(template, expr["Condition"], values)
        if isinstance(expr, dict):
            return {k: expand(v) for k, v in expr.items()}
        if isinstance(expr, list):
            return [expand(e) for e in expr]
        return expr

    try:
        return _truth(_evaluate(expand(conditions[name]), values, declared))
    except _RuleError as exc:
        raise ValueError(f"condition {name}: {exc}") from exc


def _truth(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise _RuleError(f"{value!r} is not a boolean")


def _evaluate(expr: Any, values: Mapping[str, str], declared: Mapping[str, Any]) -> Any:
    """A rule-function expression: Ref, Fn::Equals/Not/And/Or/Contains/EachMember*/RefAll."""
    if isinstance(expr, list):
        return [_evaluate(e, values, declared) for e in expr]
    if not isinstance(expr, dict):
        return expr if isinstance(expr, bool) else str(expr)
    if len(expr) != 1:
        raise _RuleError(f"not a rule function: {expr}")
    ((op, arg),) = expr.items()

    def ev(e: Any) -> Any:
        return _evaluate(e, values, declared)

    def as_list(e: Any) -> list[Any]:
        result = ev(e)
        if isinstance(result, str):
            return [item.strip() for item in result.split(",")] if result else []
        return list(result)

    if op == "Ref":
        if arg not in values:
            known = "has no value" if arg in declared else "is not a parameter"
            raise _RuleError(f"Ref to {arg}, which {known}")
        kind = str(declared.get(arg, {}).get("Type", "String"))
        value = values[arg]
        if kind == "CommaDelimitedList" or kind.startswith("List<"):
            return [item.strip() for item in value.split(",")] if value else []
        return value
    if op == "Fn::Equals":
        left, right = ev(arg[0]), ev(arg[1])
        return left == right
    if op == "Fn::Not":
        return not _truth(ev(arg[0]))
    if op == "Fn::And":
        return all(_truth(ev(a)) for a in arg)
    if op == "Fn::Or":
        return any(_truth(ev(a)) for a in arg)
    if op == "Fn::Contains":
        return ev(arg[1]) in as_list(arg[0])
    if op == "Fn::EachMemberEquals":
        target = ev(arg[1])
        return all(item == target for item in as_list(arg[0]))
    if op == "Fn::EachMemberIn":
        pool = as_list(arg[1])
        return all(item in pool for item in as_list(arg[0]))
    if op == "Fn::RefAll":
        return [values[n] for n, spec in declared.items() if spec.get("Type") == arg]
    if op in ("Fn::ValueOf", "Fn::ValueOfAll"):
        # The attributes of AWS-specific parameter types (a VPC's tags, ...) live in the
        # account; plain types have none. Neither can be looked up offline.
        raise _RuleError(f"{op} {arg} needs an AWS account to evaluate")
    raise _RuleError(f"unsupported rule function {op}")
