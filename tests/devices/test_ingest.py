"""`ingest_batch` called directly, as the gateway and the HTTP endpoint call it: what one batch stores, what it
dead-letters and why."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select, text

from devices import registry as device_registry
from devices.ingest import Inbound, ingest_batch
from devices.models import DeadLetter
from kernel.runtime import Runtime
from tests.conftest import admin_access
from tests.factories import create_elder, register_device

TS = "2026-03-02T09:00:00+08:00"


def heartbeat(rt: Runtime, device_id: str, event_id: str, **extra: Any) -> Inbound:
    body = {"event_id": event_id, "type": "heartbeat", "ts": TS, **extra}
    return Inbound(device_id=device_id, kind="events", payload=json.dumps(body).encode(), received_at=rt.clock.now())


async def stored_events(rt: Runtime, device_id: str) -> list[str]:
    async with rt.database.unit_of_work() as s:
        rows = await s.execute(text("select event_id from device_events where device_id = :d order by event_id"),
                               {"d": device_id})
        return [r[0] for r in rows]


async def dead_letters(rt: Runtime, device_id: str) -> list[tuple[str, str | None]]:
    async with rt.database.unit_of_work() as s:
        rows = await s.execute(select(DeadLetter.reason, DeadLetter.region_code)
                               .where(DeadLetter.device_id == device_id).order_by(DeadLetter.id))
        return [(r[0], r[1]) for r in rows]


async def test_a_redelivery_inside_one_batch_is_stored_once(runtime: Runtime) -> None:
    rt = runtime
    elder = await create_elder(rt)
    device_id, _token = await register_device(rt, elder, kind="wristband")
    original = heartbeat(rt, device_id, "hb-1", battery=80)
    other = heartbeat(rt, device_id, "hb-2", battery=79)
    async with rt.database.unit_of_work() as s:
        outcomes = await ingest_batch(s, rt, [original, other, original])  # the broker redelivered hb-1
    assert [[(a.event_id, a.duplicate) for a in o.accepted] for o in outcomes] == [
        [("hb-1", False)], [("hb-2", False)], [("hb-1", True)]]
    assert all(not o.rejected for o in outcomes)
    assert await stored_events(rt, device_id) == ["hb-1", "hb-2"]
    # and the same again in a later batch is a duplicate of what the table holds
    async with rt.database.unit_of_work() as s:
        [again] = await ingest_batch(s, rt, [original])
    assert [(a.event_id, a.duplicate) for a in again.accepted] == [("hb-1", True)]
    assert await stored_events(rt, device_id) == ["hb-1", "hb-2"]
    assert await dead_letters(rt, device_id) == []


async def test_an_event_id_reused_with_another_payload_inside_one_batch_is_stored_and_noted(
        runtime: Runtime) -> None:
    rt = runtime
    elder = await create_elder(rt)
    device_id, _token = await register_device(rt, elder, kind="wristband")
    async with rt.database.unit_of_work() as s:
        outcomes = await ingest_batch(s, rt, [heartbeat(rt, device_id, "hb-1", battery=80),
                                              heartbeat(rt, device_id, "hb-1", battery=20)])
    # not a redelivery (the payload differs): both are kept, neither is a duplicate
    assert [[a.duplicate for a in o.accepted] for o in outcomes] == [[False], [False]]
    assert await stored_events(rt, device_id) == ["hb-1", "hb-1"]


async def test_an_unknown_device_is_dead_lettered(runtime: Runtime) -> None:
    rt = runtime
    async with rt.database.unit_of_work() as s:
        [outcome] = await ingest_batch(s, rt, [heartbeat(rt, "btn-nobody-here", "hb-1")])
    assert outcome.accepted == []
    assert [r.reason for r in outcome.rejected] == ["unknown_device"]
    assert "btn-nobody-here" in outcome.rejected[0].detail
    assert await dead_letters(rt, "btn-nobody-here") == [("unknown_device", None)]
    assert await stored_events(rt, "btn-nobody-here") == []


async def test_a_revoked_device_is_dead_lettered(runtime: Runtime) -> None:
    rt = runtime
    elder = await create_elder(rt)
    device_id, _token = await register_device(rt, elder, kind="wristband")
    live_id, _ = await register_device(rt, elder, kind="wristband")
    async with rt.database.unit_of_work() as s:
        await device_registry.revoke_device(s, rt.clock, admin_access(), device_id)
    async with rt.database.unit_of_work() as s:
        revoked, live = await ingest_batch(s, rt, [heartbeat(rt, device_id, "hb-1"), heartbeat(rt, live_id, "hb-1")])
    assert revoked.accepted == []
    assert [r.reason for r in revoked.rejected] == ["device_revoked"]
    # the dead letter keeps the region of the device's elder, so the region's staff see it
    assert await dead_letters(rt, device_id) == [("device_revoked", elder.region_code)]
    assert await stored_events(rt, device_id) == []
    # the positive control in the same batch: an active device's event is stored
    assert [(a.event_id, a.duplicate) for a in live.accepted] == [("hb-1", False)] and not live.rejected
    assert await stored_events(rt, live_id) == ["hb-1"]
