"""The caregiver app's stream: the events that concern one caregiver, selected in SQL, shaped as the caregiver may
see them, replayed after `Last-Event-ID`."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime

from sqlalchemy import select, text

from dispatch.caregiver_stream import events_after, follow_caregiver
from dispatch.models import Offer
from kernel.event_stream import FeedEvent, encode
from kernel.outbox import emit
from kernel.runtime import Runtime
from tests.world import World
from vnh.workers import build_relay


def _offer_event(caregiver_id: str) -> dict[str, str]:
    return {"offer_id": str(uuid.uuid4()), "order_id": str(uuid.uuid4()), "caregiver_id": caregiver_id,
            "status": "expired", "kind": "loop", "expires_at": "2026-12-04T08:00:00+00:00"}


async def test_a_replay_reads_only_the_caregivers_own_events_by_index(committed_runtime: Runtime) -> None:
    rt = committed_runtime
    mine, other = uuid.uuid4(), uuid.uuid4()
    async with rt.database.unit_of_work() as s:
        emit(s, rt.clock, "dispatch.offer.expired", "a", _offer_event(str(mine)))
        for _ in range(300):
            emit(s, rt.clock, "dispatch.offer.expired", "b", _offer_event(str(other)))
        emit(s, rt.clock, "dispatch.offer.expired", "c", _offer_event(str(mine)))
        # an event naming the caregiver that is not for its app (registry bookkeeping)
        emit(s, rt.clock, "dispatch.caregiver.updated", "d",
             {"caregiver_id": str(mine), "organization_id": str(uuid.uuid4()), "fields": ["phone"]})
    await build_relay(rt).relay_once()
    got = await events_after(rt, mine, 0)
    # exactly its two events, not 300 placeholders for the others' (the filter is in SQL)
    assert [e.type for e in got] == ["dispatch.offer.expired"] * 2
    assert got[0].id < got[1].id
    assert await events_after(rt, mine, got[0].id) == [got[1]]

    async def resumed() -> FeedEvent:
        async for event in follow_caregiver(rt, mine, str(got[0].id)):
            if event is not None:
                return event
        raise AssertionError("the stream ended")

    assert await asyncio.wait_for(resumed(), 10) == got[1]
    async with rt.database.unit_of_work() as s:
        await s.execute(text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join((await s.scalars(text(
            "EXPLAIN SELECT * FROM outbox WHERE stream_seq > 0 AND (outbox.payload ->> 'caregiver_id') = :cg "
            "ORDER BY stream_seq LIMIT 500"), {"cg": str(mine)})).all())
    assert "ix_outbox_caregiver_seq" in plan, plan


async def test_an_urgent_offer_shows_as_the_offer_list_does_and_others_offers_never(world: World) -> None:
    rt, client = world.rt, world.client
    order = await world.order(priority="urgent")
    await build_relay(rt).relay_once()
    me = world.caregivers[0]
    events = await events_after(rt, me.id, 0)
    assert [e.type for e in events] == ["dispatch.offer.created"]
    listed = (await world.offers_of(0))[0]
    event = events[0].data
    assert event["offer"] == listed  # masked as GET /v1/caregivers/me/offers shows it
    assert event["kind"] == "urgent" and event["order_id"] == order["id"] and event["offer_id"] == listed["id"]
    assert datetime.fromisoformat(event["expires_at"]) == datetime.fromisoformat(listed["expires_at"])
    assert listed["elder"]["name"].endswith("*")

    # another caregiver takes it: ours is withdrawn, saying why; theirs (accepted, assigned) never shows here
    theirs = (await world.offers_of(1))[0]
    accepted = await client.post(f"/v1/offers/{theirs['id']}/accept", headers=await world.as_cg(1))
    assert accepted.status_code == 200, accepted.text
    await build_relay(rt).relay_once()
    later = await events_after(rt, me.id, events[0].id)
    assert [(e.type, e.data.get("reason")) for e in later] == [
        ("dispatch.offer.withdrawn", "another caregiver accepted")]
    async with rt.database.unit_of_work() as s:
        others = {str(o.id) for o in (await s.scalars(select(Offer).where(Offer.caregiver_id != me.id))).all()}
    sent = "\n".join(encode(e) for e in [*events, *later])
    assert not any(offer_id in sent for offer_id in others)
    assert str(world.elder.id) not in sent and world.elder.name not in sent and "region_code" not in sent


async def test_reassignment_and_cancellation_reach_the_caregivers_they_concern(world: World) -> None:
    rt, client = world.rt, world.client
    order = await world.order()
    first, second = world.caregivers[0], world.caregivers[2]
    offer = (await world.offers_of(0))[0]
    assert (await client.post(f"/v1/offers/{offer['id']}/accept", headers=await world.as_cg(0))).status_code == 200
    await build_relay(rt).relay_once()
    assert [e.type for e in await events_after(rt, first.id, 0)] == ["dispatch.offer.created",
                                                                    "orders.order.assigned",
                                                                    "dispatch.offer.accepted"]
    start = max(e.id for e in await events_after(rt, first.id, 0))
    reassigned = await client.post(f"/v1/orders/{order['id']}/assign", json={"caregiver_id": str(second.id)},
                                   headers=world.dispatcher)
    assert reassigned.status_code == 201, reassigned.text
    cancelled = await client.post(f"/v1/orders/{order['id']}/cancel", json={"reason": "家属已到"},
                                  headers=world.dispatcher)
    assert cancelled.status_code == 200, cancelled.text
    await build_relay(rt).relay_once()
    # the first loses the visit to the reassignment; the second gets the dispatcher's offer, then its withdrawal
    assert [(e.type, e.data["status"]) for e in await events_after(rt, first.id, start)] == [
        ("orders.visit.withdrawn", "withdrawn")]
    assert [(e.type, e.data["kind"], e.data["status"], e.data["reason"])
            for e in await events_after(rt, second.id, 0)] == [
        ("dispatch.offer.created", "manual", "pending", None),
        ("dispatch.offer.withdrawn", "manual", "withdrawn", "order cancelled")]


async def test_cancelling_an_assigned_order_reaches_its_caregiver(world: World) -> None:
    rt, client = world.rt, world.client
    order = await world.order()
    offer = (await world.offers_of(0))[0]
    assert (await client.post(f"/v1/offers/{offer['id']}/accept", headers=await world.as_cg(0))).status_code == 200
    await build_relay(rt).relay_once()
    start = max(e.id for e in await events_after(rt, world.caregivers[0].id, 0))
    cancelled = await client.post(f"/v1/orders/{order['id']}/cancel", json={"reason": "家属已到"},
                                  headers=world.family)
    assert cancelled.status_code == 200, cancelled.text
    await build_relay(rt).relay_once()
    got = [e.data for e in await events_after(rt, world.caregivers[0].id, start)]
    assert [(d["type"], d["order_id"]) for d in got] == [("orders.order.cancelled", order["id"]),
                                                         ("orders.visit.withdrawn", order["id"])]
    assert got[0]["previous_status"] == "assigned" and got[0]["service_code"] == "daily_care"
