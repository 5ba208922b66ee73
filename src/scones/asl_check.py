"""Static checks of a state machine definition after ``DefinitionSubstitutions``.

Neither ``sam validate`` nor cfn-lint opens an ASL file referenced by
``DefinitionUri``, so this does: the text must parse once substituted, no
``${...}`` may be left, every ``StartAt``, ``Next`` and ``Default`` must
name a state in its scope (including inside Map and Parallel branches), and
every intrinsic function (``"X.$": "States.Format('...', $.a)"``, and a Fail
state's ``CausePath`` or ``ErrorPath``) must parse by the ASL grammar. An
intrinsic that does not parse (an apostrophe left unescaped in a string) fails
only when a state reaches it, with an error no Catch can take. A
``States.Format`` must have as many arguments after its template as the
template has ``{}``: moto's interpreter drops the extra ones, AWS does not take
them. ``States.ALL`` must stand alone in the last retrier or catcher, which AWS
checks when the state machine is created and moto does not.

A task's ``ResultSelector`` may select only what the API always answers: a path to a
member that botocore's model marks optional fails with ``States.Runtime`` whenever the
member is absent, and ``States.Runtime`` is the one error no ``Catch`` takes (no record,
no alert). Such a result is kept whole and asked about with a Choice's ``IsPresent``.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

_PLACEHOLDER = re.compile(r"\$\{[^}]*\}")
_TASK_RESOURCE = re.compile(
    r"^arn:aws(?:-[a-z]+)*:states:::(?P<sdk>aws-sdk:)?(?P<service>[a-z0-9]+):(?P<api>[A-Za-z0-9]+)"
    r"(?P<suffix>\.[A-Za-z]+)?$"
)
_STATE_PATH = re.compile(r"(?<!\$)\$((?:\.[A-Za-z0-9_]+|\[\d+\])+)")

OPTIONAL_BUT_ALWAYS_PRESENT = {
    ("sagemaker", "DescribeEndpoint", "EndpointConfigName"): (
        "CreateEndpoint and UpdateEndpoint both require an EndpointConfigName, so every "
        "endpoint's description names one"
    ),
}
"""Members botocore marks optional that an API does answer in every case, and why."""


def substitute(definition: str, substitutions: dict[str, str]) -> str:
    """CloudFormation's ``DefinitionSubstitutions``: plain ``${name}`` replacement."""
    for name, value in substitutions.items():
        definition = definition.replace("${" + name + "}", str(value))
    return definition


def check_definition(definition: str, substitutions: dict[str, str]) -> list[str]:
    """Problems with the substituted definition; an empty list means it passed."""
    text = substitute(definition, substitutions)
    problems = [
        f"placeholder {p} has no substitution" for p in sorted(set(_PLACEHOLDER.findall(text)))
    ]
    unused = sorted(name for name in substitutions if "${" + name + "}" not in definition)
    problems += [f"substitution {name} is never used" for name in unused]
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        return [*problems, f"not valid JSON after substitution: {exc}"]
    problems += _check_scope(document, "top level")
    problems += _result_selector_problems(document)
    problems += _error_handler_problems(document)
    problems += [
        f"{where}: {problem}"
        for where, text in _paths(document, "")
        if text.startswith("States.") and (problem := intrinsic_problem(text))
    ]
    return problems


@functools.lru_cache(maxsize=1024)  # the same texts at every stack start
def intrinsic_problem(text: str) -> str | None:
    """Why ``text`` is not an intrinsic function call by the ASL grammar, or None.

    Uses the grammar of moto's Step Functions interpreter (the one the offline stack runs),
    whose ANTLR parser otherwise only prints its syntax errors and carries on.
    """
    from antlr4 import CommonTokenStream, InputStream
    from antlr4.error.ErrorListener import ErrorListener
    from moto.stepfunctions.parser.asl.antlr.runtime.ASLIntrinsicLexer import (
        ASLIntrinsicLexer,
    )
    from moto.stepfunctions.parser.asl.antlr.runtime.ASLIntrinsicParser import (
        ASLIntrinsicParser,
    )

    errors: list[str] = []

    class Collect(ErrorListener):
        # ANTLR's callback: its name and positional signature are fixed.
        def syntaxError(  # noqa: PLR0917
            self, recognizer: Any, symbol: Any, line: int, column: int, msg: str, e: Any
        ) -> None:
            errors.append(f"column {column}: {msg}")

    lexer = ASLIntrinsicLexer(InputStream(text))
    parser = ASLIntrinsicParser(CommonTokenStream(lexer))
    for recognizer in (lexer, parser):
        recognizer.removeErrorListeners()
        recognizer.addErrorListener(Collect())
    parser.func_decl()
    if not errors and parser.getCurrentToken().type != ASLIntrinsicParser.EOF:
        errors.append("text after the function call")
    if errors:
        return f"intrinsic {text!r} does not parse: {errors[0]}"
    return _format_arguments_problem(text)


