"""Resource limits around inference: how many pixels, how many requests at once, how
many bytes of bodies held at once.

They guard the server's memory and CPU against requests that are cheap to send: a few
kilobytes of PNG can declare a gigapixel image, a burst of clients would otherwise each
get a worker thread and queue inside onnxruntime, and bodies are read before an
inference slot is taken (a slow upload never holds one), so without a budget every
connection could hold a body of the largest size.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from scones.serving.defaults import PIXELS_PER_INPUT_PIXEL


def default_max_image_pixels(input_size: tuple[int, int]) -> int:
    """The pixel limit for a model whose input is ``input_size`` (height, width).

    ``PIXELS_PER_INPUT_PIXEL`` times the input area: the model never sees more than
    its input, so a larger limit only lets a small compressed body claim more memory.
    """
    height, width = input_size
    if height < 1 or width < 1:
        raise ValueError(f"model input size must be positive, got {height}x{width}")
    return height * width * PIXELS_PER_INPUT_PIXEL


def available_cpus() -> int:
    """CPUs this process may run on (its affinity, which containers narrow), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class ServerBusy(Exception):
    """Every inference slot stayed taken for the whole wait: answer as throttled."""

    # Whether the answer must close the connection: true when it comes before the body was
    # read, so a client that sent ``Expect: 100-continue`` never sends it.
    close = False

    def __init__(self, limit: int, wait_s: float, ahead: int) -> None:
        super().__init__(
            f"the model server is busy: the request waited {wait_s:g} s for one of its "
            f"{limit} inference slots, behind {ahead} other waiting requests; "
            "retry with backoff"
        )


class InferenceSlots:
    """At most ``limit`` requests in inference at once; others wait up to ``wait_s``.

    Inference runs in worker threads, and onnxruntime uses one thread per request,
    so more requests than CPUs only queue inside the model while every caller's
    latency grows. Waiting here costs no thread, and a request that cannot get a
    slot in time is refused, so the client backs off instead of timing out.
    """

    def __init__(self, limit: int, wait_s: float) -> None:
        if limit < 1:
            raise ValueError(f"the inference limit must be at least 1, got {limit}")
        if wait_s < 0:
            raise ValueError(f"the queue wait must not be negative, got {wait_s}")
        self.limit = limit
        self.wait_s = wait_s
        self._semaphore = asyncio.Semaphore(limit)
        self._waiting = 0  # requests waiting for a slot (one event loop: no lock needed)

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """One slot for the body of the ``async with``; raises :class:`ServerBusy`."""
        ahead = self._waiting
        if self._semaphore.locked() and self.wait_s == 0:
            raise ServerBusy(self.limit, self.wait_s, ahead)
        self._waiting += 1
        try:
            async with asyncio.timeout(self.wait_s):
                await self._semaphore.acquire()
        except TimeoutError:
            raise ServerBusy(self.limit, self.wait_s, ahead) from None
        finally:
            self._waiting -= 1
        try:
            yield
        finally:
            self._semaphore.release()


class BodiesOverBudget(ServerBusy):
    """A body would take the bytes held by bodies being received or classified past the
    server's budget: answered as busy, so the client backs off and sends it again. The
    body is not read (or not all of it), so the connection is closed."""

    close = True

    def __init__(self, limit: int, held: int, wanted: int) -> None:
        Exception.__init__(
            self,
            f"the model server is busy: {held} bytes of request bodies are being received "
            f"or classified, and {wanted} more would pass its {limit}-byte budget; retry "
            "with backoff",
        )


class BodyBudget:
    """At most ``limit`` bytes of request bodies held at once, across every request.

    One event loop: no lock needed.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"the body budget must be at least 1 byte, got {limit}")
        self.limit = limit
        self.held = 0

    @contextmanager
    def account(self) -> Iterator[BodyAccount]:
        """An account for one request's body; what it took is given back at the end."""
        account = BodyAccount(self)
        try:
            yield account
        finally:
            self.held -= account.taken


class BodyAccount:
    """The bytes one request's body holds of a :class:`BodyBudget`."""

    def __init__(self, budget: BodyBudget) -> None:
        self._budget = budget
        self.taken = 0

    def check(self, size: int) -> None:
        """:class:`BodiesOverBudget` if ``size`` more bytes would not fit now."""
        budget = self._budget
        if budget.held + size > budget.limit:
            raise BodiesOverBudget(budget.limit, budget.held, size)

    def take(self, size: int) -> None:
        """Hold ``size`` more bytes; :class:`BodiesOverBudget` if the budget has no room."""
        self.check(size)
        self._budget.held += size
        self.taken += size
