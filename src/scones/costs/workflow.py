"""The workflow's shape, read from the real template and ASL (never a literal).

An execution classifies a batch: its top level (``batch_path``) leads to a Map whose
item processor is the per-image flow (``image_states``). ``happy_path`` walks the
per-image flow the way a good upload goes (every Choice takes its ``Default``: the input
has ``attempt``, the image is not rejected); the cost model counts its states as Standard
transitions per image, the top level's once per batch, and its tasks as Lambda invocations
and writes. ``worst_case_seconds`` bounds the slowest path that still ends in a record
(every task retried to the last attempt, each attempt running to its timeout, Catch edges
followed; a Map's images run side by side, so it lasts as long as its slowest image), which
must stay under an Express workflow's 5 minutes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache, cached_property
from typing import Any

from scones_core.ingest import EXPRESS_MAX_SECONDS

from scones.asl_check import item_scope, per_image_scope, substitute
from scones.template_params import (
    PROJECT_ROOT,
    load_template,
    mapped_value,
    parameter_defaults,
    setting_value,
)

EXPRESS_LIMIT_SECONDS = EXPRESS_MAX_SECONDS
# A direct service integration (DynamoDB putItem, SQS sendMessage) answers in milliseconds;
# its attempts are bounded here at this many seconds for the worst case.
SERVICE_ATTEMPT_SECONDS = 5.0
# A cold Lambda environment's init runs before, and outside, the function's Timeout; Lambda
# allows it up to 10 s. Only a task's TimeoutSeconds bounds an attempt including it.
LAMBDA_INIT_SECONDS = 10.0
LAMBDA_PREFIX = "arn:aws:lambda:"


@dataclass(frozen=True)
class Workflow:
    machine: str  # the state machine's logical id
    definition: dict[str, Any]
    lambda_functions: dict[str, str]  # state name -> function logical id
    function_timeouts: dict[str, float]  # function logical id -> seconds

    @cached_property
    def states(self) -> dict[str, dict[str, Any]]:
        """Every state of every scope by name (``load_workflow`` checks names are unique)."""
        return dict(_all_states(self.definition))

    @cached_property
    def image_states(self) -> dict[str, Any]:
        """The per-image flow (``asl_check.per_image_scope``)."""
        return per_image_scope(self.definition)


def _all_states(scope: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    for name, state in scope["States"].items():
        found.append((name, state))
        if state["Type"] == "Map":
            found.extend(_all_states(item_scope(state)))
        for branch in state.get("Branches", []):
            found.extend(_all_states(branch))
    return found


def _function_timeout(resource: dict[str, Any], params: dict[str, str]) -> float:
    template = load_template()
    value = resource["Properties"].get("Timeout", template["Globals"]["Function"]["Timeout"])
    return float(mapped_value(value, params))


def load_workflow(
    overrides: dict[str, str] | None = None, machine: str = "ClassificationStateMachine"
) -> Workflow:
    """The state machine ``machine`` as deployed with the template's parameters (+ overrides)."""
    params = {**parameter_defaults(), **(overrides or {})}
    resources = load_template()["Resources"]
    properties = resources[machine]["Properties"]
    substitutions: dict[str, str] = {}
    functions: dict[str, str] = {}
    for name, value in properties.get("DefinitionSubstitutions", {}).items():
        setting = setting_value(value, params)
        if setting is not None:
            substitutions[name] = setting
        elif isinstance(value, dict) and "Fn::GetAtt" in value:
            logical_id = value["Fn::GetAtt"][0]
            substitutions[name] = f"{LAMBDA_PREFIX}us-east-1:123456789012:function:{logical_id}"
            functions[substitutions[name]] = logical_id
        else:
            substitutions[name] = f"arn:aws:example:us-east-1:123456789012:{name}"
    text = (PROJECT_ROOT / properties["DefinitionUri"]).read_text(encoding="utf-8")
    definition = json.loads(substitute(text, substitutions))
    every = _all_states(definition)
    names = [name for name, _ in every]
    if len(names) != len(set(names)):
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"{machine}: state names repeat across scopes: {repeated}")
    by_state = {
        name: functions[state["Resource"]]
        for name, state in every
        if state.get("Resource") in functions
    }
    timeouts = {
        logical_id: _function_timeout(resources[logical_id], params)
        for logical_id in set(by_state.values())
    }
    return Workflow(machine, definition, by_state, timeouts)


