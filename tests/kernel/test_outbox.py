from __future__ import annotations

import json

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from kernel.outbox import OutboxEvent, emit
from kernel.runtime import Runtime
from vnh.workers import build_relay


async def test_events_reach_the_redis_stream_after_commit_in_order(committed_runtime: Runtime) -> None:
    rt = committed_runtime
    for i in range(3):
        async with rt.database.unit_of_work() as s:
            emit(s, rt.clock, "orders.elder.created", f"e{i}", {"elder_id": f"e{i}", "region_code": "150625"})
    relay = build_relay(rt)
    assert await relay.relay_once() == 3
    assert await relay.relay_once() == 0
    entries = await rt.redis.xrange(rt.redis_key("events"))
    assert [json.loads(fields[b"payload"])["elder_id"] for _id, fields in entries] == ["e0", "e1", "e2"]
    seqs = [int(fields[b"seq"]) for _id, fields in entries]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    async with rt.database.unit_of_work() as s:
        rows = (await s.scalars(select(OutboxEvent))).all()
    assert all(r.published_at is not None for r in rows)


async def test_a_rolled_back_change_publishes_nothing(committed_runtime: Runtime) -> None:
    rt = committed_runtime
    with pytest.raises(RuntimeError):
        async with rt.database.unit_of_work() as s:
            emit(s, rt.clock, "orders.elder.created", "e1", {"elder_id": "e1", "region_code": "150625"})
            raise RuntimeError("the change failed")
    assert await build_relay(rt).relay_once() == 0


async def test_a_failed_publish_leaves_the_events_for_the_next_attempt(committed_runtime: Runtime) -> None:
    rt = committed_runtime
    async with rt.database.unit_of_work() as s:
        emit(s, rt.clock, "devices.device.revoked", "d1", {"device_id": "d1", "elder_id": "e1"})

    async def broken(_events: object) -> None:
        raise ConnectionError("broker away")

    from kernel.outbox import OutboxRelay

    with pytest.raises(ConnectionError):
        await OutboxRelay(rt.database, rt.clock, [broken]).relay_once()
    assert await build_relay(rt).relay_once() == 1


async def test_payloads_are_checked_against_the_catalogue(runtime: Runtime) -> None:
    async with runtime.database.unit_of_work() as s:
        with pytest.raises(KeyError, match="not in the catalogue"):
            emit(s, runtime.clock, "orders.elder.exploded", "x", {})
        with pytest.raises(ValidationError):
            emit(s, runtime.clock, "orders.elder.created", "x", {"elder_id": "x", "id_number": "1506…"})
