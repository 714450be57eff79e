"""The whole dispatch flow over HTTP: intake → offers → accept → visit → confirmation, and its off-ramps."""

from __future__ import annotations

from datetime import timedelta

from dispatch.offers import expire_due_offers
from kernel.clock import ManualClock
from kernel.geo import from_wgs84
from tests.factories import (
    offset,
)
from tests.world import World


async def test_an_asap_order_is_offered_to_the_nearest_qualified_caregiver(world: World) -> None:
    order = await world.order(headers=world.family)
    assert order["status"] == "offered"
    assert [h["status"] for h in order["history"]] == ["created", "dispatching", "offered"]
    assert order["price_fen"] == 4500 and order["copay_fen"] == 4500 and order["quota_fen"] == 0
    offers = await world.offers_of(0)
    assert len(offers) == 1 and offers[0]["order_id"] == order["id"]
    assert 250 < offers[0]["distance_m"] < 350
    assert offers[0]["elder"]["name"].endswith("*") and "12号" not in offers[0]["elder"]["address"]
    assert await world.offers_of(1) == []


async def test_accept_creates_the_visit_and_the_visit_runs_to_confirmation(world: World) -> None:
    rt, client = world.rt, world.client
    order = await world.order(headers=world.family)
    offer = (await world.offers_of(0))[0]
    cg = await world.as_cg(0)
    accepted = await client.post(f"/v1/offers/{offer['id']}/accept", headers=cg)
    assert accepted.status_code == 200, accepted.text
    visit_id = accepted.json()["visit_id"]
    assert "巴音乌素社区12号" in accepted.json()["elder"]["address"]  # the door, now that the visit is theirs
    assert accepted.json()["elder"]["phone"].startswith("+86")
    assert (await client.get(f"/v1/orders/{order['id']}", headers=world.family)).json()["status"] == "assigned"
    assert (await client.post(f"/v1/visits/{visit_id}/depart", headers=cg)).status_code == 200
    assert isinstance(rt.clock, ManualClock)
    rt.clock.advance(600)
    # the phone reports GCJ-02, ~500 m off WGS-84: converted, so the check-in is not "far"
    gcj = from_wgs84(*world.home, "gcj02")
    checked_in = await client.post(f"/v1/visits/{visit_id}/check-in",
                                   json={"lat": gcj[0], "lon": gcj[1], "crs": "gcj02"}, headers=cg)
    assert checked_in.status_code == 200, checked_in.text
    assert checked_in.json()["check_in_distance_m"] < 5
    assert checked_in.json()["flags"] == []
    rt.clock.advance(65 * 60)
    out = await client.post(f"/v1/visits/{visit_id}/check-out",
                            json={"lat": world.home[0], "lon": world.home[1], "tasks_done": ["助浴", "整理床铺"]},
                            headers=cg)
    assert out.status_code == 200, out.text
    assert out.json()["duration_min"] == 65 and out.json()["status"] == "completed"
    confirmed = await client.post(f"/v1/visits/{visit_id}/confirm", json={"rating": 5, "comment": "很好"},
                                  headers=world.family)
    assert confirmed.status_code == 200, confirmed.text
    final = (await client.get(f"/v1/orders/{order['id']}", headers=world.family)).json()
    assert final["status"] == "confirmed"
    assert [h["status"] for h in final["history"]][-5:] == ["assigned", "en_route", "in_service", "completed",
                                                             "confirmed"]
    again = await client.post(f"/v1/visits/{visit_id}/confirm", json={"rating": 4}, headers=world.family)
    assert again.status_code == 409


async def test_decline_offers_the_next_nearest_and_nobody_left_goes_to_the_dispatcher(world: World) -> None:
    order = await world.order()
    for index in range(3):
        offers = await world.offers_of(index)
        assert len(offers) == 1, index
        declined = await world.client.post(f"/v1/offers/{offers[0]['id']}/decline", json={"reason": "忙"},
                                           headers=await world.as_cg(index))
        assert declined.status_code == 200
    final = (await world.client.get(f"/v1/orders/{order['id']}", headers=world.dispatcher)).json()
    assert final["status"] == "unfulfilled"
    assert final["history"][-1]["reason"] == "no qualified caregiver left"


async def test_an_unanswered_offer_expires_and_moves_on(world: World) -> None:
    await world.order()
    assert len(await world.offers_of(0)) == 1
    assert isinstance(world.rt.clock, ManualClock)
    world.rt.clock.advance(world.rt.settings.dispatch.offer_timeout + timedelta(seconds=1))
    assert await expire_due_offers(world.rt) == 1
    assert await world.offers_of(0) == []
    assert len(await world.offers_of(1)) == 1


