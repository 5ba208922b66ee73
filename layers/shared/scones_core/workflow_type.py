"""The template's ``WorkflowType`` values: what the start function does differs by type.

Under EXPRESS it waits for each execution (``StartSyncExecution``); Standard has no
synchronous start.
"""

from __future__ import annotations

EXPRESS = "EXPRESS"
STANDARD = "STANDARD"
WORKFLOW_TYPES = (EXPRESS, STANDARD)
