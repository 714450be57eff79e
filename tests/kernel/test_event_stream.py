"""The shared SSE follower (kernel/event_stream.py): a wake-up that arrives before the relay's commit is followed
as soon as the rows show, not a whole wait later."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

from sqlalchemy import select

from kernel.event_stream import MARGIN, FeedEvent, follow, latest_seq
from kernel.outbox import OutboxEvent, emit
from kernel.runtime import Runtime
from tests.waiting import blocked_in_redis, eventually
from vnh.workers import build_relay

COMMIT_DELAY_S = 0.25


async def test_an_event_announced_before_its_commit_is_sent_soon_after_the_commit(committed_runtime: Runtime) -> None:
    rt = committed_runtime
    committed_at: list[float] = []

    async def fetch(after: int) -> list[FeedEvent]:
        async with rt.database.unit_of_work() as s:
            rows = (await s.scalars(select(OutboxEvent).where(OutboxEvent.stream_seq > after)
                                    .order_by(OutboxEvent.stream_seq))).all()
        return [FeedEvent(r.stream_seq or 0, r.event_type, dict(r.payload)) for r in rows]

    async def slow_commit(_events: Sequence[OutboxEvent]) -> None:
        # the relay has written the Redis stream (the wake-up); its transaction commits a moment later
        await asyncio.sleep(COMMIT_DELAY_S)

    start = str(await latest_seq(rt))

    async def first() -> float:
        async for event in follow(rt, fetch, start):
            if event is not None:
                return time.monotonic()
        raise AssertionError("the stream ended")

    listener = asyncio.create_task(first())
    async with rt.database.unit_of_work() as s:
        emit(s, rt.clock, "orders.elder.created", "e1", {"elder_id": "e1", "region_code": "150625"})
    await eventually(lambda: blocked_in_redis(rt, "xread"), timeout=10, what="the follower waiting on the Redis stream")
    assert await build_relay(rt, [slow_commit]).relay_once() == 1
    committed_at.append(time.monotonic())
    received = await asyncio.wait_for(listener, 10)
    lag = received - committed_at[0]
    print(f"sent {lag * 1000:.0f} ms after the relay's commit")
    # before: the follower saw nothing at the wake-up and slept a whole WAIT_MS (1 s) before looking again
    assert lag < 0.5


async def test_a_last_event_id_no_stream_could_have_sent_follows_from_now(committed_runtime: Runtime) -> None:
    """`Last-Event-ID` is whatever text a client sends: beyond a bigint, signed, or not ASCII digits it means
    "from now", never a database error (which would drop the stream and make the client retry it forever)."""
    rt = committed_runtime
    now = await latest_seq(rt)
    asked: list[int] = []

    async def fetch(after: int) -> list[FeedEvent]:
        asked.append(after)
        async with rt.database.unit_of_work() as s:  # the real query: an out-of-range bound fails here
            rows = (await s.scalars(select(OutboxEvent).where(OutboxEvent.stream_seq > after).limit(1))).all()
        return [FeedEvent(r.stream_seq or 0, r.event_type, dict(r.payload)) for r in rows]

    for sent in ("99999999999999999999", str(2**63), "-5", "１２", "12abc"):
        asked.clear()
        stream = follow(rt, fetch, sent)
        task = asyncio.ensure_future(stream.__anext__())
        deadline = time.monotonic() + 10
        while not asked and not task.done():
            assert time.monotonic() < deadline, "the follower never fetched"
            await asyncio.sleep(0.01)  # paces the wait for the first fetch
        if task.done():
            task.result()  # raises what the follower raised
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
            await task
        await stream.aclose()
        assert asked[0] == max(0, now - MARGIN), sent