async def test_an_expired_offer_cannot_be_accepted(world: World) -> None:
    await world.order()
    offer = (await world.offers_of(0))[0]
    assert isinstance(world.rt.clock, ManualClock)
    world.rt.clock.advance(world.rt.settings.dispatch.offer_timeout + timedelta(seconds=1))
    late = await world.client.post(f"/v1/offers/{offer['id']}/accept", headers=await world.as_cg(0))
    assert late.status_code == 409 and late.json()["error"]["code"] == "offer_not_pending"


async def test_urgent_orders_go_to_k_at_once_and_the_first_accept_wins(world: World) -> None:
    order = await world.order(priority="urgent")
    offers = [(await world.offers_of(i))[0] for i in range(3)]
    assert {o["priority"] for o in offers} == {"urgent"}
    second = await world.client.post(f"/v1/offers/{offers[1]['id']}/accept", headers=await world.as_cg(1))
    assert second.status_code == 200
    first = await world.client.post(f"/v1/offers/{offers[0]['id']}/accept", headers=await world.as_cg(0))
    assert first.status_code == 409
    final = (await world.client.get(f"/v1/orders/{order['id']}", headers=world.dispatcher)).json()
    assert final["assigned_caregiver_id"] == str(world.caregivers[1].id)


async def test_elder_apps_may_not_ask_for_urgent(world: World) -> None:
    response = await world.client.post("/v1/orders", headers=world.family, json={
        "elder_id": str(world.elder.id), "service_code": "daily_care", "priority": "urgent"})
    assert response.status_code == 403 and response.json()["error"]["code"] == "priority_not_allowed"


async def test_the_same_idempotency_key_gives_the_same_order(world: World) -> None:
    body = {"elder_id": str(world.elder.id), "service_code": "cleaning"}
    headers = {**world.family, "Idempotency-Key": "req-42"}
    first = await world.client.post("/v1/orders", json=body, headers=headers)
    again = await world.client.post("/v1/orders", json=body, headers=headers)
    assert first.status_code == 201 and again.status_code == 200
    assert first.json()["id"] == again.json()["id"]
    other = await world.client.post("/v1/orders", json={**body, "service_code": "bathing"}, headers=headers)
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_conflict"


async def test_a_caregiver_sees_and_touches_only_its_own_offers(world: World) -> None:
    await world.order()
    offer = (await world.offers_of(0))[0]
    stolen = await world.client.post(f"/v1/offers/{offer['id']}/accept", headers=await world.as_cg(1))
    assert stolen.status_code == 404


async def test_cancel_is_allowed_until_the_caregiver_sets_off(world: World) -> None:
    order = await world.order(headers=world.family)
    offer = (await world.offers_of(0))[0]
    accepted = await world.client.post(f"/v1/offers/{offer['id']}/accept", headers=await world.as_cg(0))
    await world.client.post(f"/v1/visits/{accepted.json()['visit_id']}/depart", headers=await world.as_cg(0))
    late = await world.client.post(f"/v1/orders/{order['id']}/cancel", json={"reason": "不需要了"},
                                   headers=world.family)
    assert late.status_code == 409 and late.json()["error"]["code"] == "invalid_state"
    fresh = await world.order(headers=world.family)
    cancelled = await world.client.post(f"/v1/orders/{fresh['id']}/cancel", json={"reason": "不需要了"},
                                        headers=world.family)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    for index in range(3):
        assert all(o["order_id"] != fresh["id"] for o in await world.offers_of(index))


async def test_a_far_check_in_is_flagged_and_waits_for_a_dispatcher(world: World) -> None:
    await world.order()
    offer = (await world.offers_of(0))[0]
    cg = await world.as_cg(0)
    visit_id = (await world.client.post(f"/v1/offers/{offer['id']}/accept", headers=cg)).json()["visit_id"]
    far = offset(*world.home, north_m=2000)
    checked_in = await world.client.post(f"/v1/visits/{visit_id}/check-in", json={"lat": far[0], "lon": far[1]},
                                         headers=cg)
    assert checked_in.json()["flags"] == ["far_check_in"]
    assert isinstance(world.rt.clock, ManualClock)
    world.rt.clock.advance(3600)
    out = await world.client.post(f"/v1/visits/{visit_id}/check-out", json={"lat": far[0], "lon": far[1]},
                                  headers=cg)
    assert out.json()["billing"] == "held"
    queue = (await world.client.get("/v1/visits/exceptions", headers=world.dispatcher)).json()["items"]
    assert [v["id"] for v in queue] == [visit_id]
    resolved = await world.client.post(f"/v1/visits/{visit_id}/flags/far_check_in/resolve",
                                       json={"decision": "rejected", "reason": "定位显示未到老人家"},
                                       headers=world.dispatcher)
    assert resolved.status_code == 200, resolved.text
    assert resolved.json()["open_flags"] == [] and resolved.json()["billing"] == "excluded"
    assert (await world.client.get("/v1/visits/exceptions", headers=world.dispatcher)).json()["items"] == []


