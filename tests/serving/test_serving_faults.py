"""The fault plan's counters: order, consumption, until-cleared, thread safety."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from scones.serving.faults import Fault, FaultPlan, FaultSpecError


def test_a_fresh_plan_injects_nothing() -> None:
    plan = FaultPlan()
    injection = plan.next_injection()
    assert (injection.fault, injection.latency_ms) == (None, 0)
    assert plan.snapshot()["invocations"] == 1


def test_counted_faults_are_consumed_one_per_invocation_in_a_fixed_order() -> None:
    plan = FaultPlan()
    plan.arm({"model_error": 1, "throttle": 2, "unavailable": 1})
    seen = [plan.next_injection().fault for _ in range(5)]
    assert seen == [Fault.UNAVAILABLE, Fault.THROTTLE, Fault.THROTTLE, Fault.MODEL_ERROR, None]
    snapshot = plan.snapshot()
    assert snapshot["injected"]["throttle"] == 2
    assert all(value == 0 for value in snapshot["plan"].values())


def test_arming_keeps_faults_that_are_not_named() -> None:
    plan = FaultPlan()
    plan.arm({"throttle": 3})
    plan.arm({"latency_ms": 20})
    assert plan.snapshot()["plan"]["throttle"] == 3
    assert plan.next_injection().latency_ms == 20


def test_minus_one_lasts_until_cleared() -> None:
    plan = FaultPlan()
    plan.arm({"unavailable": -1, "latency_ms": 5})
    assert all(plan.next_injection().fault is Fault.UNAVAILABLE for _ in range(50))
    cleared = plan.clear()
    assert cleared["plan"]["unavailable"] == 0 and cleared["plan"]["latency_ms"] == 0
    assert cleared["injected"]["unavailable"] == 50
    assert cleared["injected"]["delayed"] == 50
    assert plan.next_injection().fault is None


def test_counters_are_exact_under_concurrent_invocations() -> None:
    plan = FaultPlan()
    plan.arm({"throttle": 500})
    with ThreadPoolExecutor(max_workers=8) as pool:
        faults = list(pool.map(lambda _: plan.next_injection().fault, range(2000)))
    assert faults.count(Fault.THROTTLE) == 500
    snapshot = plan.snapshot()
    assert snapshot["injected"]["throttle"] == 500
    assert snapshot["invocations"] == 2000


@pytest.mark.parametrize(
    "spec",
    [
        None,
        [],
        {},
        {"throttle": True},
        {"throttle": 1.5},
        {"throttle": -2},
        {"latency_ms": -1},
        {"latency_ms": 600_000},
        {"slow": 1},
    ],
)
def test_invalid_plans_change_nothing(spec: object) -> None:
    plan = FaultPlan()
    plan.arm({"throttle": 1})
    with pytest.raises(FaultSpecError):
        plan.arm(spec)
    assert plan.snapshot()["plan"]["throttle"] == 1
