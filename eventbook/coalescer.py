"""Requests that arrive together, sent together: one call in flight at a time, and the
requests that arrive meanwhile go together in the next call. Like group commit, this
adds no delay at low load (a lone request is sent at once) and makes calls as large as
the load, up to a bound. The booking batcher and the rate limiter send through one."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")


class Coalescer(Generic[Item]):
    """Sends queued items through `call`, at most `max_batch` at a time, one call in
    flight. `call` answers each item's future (`future_of(item)`) itself; when the
    sending is cancelled, or `call` raises, every item not yet answered, in the call and
    queued behind it, is cancelled or failed with that error."""

    def __init__(
        self, call: Callable[[list[Item]], Awaitable[None]],
        future_of: Callable[[Item], asyncio.Future[Any]], max_batch: int,
    ) -> None:
        self.call = call
        self.future_of = future_of
        self.max_batch = max_batch
        self._queue: list[Item] = []
        self._sending: asyncio.Task[None] | None = None

    @property
    def sending(self) -> asyncio.Task[None] | None:
        """The task sending the queue, while there is one."""
        return self._sending

    def submit(self, item: Item) -> None:
        """Queue `item`; it goes in the next call, at once when none is in flight."""
        self._queue.append(item)
        if self._sending is None:
            self._sending = asyncio.create_task(self._send())

    def withdraw(self, item: Item) -> bool:
        """Take `item` back if it is still queued (not sent); False when it was sent."""
        if item in self._queue:
            self._queue.remove(item)
            return True
        return False

    async def _send(self) -> None:
        queue = self._queue
        batch: list[Item] = []
        try:
            while queue:
                batch = queue[: self.max_batch]
                del queue[: self.max_batch]
                await self.call(batch)
        except BaseException as exc:
            fail((self.future_of(item) for item in batch + queue), exc)
            del queue[:]
            raise
        finally:
            # No await between the empty check and this: an item arriving later finds
            # no sending task and starts one.
            self._sending = None


def fail(futures: Iterable[asyncio.Future[Any]], exc: BaseException) -> None:
    """Answer each future not yet answered with `exc`: cancelled for a cancellation."""
    for future in futures:
        if not future.done():
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(exc)
