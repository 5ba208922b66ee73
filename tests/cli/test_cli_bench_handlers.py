"""`scones bench handlers` measures every function on a real offline stack."""

from __future__ import annotations

import pytest

from scones.costs.measure import FUNCTIONS, run_measurement
from scones.offline.stack import StackOptions
from scones.template_params import service_name

# The offline stack's functions' Powertools service, in its stack.
SERVICE = service_name(StackOptions().stack_name)

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("bench-handlers")]


def test_a_small_measurement_has_every_function_for_both_kinds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every function, for both kinds of upload. A function's log bytes are the growth of
    its log file over a pass, and its metrics are read from that file: a stack whose logs
    rotate (as the offline stack's do) would count only what its newest file holds, so
    stacks are made to rotate before every invocation here, and the measurement's own
    stack must not."""
    from functools import partial

    from scones.offline import stack

    monkeypatch.setattr(stack, "StackOptions", partial(StackOptions, function_log_max_bytes=1))
    result = run_measurement(small=3, photos=2)

    # Every invocation logs at least its START and END lines (over 50 bytes each).
    numbers = [f for kind in result["kinds"].values() for f in kind["functions"].values()]
    for function in [*numbers, result["monitor"]]:
        assert function["log_bytes"] >= 100 * function["invocations"], function

    for kind, images in (("small", 3), ("photo", 2)):
        data = result["kinds"][kind]
        assert data["images"] == images
        assert data["record_item_bytes"]["count"] == images
        assert 0 < data["record_item_bytes"]["max"] <= 1024  # one WRU per record
        functions = data["functions"]
        assert set(functions) == set(FUNCTIONS)
        serialize = functions["SerializeImageFunction"]
        assert serialize["invocations"] == images
        assert serialize["cpu_ms_mean"] >= 0 and serialize["peak_rss_mb"] > 0
        assert functions["ClassifyImageFunction"]["invocations"] == images
        start = functions["StartWorkflowFunction"]
        # One start per SQS batch: never more invocations than messages.
        assert 1 <= start["invocations"] <= images
        assert start["messages_per_invocation"] >= 1
    # The monitor ran once over the window, and the metrics both published are named as
    # CloudWatch counts them (name and every dimension's value).
    assert result["monitor"]["invocations"] == 1 and result["monitor"]["window_minutes"] == 60
    metrics = result["custom_metrics"]
    assert (
        f"SconesUnlimited/ImagesStarted{{service={SERVICE}}}" in (metrics["StartWorkflowFunction"])
    )
    endpoint = "EndpointName=scones-bicycle-motorcycle"
    monitor = metrics["MonitorFunction"]
    for label in ("bicycle", "motorcycle"):
        assert (
            f"SconesUnlimited/LabelShare{{{endpoint},Label={label},service={SERVICE}}}" in monitor
        )
    assert f"SconesUnlimited/CapturedRequests{{{endpoint},service={SERVICE}}}" in monitor
    photo = result["kinds"]["photo"]
    assert photo["upload_bytes_mean"] > 1_000_000
    # A 4000x3000 JPEG costs the serialize worker well over one 10 ms clock tick of CPU
    # (small PNGs can fall under one, so only the photo is checked).
    assert photo["functions"]["SerializeImageFunction"]["cpu_ms_mean"] >= 10