async def test_dispatcher_assignment_reaches_the_chosen_caregiver_and_a_decline_returns_it(world: World) -> None:
    order = await world.order()
    ranked = await world.client.get(f"/v1/orders/{order['id']}/candidates", headers=world.dispatcher)
    assert ranked.status_code == 200
    # the nearest has the pending offer and is excluded from nothing; the ranking explains itself
    assert all("distance" in c["reasons"] for c in ranked.json()["items"])
    chosen = world.caregivers[2]
    assigned = await world.client.post(f"/v1/orders/{order['id']}/assign", json={"caregiver_id": str(chosen.id)},
                                       headers=world.dispatcher)
    assert assigned.status_code == 201, assigned.text
    assert await world.offers_of(0) == []
    manual = await world.offers_of(2)
    assert manual[0]["kind"] == "manual"
    await world.client.post(f"/v1/offers/{manual[0]['id']}/decline", json={"reason": "太远"},
                            headers=await world.as_cg(2))
    final = (await world.client.get(f"/v1/orders/{order['id']}", headers=world.dispatcher)).json()
    assert final["status"] == "unfulfilled"


async def test_scheduled_orders_wait_for_the_batch(world: World) -> None:
    start = (world.rt.clock.now() + timedelta(days=1)).isoformat()
    order = await world.order(window={"start": start})
    assert order["status"] == "created" and order["scheduled"] is True
    for index in range(3):
        assert await world.offers_of(index) == []


async def test_a_hotline_callback_goes_to_the_dispatcher_queue(world: World) -> None:
    order = await world.order(service_code="hotline_callback", channel="hotline")
    assert order["status"] == "unfulfilled"
    for index in range(3):
        assert await world.offers_of(index) == []


async def test_a_withdrawn_visit_goes_to_the_next_caregiver(world: World) -> None:
    order = await world.order()
    offer = (await world.offers_of(0))[0]
    cg = await world.as_cg(0)
    visit_id = (await world.client.post(f"/v1/offers/{offer['id']}/accept", headers=cg)).json()["visit_id"]
    withdrawn = await world.client.post(f"/v1/visits/{visit_id}/withdraw", json={"reason": "身体不适"}, headers=cg)
    assert withdrawn.status_code == 200 and withdrawn.json()["status"] == "withdrawn"
    assert [o["order_id"] for o in await world.offers_of(1)] == [order["id"]]
    current = (await world.client.get(f"/v1/orders/{order['id']}", headers=world.dispatcher)).json()
    assert current["status"] == "offered" and current["visit_id"] is None


async def test_the_next_caregiver_can_accept_an_order_whose_visit_was_withdrawn(world: World) -> None:
    """The first accept stays on record but no longer holds the order: the unique "one accepted offer per order"
    index used to refuse every later accept (409 offer_not_pending) and leave the order stuck."""
    order = await world.order()
    offer = (await world.offers_of(0))[0]
    cg0 = await world.as_cg(0)
    visit_id = (await world.client.post(f"/v1/offers/{offer['id']}/accept", headers=cg0)).json()["visit_id"]
    await world.client.post(f"/v1/visits/{visit_id}/withdraw", json={"reason": "身体不适"}, headers=cg0)
    second = (await world.offers_of(1))[0]
    accepted = await world.client.post(f"/v1/offers/{second['id']}/accept", headers=await world.as_cg(1))
    assert accepted.status_code == 200, accepted.text
    current = (await world.client.get(f"/v1/orders/{order['id']}", headers=world.dispatcher)).json()
    assert current["status"] == "assigned" and current["visit_id"] == accepted.json()["visit_id"]


async def test_an_order_whose_window_passes_unserved_is_cancelled_by_the_system(world: World) -> None:
    from orders.service import lapse_unserved_orders

    order = await world.order(service_code="hotline_callback", channel="hotline")
    assert isinstance(world.rt.clock, ManualClock)
    world.rt.clock.advance(timedelta(hours=3))
    assert await lapse_unserved_orders(world.rt) == 1
    final = (await world.client.get(f"/v1/orders/{order['id']}", headers=world.dispatcher)).json()
    assert final["status"] == "cancelled" and final["history"][-1]["reason"] == "window passed unserved"


async def test_stale_positions_leave_the_search_and_come_back_with_the_next_report(world: World) -> None:
    from dispatch import live

    assert isinstance(world.rt.clock, ManualClock)
    world.rt.clock.advance(world.rt.settings.dispatch.position_max_age + timedelta(seconds=1))
    assert await live.drop_stale_positions(world.rt) == 3
    order = await world.order()
    assert order["status"] == "unfulfilled"
    await live.set_position(world.rt, world.caregivers[1].id, *world.home, world.rt.clock.now())
    again = await world.order(service_code="companionship")
    assert again["status"] == "unfulfilled"  # companionship is not among their skills
    third = await world.order()
    assert third["status"] == "offered" and len(await world.offers_of(1)) == 1