def happy_path(workflow: Workflow, choose: dict[str, int] | None = None) -> list[str]:
    """The states one image enters when every Choice takes its Default (or, for the
    Choices named in ``choose``, that choice rule); ends at a terminal state."""
    return _walk(workflow.image_states, choose or {})


def batch_path(workflow: Workflow) -> list[str]:
    """The top-level states an execution of a batch enters once, whatever its size: a
    Choice goes straight to the Map where a rule leads there, else takes its Default.
    Empty when the definition has no Map (every state is per image)."""
    if workflow.image_states is workflow.definition:
        return []
    states = workflow.definition["States"]
    choose = {
        name: index
        for name, state in states.items()
        if state["Type"] == "Choice"
        for index, rule in enumerate(state["Choices"])
        if states[rule["Next"]]["Type"] == "Map"
    }
    return _walk(workflow.definition, choose)


def _walk(scope: dict[str, Any], choose: dict[str, int]) -> list[str]:
    states = scope["States"]
    path: list[str] = []
    name: str | None = scope["StartAt"]
    while name is not None:
        if name in path:
            raise ValueError(f"the walk loops at {name}")
        path.append(name)
        state = states[name]
        if state["Type"] == "Choice":
            rule = choose.get(name)
            name = state["Default"] if rule is None else state["Choices"][rule]["Next"]
        elif state.get("End") or state["Type"] in ("Succeed", "Fail"):
            name = None
        else:
            name = state["Next"]
    return path


def is_record_writer(state: dict[str, Any]) -> bool:
    return str(state.get("Resource", "")).endswith(":states:::dynamodb:putItem")


def _backoff_seconds(retry: dict[str, Any]) -> float:
    interval = float(retry.get("IntervalSeconds", 1))
    rate = float(retry.get("BackoffRate", 2.0))
    cap = float(retry.get("MaxDelaySeconds", 1e9))
    return sum(min(cap, interval * rate**k) for k in range(int(retry.get("MaxAttempts", 3))))


def state_worst_seconds(workflow: Workflow, name: str) -> float:
    """Every attempt of ``name`` running to its timeout, with the longest backoffs."""
    state = workflow.states[name]
    if state["Type"] == "Map":
        return _longest(workflow, item_scope(state))[0]
    if state["Type"] != "Task":
        return 0.0
    if name in workflow.lambda_functions:
        attempt = workflow.function_timeouts[workflow.lambda_functions[name]] + LAMBDA_INIT_SECONDS
    else:
        attempt = SERVICE_ATTEMPT_SECONDS
    if "TimeoutSeconds" in state:
        attempt = min(attempt, float(state["TimeoutSeconds"]))
    retries = state.get("Retry", [])
    attempts = 1 + sum(int(r.get("MaxAttempts", 3)) for r in retries)
    return attempts * attempt + sum(_backoff_seconds(r) for r in retries)


def backfill_batch_seconds(overrides: dict[str, str] | None = None) -> float:
    """The slowest backfill batch: every retry of the backfill function to its timeout, in
    the Distributed Map's child (a ``WorkflowType`` execution, Express by default)."""
    backfill = load_workflow(overrides, machine="BackfillStateMachine")
    return max(
        state_worst_seconds(backfill, name)
        for name, state in backfill.states.items()
        if state["Type"] == "Map"
    )


def worst_case_seconds(workflow: Workflow) -> tuple[float, list[str]]:
    """The slowest path from StartAt to a terminal state (Catch edges included); a Map on
    it is expanded into its slowest image's path."""
    seconds, path = _longest(workflow, workflow.definition)
    expanded: list[str] = []
    for name in path:
        expanded.append(name)
        state = workflow.states[name]
        if state["Type"] == "Map":
            expanded.extend(_longest(workflow, item_scope(state))[1])
    return seconds, expanded


def _longest(workflow: Workflow, scope: dict[str, Any]) -> tuple[float, list[str]]:
    states = scope["States"]

    @cache
    def longest(name: str) -> tuple[float, tuple[str, ...]]:
        state = states[name]
        targets = [state.get("Next"), state.get("Default")]
        targets += [c.get("Next") for c in state.get("Choices", [])]
        targets += [c.get("Next") for c in state.get("Catch", [])]
        best: tuple[float, tuple[str, ...]] = (0.0, ())
        for target in sorted({t for t in targets if t}):
            candidate = longest(target)
            if candidate[0] > best[0] or not best[1]:
                best = candidate
        return state_worst_seconds(workflow, name) + best[0], (name, *best[1])

    seconds, path = longest(scope["StartAt"])
    return seconds, list(path)
