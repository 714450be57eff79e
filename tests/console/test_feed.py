"""The console feed: committed events in stream order, filtered to the caller's region, replayed after an id."""

from __future__ import annotations

import asyncio
import uuid

from console.feed import follow, latest_seq
from kernel.authz import Principal, grant
from kernel.outbox import emit
from kernel.runtime import Runtime
from tests.waiting import blocked_in_redis, eventually
from vnh.workers import build_relay


def _order_event(region: str) -> dict[str, str | None]:
    oid = str(uuid.uuid4())
    return {"order_id": oid, "elder_id": str(uuid.uuid4()), "region_code": region, "status": "unfulfilled",
            "previous_status": "offered", "priority": "normal", "service_code": "cleaning"}


async def _take(rt: Runtime, region: str, last_id: str | None, n: int) -> list[int]:
    access = grant(Principal(user_id="d", username="d", role="dispatcher", region_code=region), "console.view")
    got: list[int] = []

    async def collect() -> None:
        async for event in follow(rt, access, last_id):
            if event is not None:
                got.append(event.id)
                if len(got) == n:
                    return

    await asyncio.wait_for(collect(), 10)
    return got


async def test_events_arrive_in_stream_order_for_the_callers_region_and_replay_after_an_id(
        committed_runtime: Runtime) -> None:
    rt = committed_runtime
    for region in ("150625", "150602", "150625", "150625"):
        async with rt.database.unit_of_work() as s:
            payload = _order_event(region)
            emit(s, rt.clock, "orders.order.unfulfilled", str(payload["order_id"]), payload)
    await build_relay(rt).relay_once()
    ours = await _take(rt, "150625", "0", 3)
    assert ours == sorted(ours) and len(ours) == 3
    theirs = await _take(rt, "150602", "0", 1)
    assert theirs[0] not in ours
    city = await _take(rt, "150600", "0", 4)  # 鄂尔多斯市 covers both counties
    assert sorted(city) == sorted(ours + theirs)
    assert await _take(rt, "150625", str(ours[0]), 2) == ours[1:]


async def test_a_live_follower_gets_events_committed_after_it_connected(committed_runtime: Runtime) -> None:
    rt = committed_runtime
    access = grant(Principal(user_id="d", username="d", role="dispatcher", region_code="150625"), "console.view")
    received: list[str] = []
    start = str(await latest_seq(rt))  # what a console's snapshot hands the stream

    async def listen() -> None:
        async for event in follow(rt, access, start):
            if event is not None:
                received.append(event.type)
                return

    assert not await blocked_in_redis(rt, "xread")  # nobody of ours waits yet: the condition below can be false
    listener = asyncio.create_task(listen())
    # the follower has read PostgreSQL up to `start` and waits on the Redis stream: what follows is live
    await eventually(lambda: blocked_in_redis(rt, "xread"), timeout=10, what="the follower waiting for a wake-up")
    async with rt.database.unit_of_work() as s:
        payload = _order_event("150625")
        emit(s, rt.clock, "orders.order.unfulfilled", str(payload["order_id"]), payload)
    await build_relay(rt).relay_once()
    await asyncio.wait_for(listener, 10)
    assert received == ["orders.order.unfulfilled"]
