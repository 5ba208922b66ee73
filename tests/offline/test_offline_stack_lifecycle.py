"""What a stopped stack leaves behind in its process: nothing of the emulator's state.

moto keeps its backends in module globals, so they outlive the server thread. A stack
that did not empty them would keep every object, item and execution history of its run
in memory, and every later garbage collection of the process would walk them.
"""

from __future__ import annotations

from typing import Any

import pytest
from moto.core import DEFAULT_ACCOUNT_ID
from moto.dynamodb.models import dynamodb_backends
from moto.s3.models import s3_backends
from moto.stepfunctions.models import stepfunctions_backends

from scones.offline.client import REGION
from scones.offline.stack import OfflineStack, StackOptions
from scones.template_params import PROJECT_ROOT

pytestmark = pytest.mark.xdist_group("offline-stack")

DATA = PROJECT_ROOT / "data" / "cifar100-bicycle-motorcycle" / "train"


def _emulator_state() -> dict[str, Any]:
    return {
        "buckets": len(s3_backends[DEFAULT_ACCOUNT_ID]["global"].buckets),
        "tables": len(dynamodb_backends[DEFAULT_ACCOUNT_ID][REGION].tables),
        "state machines": len(stepfunctions_backends[DEFAULT_ACCOUNT_ID][REGION].state_machines),
    }


def test_a_stopped_stack_leaves_no_emulator_state_behind() -> None:
    png = sorted(DATA.glob("*/*.png"))[0].read_bytes()
    with OfflineStack(StackOptions()) as stack:
        api = stack.api()
        records = api.wait_for_records([api.upload_bytes("one.png", png, "image/png")], 120)
        assert [r["status"] for r in records.values()] in (["ACCEPTED"], ["NEEDS_REVIEW"])
        running = _emulator_state()
        assert all(count > 0 for count in running.values()), running
    assert _emulator_state() == dict.fromkeys(running, 0)
