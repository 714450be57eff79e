"""Offer lifecycles beyond the one-by-one loop: the urgent broadcast (its own timeout, a decline among several
pending), a caregiver going off duty with offers out, and a dispatcher reassigning an assigned order."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from dispatch.models import Offer
from dispatch.offers import expire_due_offers
from kernel.clock import ManualClock
from tests.world import World


@dataclass(frozen=True)
class OfferRow:
    caregiver: int  # index into world.caregivers
    kind: str
    status: str
    reason: str | None
    lasts: timedelta  # expires_at - created_at


async def offers_of_order(world: World, order_id: str) -> list[OfferRow]:
    index = {cg.id: i for i, cg in enumerate(world.caregivers)}
    async with world.rt.database.unit_of_work() as s:
        rows = (await s.scalars(select(Offer).where(Offer.order_id == order_id)
                                .order_by(Offer.created_at, Offer.distance_m))).all()
        return [OfferRow(index[o.caregiver_id], o.kind, o.status, o.reason, o.expires_at - o.created_at)
                for o in rows]


async def order_of(world: World, order_id: str) -> dict[str, Any]:
    response = await world.client.get(f"/v1/orders/{order_id}", headers=world.dispatcher)
    assert response.status_code == 200, response.text
    return dict(response.json())


def clock(world: World) -> ManualClock:
    assert isinstance(world.rt.clock, ManualClock)
    return world.rt.clock


async def test_an_urgent_offer_expires_after_the_urgent_timeout(world: World) -> None:
    settings = world.rt.settings.dispatch
    assert settings.urgent_offer_timeout == timedelta(seconds=60) < settings.offer_timeout  # the defaults
    order = await world.order(priority="urgent")
    offers = await offers_of_order(world, order["id"])
    assert [(o.caregiver, o.kind, o.status) for o in offers] == [(0, "urgent", "pending"), (1, "urgent", "pending"),
                                                                 (2, "urgent", "pending")]
    assert {o.lasts for o in offers} == {timedelta(seconds=60)}
    clock(world).advance(59)
    assert await expire_due_offers(world.rt) == 0  # a second before: all three still out
    clock(world).advance(1)
    assert await expire_due_offers(world.rt) == 3  # at exactly 60 s, not the loop's 3 minutes
    assert [o.status for o in await offers_of_order(world, order["id"])] == ["expired"] * 3
    final = await order_of(world, order["id"])
    assert final["status"] == "unfulfilled"  # every caregiver in reach was tried: the dispatcher's queue
    assert final["history"][-1]["reason"] == "no qualified caregiver left"


async def test_one_decline_among_pending_urgent_offers_leaves_the_others_out(world: World) -> None:
    order = await world.order(priority="urgent")
    first = (await world.offers_of(0))[0]
    declined = await world.client.post(f"/v1/offers/{first['id']}/decline", json={"reason": "忙"},
                                       headers=await world.as_cg(0))
    assert declined.status_code == 200, declined.text
    offers = await offers_of_order(world, order["id"])
    assert [(o.caregiver, o.status) for o in offers] == [(0, "declined"), (1, "pending"), (2, "pending")]
    assert (await order_of(world, order["id"]))["status"] == "offered"
    # the last decline moves the order on
    for index in (1, 2):
        offer = (await world.offers_of(index))[0]
        await world.client.post(f"/v1/offers/{offer['id']}/decline", json={"reason": "忙"},
                                headers=await world.as_cg(index))
    assert (await order_of(world, order["id"]))["status"] == "unfulfilled"


async def test_going_off_duty_withdraws_the_pending_offer_and_the_order_goes_to_the_next_caregiver(
        world: World) -> None:
    order = await world.order()
    assert [(o.caregiver, o.status) for o in await offers_of_order(world, order["id"])] == [(0, "pending")]
    off = await world.client.put("/v1/caregivers/me/duty", json={"on_duty": False}, headers=await world.as_cg(0))
    assert off.status_code == 200, off.text
    assert off.json()["on_duty"] is False
    offers = await offers_of_order(world, order["id"])
    assert [(o.caregiver, o.kind, o.status) for o in offers] == [(0, "loop", "withdrawn"), (1, "loop", "pending")]
    assert offers[0].reason == "caregiver went off duty"
    assert await world.offers_of(0) == []
    assert (await order_of(world, order["id"]))["status"] == "offered"
    # and once back on duty, the caregiver is not offered the order again (it was tried)
    back = await world.client.put("/v1/caregivers/me/duty", json={"on_duty": True}, headers=await world.as_cg(0))
    assert back.status_code == 200 and back.json()["on_duty"] is True
    assert await world.offers_of(0) == []


async def test_going_off_duty_among_urgent_offers_leaves_the_others_pending(world: World) -> None:
    order = await world.order(priority="urgent")
    off = await world.client.put("/v1/caregivers/me/duty", json={"on_duty": False}, headers=await world.as_cg(1))
    assert off.status_code == 200, off.text
    offers = await offers_of_order(world, order["id"])
    assert [(o.caregiver, o.status) for o in offers] == [(0, "pending"), (1, "withdrawn"), (2, "pending")]
    assert (await order_of(world, order["id"]))["status"] == "offered"


async def test_going_off_duty_keeps_a_dispatchers_manual_offer(world: World) -> None:
    """Only loop and urgent offers are withdrawn: a dispatcher chose this caregiver by name."""
    order = await world.order()
    assigned = await world.client.post(f"/v1/orders/{order['id']}/assign",
                                       json={"caregiver_id": str(world.caregivers[2].id)}, headers=world.dispatcher)
    assert assigned.status_code == 201, assigned.text
    off = await world.client.put("/v1/caregivers/me/duty", json={"on_duty": False}, headers=await world.as_cg(2))
    assert off.status_code == 200, off.text
    offers = await offers_of_order(world, order["id"])
    assert [(o.caregiver, o.kind, o.status) for o in offers] == [(0, "loop", "withdrawn"), (2, "manual", "pending")]


async def test_reassigning_an_assigned_order_withdraws_the_visit_and_offers_it_to_the_chosen_caregiver(
        world: World) -> None:
    client = world.client
    order = await world.order()
    offer = (await world.offers_of(0))[0]
    cg0 = await world.as_cg(0)
    accepted = await client.post(f"/v1/offers/{offer['id']}/accept", headers=cg0)
    assert accepted.status_code == 200, accepted.text
    old_visit = accepted.json()["visit_id"]
    assert (await order_of(world, order["id"]))["status"] == "assigned"

    chosen = world.caregivers[2]
    reassigned = await client.post(f"/v1/orders/{order['id']}/assign", json={"caregiver_id": str(chosen.id)},
                                   headers=world.dispatcher)
    assert reassigned.status_code == 201, reassigned.text
    visit = await client.get(f"/v1/visits/{old_visit}", headers=world.dispatcher)
    assert visit.status_code == 200 and visit.json()["status"] == "withdrawn"
    current = await order_of(world, order["id"])
    assert current["status"] == "offered" and current["visit_id"] is None
    offers = await offers_of_order(world, order["id"])
    assert [(o.caregiver, o.kind, o.status) for o in offers] == [(0, "loop", "withdrawn"), (2, "manual", "pending")]
    assert offers[1].lasts == world.rt.settings.dispatch.manual_offer_timeout
    assert await world.offers_of(0) == []  # the first caregiver holds nothing of the order any more

    manual = (await world.offers_of(2))[0]
    taken = await client.post(f"/v1/offers/{manual['id']}/accept", headers=await world.as_cg(2))
    assert taken.status_code == 200, taken.text
    final = await order_of(world, order["id"])
    assert final["status"] == "assigned" and final["assigned_caregiver_id"] == str(chosen.id)
    assert final["visit_id"] == taken.json()["visit_id"] != old_visit
