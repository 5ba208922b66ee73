"""States.Runtime in the per-image flow: a check the offline stack cannot make.

On AWS a JSONPath that finds nothing (``"S.$": "$.image.source.format"`` when no
``$.image`` exists) fails the state with ``States.Runtime``, which ``States.ALL`` does not
catch: the Map fails, and every image of the batch still in flight ends with no record
and no dead letter. moto's interpreter lets ``States.ALL`` catch it (the offline stack
corrects that, ``scones.offline.interpreter_fixes``, guarded in
``tests/offline/test_offline_moto_gaps.py``), but an executed run only finds the paths it
takes. So each state's paths are checked here, statically: every top-level member a
per-image state reads must be set on every way in.
"""

from __future__ import annotations

import json
import re
from typing import Any

from scones_core.ingest import workflow_input
from scones_core.objects import ObjectRef

import tests.workflow.test_workflow_template as template_tests

# A JSONPath into the state (not the context object, ``$$``): its first member.
_STATE_MEMBER = re.compile(r"(?<!\$)\$\.([A-Za-z0-9_]+)")
_CHOICE_RULE_KEYS = ("And", "Or", "Not")


def state_paths(node: Any) -> list[str]:
    """The top-level members a payload template reads (``"x.$"`` values, intrinsics too)."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key.endswith(".$") and isinstance(value, str):
                found += _STATE_MEMBER.findall(value)
            else:
                found += state_paths(value)
    elif isinstance(node, list):
        for value in node:
            found += state_paths(value)
    return found


def choice_variables(rule: dict[str, Any]) -> list[str]:
    """The members a Choice rule compares (``IsPresent`` asks, and never fails)."""
    found = [] if "IsPresent" in rule else _STATE_MEMBER.findall(str(rule.get("Variable", "")))
    for key in _CHOICE_RULE_KEYS:
        nested = rule.get(key)
        for inner in nested if isinstance(nested, list) else [nested] if nested else []:
            found += choice_variables(inner)
    return found


def result_member(path: Any) -> set[str]:
    """What a ``ResultPath`` sets: ``$.x`` sets ``x``; null sets nothing."""
    return set(_STATE_MEMBER.findall(path)) if isinstance(path, str) else set()


def replaces_its_input(state: dict[str, Any]) -> bool:
    """The state's output is not its input plus a member: no ``ResultPath`` (``$``) over a
    result, or an ``OutputPath`` that selects part of it."""
    has_result = state["Type"] in ("Task", "Map", "Parallel") or (
        state["Type"] == "Pass" and ("Result" in state or "Parameters" in state)
    )
    selects = state.get("OutputPath", "$") != "$"
    return (has_result and "ResultPath" not in state) or selects


def built_members(state: dict[str, Any]) -> set[str]:
    """What a Pass state whose Parameters replace its input sets: their top-level names."""
    whole = "ResultPath" not in state and state.get("OutputPath", "$") == "$"
    if state["Type"] == "Pass" and "Parameters" in state and whole:
        return {name.removesuffix(".$") for name in state["Parameters"]}
    return set()


def edges(state: dict[str, Any], known: set[str]) -> list[tuple[str, set[str]]]:
    """Each way out of ``state`` (entered with ``known`` set) and what is set on it."""
    out = (
        built_members(state)
        if replaces_its_input(state)
        else known | result_member(state.get("ResultPath"))
    )
    found = [(state["Next"], out)] if "Next" in state else []
    for catcher in state.get("Catch", []):
        found.append((catcher["Next"], known | result_member(catcher.get("ResultPath"))))
    if state["Type"] == "Choice":
        # Rules are tried in order: past a rule asking IsPresent false, its member is set.
        absent: set[str] = set()
        for rule in state["Choices"]:
            variables = set(_STATE_MEMBER.findall(str(rule.get("Variable", ""))))
            present = rule.get("IsPresent")
            found.append((rule["Next"], known | absent | (variables if present is True else set())))
            if present is False:
                absent |= variables
        found.append((state["Default"], known | absent))  # a rule's IsPresent false missed
    return found


def unset_reads(scope: dict[str, Any], given: set[str]) -> list[str]:
    """Reads of a member that some way into the state leaves unset, as ``state: $.x``."""
    states: dict[str, dict[str, Any]] = scope["States"]
    everything = given | {m for s in states.values() for m in result_member(s.get("ResultPath"))}
    everything |= {
        m
        for s in states.values()
        for c in s.get("Catch", [])
        for m in result_member(c.get("ResultPath"))
    }
    entry = {name: set(everything) for name in states}
    entry[scope["StartAt"]] = set(given)
    changed = True
    while changed:  # the members set on every way in: narrow until nothing changes
        changed = False
        for name, state in states.items():
            for target, members in edges(state, entry[name]):
                narrowed = entry[target] & members
                if narrowed != entry[target]:
                    entry[target], changed = narrowed, True
    problems = []
    for name, state in states.items():
        reads = state_paths(state.get("Parameters", {}))
        reads += _STATE_MEMBER.findall(str(state.get("InputPath", "")))
        for rule in state.get("Choices", []):
            reads += choice_variables(rule)
        after = entry[name] | result_member(state.get("ResultPath"))
        problems += [f"{name}: $.{m}" for m in reads if m not in entry[name]]
        output = _STATE_MEMBER.findall(str(state.get("OutputPath", "")))
        problems += [f"{name}: OutputPath $.{m}" for m in output if m not in after]
    return sorted(set(problems))


def start_members() -> set[str]:
    """What every execution input names (``attempt`` may be missing: CheckAttempt)."""
    ref = ObjectRef("b", "k", "v", "e", 1)
    return set(workflow_input(ref, "2026-12-01T00:00:00.000Z")) - {"attempt"}


def test_every_member_a_per_image_state_reads_is_set_on_every_way_in() -> None:
    assert unset_reads(template_tests.image_flow(), start_members()) == []


def test_the_check_names_a_read_that_one_way_in_leaves_unset() -> None:
    """A FAILED record that named the upload's format would read ``$.image``, which an S3
    failure (SerializeImage's Catch) never sets; a DLQ message reading ``$.record_error``
    would miss it whenever the FAILED write succeeded."""
    flow = json.loads(json.dumps(template_tests.image_flow()))
    item = flow["States"]["RecordFailure"]["Parameters"]["Item"]
    item["source_format"] = {"S.$": "$.image.source.format"}
    body = flow["States"]["NotifyDeadLetter"]["Parameters"]["MessageBody"]
    body["record_error.$"] = "$.record_error"
    assert unset_reads(flow, start_members()) == [
        "NotifyDeadLetter: $.record_error",
        "RecordFailure: $.image",
    ]
    # Without CheckAttempt's default an older start function's input would miss attempt.
    flow = json.loads(json.dumps(template_tests.image_flow()))
    flow["StartAt"] = "SerializeImage"
    assert "RecordAccepted: $.attempt" in unset_reads(flow, start_members())
