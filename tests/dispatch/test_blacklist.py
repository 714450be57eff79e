"""The credit blacklist holds on every path that names a caregiver: a dispatcher's assignment, an accept of an offer
made before the listing, and (tests/billing/test_blacklist.py) billing. Over HTTP against the real services."""

from __future__ import annotations

from typing import Any

from tests.factories import caregiver_headers, create_caregiver, create_organization, offset, on_duty
from tests.world import World


async def _blacklist(world: World, admin: dict[str, str], kind: str, subject_id: object) -> dict[str, Any]:
    listed = await world.client.post("/v1/blacklist", headers=admin, json={
        "subject_kind": kind, "subject_id": str(subject_id), "reason": "虚报服务记录"})
    assert listed.status_code == 201, listed.text
    return dict(listed.json())


async def test_a_dispatcher_cannot_assign_a_blacklisted_caregiver(world: World, admin_headers: dict[str, str]
                                                                  ) -> None:
    order = await world.order()
    chosen = world.caregivers[2]
    await _blacklist(world, admin_headers, "caregiver", chosen.id)
    refused = await world.client.post(f"/v1/orders/{order['id']}/assign", json={"caregiver_id": str(chosen.id)},
                                      headers=world.dispatcher)
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "caregiver_blacklisted"
    assert await world.offers_of(2) == []
    # nothing changed: the nearest caregiver's loop offer is still out
    assert [o["order_id"] for o in await world.offers_of(0)] == [order["id"]]


async def test_a_dispatcher_cannot_assign_a_caregiver_of_a_blacklisted_organisation(
        world: World, admin_headers: dict[str, str]) -> None:
    order = await world.order()
    chosen = world.caregivers[1]
    await _blacklist(world, admin_headers, "organization", chosen.organization_id)
    refused = await world.client.post(f"/v1/orders/{order['id']}/assign", json={"caregiver_id": str(chosen.id)},
                                      headers=world.dispatcher)
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "organization_blacklisted"


async def test_an_offer_made_before_the_listing_cannot_be_accepted(world: World, admin_headers: dict[str, str]
                                                                   ) -> None:
    order = await world.order()
    offer = (await world.offers_of(0))[0]
    entry = await _blacklist(world, admin_headers, "caregiver", world.caregivers[0].id)
    refused = await world.client.post(f"/v1/offers/{offer['id']}/accept", headers=await world.as_cg(0))
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "caregiver_blacklisted"
    state = (await world.client.get(f"/v1/orders/{order['id']}", headers=world.dispatcher)).json()
    assert state["status"] == "offered" and state.get("visit_id") is None
    # lifted: the same offer may be taken again
    lifted = await world.client.post(f"/v1/blacklist/{entry['id']}/lift", headers=admin_headers,
                                     json={"reason": "复核后撤销"})
    assert lifted.status_code == 200
    accepted = await world.client.post(f"/v1/offers/{offer['id']}/accept", headers=await world.as_cg(0))
    assert accepted.status_code == 200, accepted.text


async def test_an_offer_to_a_caregiver_of_a_blacklisted_organisation_cannot_be_accepted(
        world: World, admin_headers: dict[str, str]) -> None:
    await world.order()
    offer = (await world.offers_of(0))[0]
    await _blacklist(world, admin_headers, "organization", world.caregivers[0].organization_id)
    refused = await world.client.post(f"/v1/offers/{offer['id']}/accept", headers=await world.as_cg(0))
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "organization_blacklisted"


async def test_no_caregiver_of_a_blacklisted_organisation_is_offered_an_order(
        world: World, admin_headers: dict[str, str]) -> None:
    other = await create_organization(world.rt, name="杭锦旗另一家服务中心")
    nearest = await create_caregiver(world.rt, other, skills=["personal_care"], certificate_level="junior")
    await on_duty(world.rt, nearest, *offset(*world.home, north_m=100))
    nearest_cg = await caregiver_headers(world.rt, nearest)
    # the positive control: before the listing, the nearest (of the other organisation) is offered the order
    first = await world.order()
    assert [o["order_id"] for o in (await world.client.get("/v1/caregivers/me/offers", headers=nearest_cg)
                                    ).json()["items"]] == [first["id"]]
    await _blacklist(world, admin_headers, "organization", other.id)
    second = await world.order()
    offered = (await world.client.get("/v1/caregivers/me/offers", headers=nearest_cg)).json()["items"]
    assert second["id"] not in [o["order_id"] for o in offered]
    assert [o["order_id"] for o in await world.offers_of(0)] == [second["id"]]  # the next nearest, not listed
    ranked = await world.client.get(f"/v1/orders/{second['id']}/candidates", headers=world.dispatcher)
    assert ranked.status_code == 200, ranked.text
    assert str(nearest.id) not in [c["caregiver_id"] for c in ranked.json()["items"]]