def _format_arguments_problem(text: str) -> str | None:
    """Why a ``States.Format`` in ``text`` (nested ones too) has not one argument per
    ``{}`` of its template, or None. AWS's intrinsic functions page: "There must be as
    many remaining arguments in the Invocation as there are occurrences of {}"; moto
    formats with Python's ``str.format``, which ignores arguments left over."""
    from moto.stepfunctions.parser.asl.component.intrinsic.argument.argument import (
        ArgumentFunction,
        ArgumentLiteral,
    )
    from moto.stepfunctions.parser.asl.component.intrinsic.function.statesfunction.generic.string_format import (  # noqa: E501
        StringFormat,
    )
    from moto.stepfunctions.parser.asl.parse.intrinsic.intrinsic_parser import IntrinsicParser

    pending: list[Any] = [IntrinsicParser.parse(text)[0]]
    while pending:
        function = pending.pop()
        arguments = function.argument_list.arguments
        pending += [a.function for a in arguments if isinstance(a, ArgumentFunction)]
        template = arguments[0] if isinstance(function, StringFormat) else None
        if not isinstance(template, ArgumentLiteral):
            continue
        # moto keeps an escaped character's backslash: an escaped brace is no placeholder.
        placeholders = re.sub(r"\\.", "", str(template.definition_value)).count("{}")
        if placeholders != len(arguments) - 1:
            return (
                f"intrinsic {text!r}: States.Format's template has {placeholders} {{}} "
                f"but {len(arguments) - 1} argument(s) follow it"
            )
    return None


def _check_scope(scope: dict[str, Any], where: str) -> list[str]:
    problems: list[str] = []
    states = scope.get("States")
    if not isinstance(states, dict) or not states:
        return [f"{where}: no States"]
    start = scope.get("StartAt")
    if start not in states:
        problems.append(f"{where}: StartAt {start!r} is not a state")
    reachable = set()
    pending = [start] if start in states else []
    while pending:
        name = pending.pop()
        if name in reachable:
            continue
        reachable.add(name)
        state = states[name]
        targets = [state.get("Next"), state.get("Default")]
        targets += [choice.get("Next") for choice in state.get("Choices", [])]
        targets += [catch.get("Next") for catch in state.get("Catch", [])]
        for target in targets:
            if target is None:
                continue
            if target not in states:
                problems.append(f"{where}: state {name!r} goes to {target!r}, which does not exist")
            else:
                pending.append(target)
        ends = state.get("End") is True or state.get("Type") in ("Succeed", "Fail", "Choice")
        if not ends and state.get("Next") is None:
            problems.append(f"{where}: state {name!r} has neither Next nor End")
        for inner, child in _child_scopes(state):
            problems += _check_scope(child, f"{name}.{inner}")
    for name in sorted(set(states) - reachable):
        problems.append(f"{where}: state {name!r} is unreachable")
    return problems


