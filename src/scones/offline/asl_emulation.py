"""What moto's ASL interpreter cannot parse, rewritten into what it can (offline only).

moto 5.2's grammar refuses three things a Distributed Map may say, so offline:

- ``ItemBatcher`` (batching) becomes an ``ItemSelector`` that hands every item to the item
  processor as a batch of one, in the shape AWS uses (``{"Items": [item], "BatchInput":
  {...}}``), so the processor's code runs unchanged; only the batch size differs;
- ``"ExecutionType": "EXPRESS"`` child workflows run as ``STANDARD`` ones (the grammar takes
  only STANDARD);
- an integer ``ToleratedFailurePercentage`` is written as a decimal (``5`` as ``5.0``).

Everything else (the S3 ``ListObjectsV2`` item reader, which ``interpreter_fixes`` makes
list every page, ``MaxConcurrency``, the tolerated
failure percentage itself, the DISTRIBUTED processor and its child executions) is moto's
own. ``tests/offline/test_offline_asl_emulation.py`` fails once moto parses the original, so
this can go.
"""

from __future__ import annotations

import json
from typing import Any


def for_moto(definition: str) -> str:
    document = json.loads(definition)
    if not _rewrite(document):
        return definition
    return json.dumps(document)


def _rewrite(node: Any) -> bool:
    changed = False
    if isinstance(node, dict):
        batcher = node.get("ItemBatcher")
        if node.get("Type") == "Map" and isinstance(batcher, dict):
            del node["ItemBatcher"]
            selector: dict[str, Any] = {"Items.$": "States.Array($$.Map.Item.Value)"}
            if "BatchInput" in batcher:
                selector["BatchInput"] = batcher["BatchInput"]
            node["ItemSelector"] = selector
            changed = True
        if node.get("Type") == "Map" and isinstance(node.get("ToleratedFailurePercentage"), int):
            node["ToleratedFailurePercentage"] = float(node["ToleratedFailurePercentage"])
            changed = True
        if node.get("Mode") == "DISTRIBUTED" and node.get("ExecutionType") == "EXPRESS":
            node["ExecutionType"] = "STANDARD"
            changed = True
        for value in node.values():
            changed = _rewrite(value) or changed
    elif isinstance(node, list):
        for value in node:
            changed = _rewrite(value) or changed
    return changed
