"""The coalescer the booking batcher and the rate limiter send through: one call in
flight, the items that arrive meanwhile together in the next, bounded."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from eventbook.coalescer import Coalescer

Item = tuple[int, "asyncio.Future[int]"]


class Recorder:
    """A call that records its batches and, until released, holds each one open."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.release.set()

    async def call(self, batch: list[Item]) -> None:
        self.batches.append([value for value, _ in batch])
        await self.release.wait()
        for value, future in batch:
            future.set_result(value * 10)


def future_of(item: Item) -> asyncio.Future[Any]:
    return item[1]


def submit(coalescer: Coalescer[Item], value: int) -> asyncio.Future[int]:
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    coalescer.submit((value, future))
    return future


async def test_a_lone_item_is_sent_at_once_and_answered() -> None:
    recorder = Recorder()
    coalescer = Coalescer(recorder.call, future_of, max_batch=10)
    assert await submit(coalescer, 1) == 10
    assert recorder.batches == [[1]]
    assert coalescer.sending is None


async def test_items_arriving_during_a_call_go_together_in_the_next_bounded() -> None:
    recorder = Recorder()
    recorder.release.clear()
    coalescer = Coalescer(recorder.call, future_of, max_batch=3)
    first = submit(coalescer, 0)
    await asyncio.sleep(0)  # the first call is now in flight
    rest = [submit(coalescer, value) for value in range(1, 6)]
    recorder.release.set()
    assert await asyncio.gather(first, *rest) == [0, 10, 20, 30, 40, 50]
    assert recorder.batches == [[0], [1, 2, 3], [4, 5]]


async def test_an_item_withdrawn_before_its_call_is_never_sent() -> None:
    recorder = Recorder()
    recorder.release.clear()
    coalescer = Coalescer(recorder.call, future_of, max_batch=10)
    submit(coalescer, 0)
    await asyncio.sleep(0)
    late: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    coalescer.submit((1, late))
    assert coalescer.withdraw((1, late))
    recorder.release.set()
    assert coalescer.sending is not None
    await coalescer.sending
    assert recorder.batches == [[0]]


async def test_cancelling_the_sending_cancels_every_item_not_yet_answered() -> None:
    recorder = Recorder()
    recorder.release.clear()
    coalescer = Coalescer(recorder.call, future_of, max_batch=10)
    in_call = submit(coalescer, 0)
    await asyncio.sleep(0)
    queued = submit(coalescer, 1)
    sending = coalescer.sending
    assert sending is not None
    sending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sending
    assert in_call.cancelled() and queued.cancelled()
    assert coalescer.sending is None
    recorder.release.set()
    assert await submit(coalescer, 2) == 20