def _child_scopes(state: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """A Map's item scope and a Parallel's branches, each with where it is in the state."""
    children: list[tuple[str, dict[str, Any]]] = [
        (key, state[key]) for key in ("Iterator", "ItemProcessor") if key in state
    ]
    children += [(f"Branches[{i}]", b) for i, b in enumerate(state.get("Branches", []))]
    return children


def _states(scope: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every state of the scope and of its Map and Parallel scopes, by name."""
    found: list[tuple[str, dict[str, Any]]] = []
    for name, state in (scope.get("States") or {}).items():
        found.append((name, state))
        for _, child in _child_scopes(state):
            found += _states(child)
    return found


@functools.cache
def _service_model(service: str) -> Any:
    """botocore's model of ``service``, parsed once per process: SageMaker's alone takes
    about 80 ms, and every stack start checks its definitions."""
    import botocore.session

    return botocore.session.get_session().get_service_model(service)


def _output_shape(resource: str) -> tuple[str, Any] | None:
    """(service, output shape) of a task's AWS API, as Step Functions returns it: a
    SageMaker ``create*.sync`` job answers with its ``Describe*``. None when unknown."""
    from botocore.exceptions import UnknownServiceError

    match = _TASK_RESOURCE.match(resource)
    if match is None:
        return None
    service, suffix = match["service"], match["suffix"]
    operation = match["api"][:1].upper() + match["api"][1:]
    if suffix == ".sync" and service == "sagemaker" and operation.startswith("Create"):
        operation = "Describe" + operation.removeprefix("Create")
    elif suffix is not None:
        return None
    try:
        model = _service_model(service)
    except UnknownServiceError:
        return None
    if operation not in model.operation_names:
        return None
    return service, model.operation_model(operation)


def _result_selector_problems(document: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    for name, state in _states(document):
        selector = state.get("ResultSelector")
        found = _output_shape(str(state.get("Resource", ""))) if selector else None
        if found is None:
            continue
        for _, text in _paths(selector, ""):
            for path in _STATE_PATH.findall(text):
                problem = _selected_path_problem(*found, path)
                if problem is not None:
                    selects = f"state {name!r}: ResultSelector selects ${path}"
                    problems.append(f"{selects}, but {problem}")
    return problems


def _selected_path_problem(service: str, operation: Any, path: str) -> str | None:
    """Why ``$<path>`` may be missing from ``operation``'s answer, or None when it is
    always there (as far as the model's structures go: list items are not checked)."""
    shape = operation.output_shape
    for member in re.findall(r"[A-Za-z0-9_]+", path):
        if shape is None or shape.type_name != "structure":
            return None
        if member not in shape.members:
            return f"{operation.name} has no {member}"
        always = (service, operation.name, member) in OPTIONAL_BUT_ALWAYS_PRESENT
        if member not in shape.required_members and not always:
            return (
                f"{member} is optional in {operation.name}'s answer: when it is absent "
                "the state fails with States.Runtime, which no Catch takes"
            )
        shape = shape.members[member]
        if shape.type_name == "list":
            shape = shape.member
    return None


def _error_handler_problems(document: dict[str, Any]) -> list[str]:
    """``States.ALL`` anywhere but alone in the last retrier or catcher. The ASL
    specification: such a value "MUST appear alone in the "ErrorEquals" array and MUST
    appear in the last Retrier"; AWS refuses the definition, moto's grammar checks only
    the first half."""
    problems: list[str] = []
    for name, state in _states(document):
        for field in ("Retry", "Catch"):
            handlers = state.get(field) or []
            for index, handler in enumerate(handlers):
                errors = handler.get("ErrorEquals") or []
                if "States.ALL" not in errors:
                    continue
                where = f"state {name!r}: {field}[{index}] names States.ALL"
                if len(errors) > 1:
                    problems.append(f"{where} with others")
                if index != len(handlers) - 1:
                    problems.append(f"{where} but is not the last")
    return problems


def _paths(node: Any, where: str) -> list[tuple[str, str]]:
    """Every ``"<key>.$": "<path or intrinsic>"`` of the document, and every Fail state's
    ``CausePath`` and ``ErrorPath`` (a path or an intrinsic too), with where it is."""
    found: list[tuple[str, str]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{where}.{key}" if where else str(key)
            dynamic = key.endswith(".$") or (
                key in ("CausePath", "ErrorPath") and node.get("Type") == "Fail"
            )
            if dynamic and isinstance(value, str):
                found.append((here, value))
            else:
                found += _paths(value, here)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, f"{where}[{index}]")
    return found


def item_scope(map_state: dict[str, Any]) -> dict[str, Any]:
    """A Map state's per-item scope: ``ItemProcessor``, or the older ``Iterator``."""
    return dict(map_state.get("ItemProcessor") or map_state["Iterator"])


def per_image_scope(definition: dict[str, Any]) -> dict[str, Any]:
    """The scope (``StartAt`` and ``States``) that handles one image.

    The classification workflow runs a batch: its top level leads to a Map whose item
    processor is the per-image flow. A definition without a Map is per image as it is.
    """
    for state in definition["States"].values():
        if state.get("Type") == "Map":
            return item_scope(state)
    return definition
