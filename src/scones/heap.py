"""The garbage collector around the offline stack's long-lived heap.

A running stack holds moto, botocore's service models and the ASL parser: about half a
million objects that live as long as the stack does. CPython's oldest-generation
collection walks every one of them each time it runs (about 0.2 s each on a 2-core
machine, ten of them while a stack starts), and once more as the interpreter exits
(about 1.4 s after a ``scones run``), to free nothing. Freezing what the start built
leaves the collector only the objects the workflow makes; the stop unfreezes it, so a
process that goes on (a test session, a notebook) collects the stopped stack as usual.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def building_long_lived_heap() -> Iterator[None]:
    """No collection while the block builds objects that outlive it (a stack's start):
    each would walk a heap that only grows. The collector is on again afterwards, as it
    was, whether the block succeeded or not."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def freeze_long_lived() -> None:
    """Leave every object that exists now out of later collections (``gc.freeze``)."""
    gc.freeze()


def release_long_lived() -> None:
    """Let the collector see the frozen objects again (``gc.unfreeze``): the stopped
    stack's garbage among them is collected as usual."""
    gc.unfreeze()


@functools.cache
def skip_collection_at_exit() -> None:
    """Have the interpreter's exit skip its last walk of the heap.

    An ``atexit`` hook freezes the heap; every other exit hook (logging's flush,
    temporary folders' clean-up) still runs, and every file a command writes is closed
    before it returns."""
    atexit.register(gc.freeze)  # once: the cache makes every later call a no-op
