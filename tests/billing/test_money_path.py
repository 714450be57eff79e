"""The money path end to end, with real billing and nothing standing in: a programme and a contract made over HTTP,
an eligible elder's order through `POST /v1/orders`, and the visit endpoints. Each step asserts the exact fen on the
order, the elder's entitlement, the programme and billing's own rows, and that `vnh billing verify` finds the
ledger balanced after it (issue 14 item 2).

The funded world and its figures are in tests/billing/funded.py."""

from __future__ import annotations

from datetime import timedelta

import pytest

from orders.service import lapse_unserved_orders
from tests.billing.funded import COPAY, PRICE, RESERVED, Funded, accepted_visit, clock, funded, serve
from tests.factories import (
    XINI_TOWN,
    caregiver_headers,
    create_caregiver,
    create_elder,
    create_organization,
    offset,
    on_duty,
)
from tests.world import World


@pytest.fixture
async def money(world: World, admin_headers: dict[str, str]) -> Funded:
    return await funded(world, admin_headers)


# --- intake ------------------------------------------------------------------------------------------------------

async def test_intake_reserves_the_quota_part_of_an_eligible_elders_order(money: Funded) -> None:
    assert await money.figures() == (0, 0, 0, 0)
    order = await money.quota_order()
    reservation = await money.reservation(order["id"])
    assert (reservation.status, reservation.price_fen, reservation.quota_fen, reservation.copay_fen,
            reservation.copay_percent) == ("reserved", PRICE, RESERVED, COPAY, 10)
    assert await money.figures() == (RESERVED, 0, RESERVED, 0)
    second = await money.quota_order()  # the next order draws from what remains
    assert second["id"] != order["id"]
    assert await money.figures() == (2 * RESERVED, 0, 2 * RESERVED, 0)


async def test_a_quota_order_is_offered_only_to_contracted_organisations(money: Funded) -> None:
    world = money.world
    outsider_org = await create_organization(world.rt, name="杭锦旗另一家未签约服务机构")
    outsider = await create_caregiver(world.rt, outsider_org, skills=["personal_care"], certificate_level="junior")
    await on_duty(world.rt, outsider, *offset(*XINI_TOWN, north_m=100))  # nearer than anyone contracted
    outsider_headers = await caregiver_headers(world.rt, outsider)

    async def outsider_offers() -> list[str]:
        answer = await world.client.get("/v1/caregivers/me/offers", headers=outsider_headers)
        assert answer.status_code == 200, answer.text
        return [o["order_id"] for o in answer.json()["items"]]

    order = await money.quota_order()
    assert await outsider_offers() == []
    assert [o["order_id"] for o in await world.offers_of(0)] == [order["id"]]  # the nearest contracted one
    # the positive control: a self-pay order of an elder the programme does not cover goes to the nearer outsider
    # (an organisation of the elder's region serves self-pay orders without a contract)
    other = await create_elder(world.rt, lat=XINI_TOWN[0], lon=XINI_TOWN[1], categories=["gaoling"], preferences={})
    self_pay = await world.order(elder_id=str(other.id))
    assert (self_pay["quota_fen"], self_pay["copay_fen"], self_pay["program_id"]) == (0, PRICE, None)
    assert await outsider_offers() == [self_pay["id"]]
    assert await money.figures() == (RESERVED, 0, RESERVED, 0)  # the self-pay order reserved nothing


# --- releases ----------------------------------------------------------------------------------------------------

async def test_cancelling_an_order_releases_its_reservation(money: Funded) -> None:
    world = money.world
    kept = await money.quota_order()  # another open order keeps its reservation: only the cancelled one is given back
    order = await money.quota_order()
    assert await money.figures() == (2 * RESERVED, 0, 2 * RESERVED, 0)
    cancelled = await world.client.post(f"/v1/orders/{order['id']}/cancel", json={"reason": "家属已自行照料"},
                                        headers=world.family)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled", cancelled.text
    assert (await money.reservation(order["id"])).status == "released"
    assert (await money.reservation(kept["id"])).status == "reserved"
    assert await money.figures() == (RESERVED, 0, RESERVED, 0)
    again = await world.client.post(f"/v1/orders/{order['id']}/cancel", json={"reason": "再次取消"},
                                    headers=world.family)
    assert again.status_code == 409 and again.json()["error"]["code"] == "invalid_state"
    assert await money.figures() == (RESERVED, 0, RESERVED, 0)  # nothing given back twice
    assert await money.captures(order["id"]) == []


async def test_an_assigned_order_cancelled_before_departure_releases_its_reservation(money: Funded) -> None:
    world = money.world
    order = await money.quota_order()
    [offer] = await world.offers_of(0)
    accepted = await world.client.post(f"/v1/offers/{offer['id']}/accept", headers=await world.as_cg(0))
    assert accepted.status_code == 200, accepted.text
    cancelled = await world.client.post(f"/v1/orders/{order['id']}/cancel", json={"reason": "老人住院"},
                                        headers=world.dispatcher)
    assert cancelled.status_code == 200, cancelled.text
    assert (await money.reservation(order["id"])).status == "released"
    assert await money.figures() == (0, 0, 0, 0)


async def test_a_window_that_passes_unserved_releases_the_reservation(money: Funded) -> None:
    world = money.world
    order = await money.quota_order()  # asap: its window is the next two hours
    assert await lapse_unserved_orders(world.rt) == 0  # still open: nothing lapses, the reservation stays
    assert await money.figures() == (RESERVED, 0, RESERVED, 0)
    clock(world).advance(timedelta(hours=2))
    assert await lapse_unserved_orders(world.rt) == 1
    final = (await world.client.get(f"/v1/orders/{order['id']}", headers=world.dispatcher)).json()
    assert final["status"] == "cancelled" and final["history"][-1]["reason"] == "window passed unserved"
    assert (await money.reservation(order["id"])).status == "released"
    assert await money.figures() == (0, 0, 0, 0)
    assert await world.offers_of(0) == []  # its pending offer went with it
    assert await lapse_unserved_orders(world.rt) == 0


async def test_an_order_every_caregiver_declines_keeps_its_reservation_until_the_dispatcher_cancels(
        money: Funded) -> None:
    world = money.world
    order = await money.quota_order()
    for index in range(3):  # nearest first; each decline offers it to the next
        [offer] = await world.offers_of(index)
        assert offer["order_id"] == order["id"]
        declined = await world.client.post(f"/v1/offers/{offer['id']}/decline", json={"reason": "时间冲突"},
                                           headers=await world.as_cg(index))
        assert declined.status_code == 200, declined.text
    current = (await world.client.get(f"/v1/orders/{order['id']}", headers=world.dispatcher)).json()
    assert current["status"] == "unfulfilled"  # in the dispatcher's queue, still holding its quota
    assert (await money.reservation(order["id"])).status == "reserved"
    assert await money.figures() == (RESERVED, 0, RESERVED, 0)
    cancelled = await world.client.post(f"/v1/orders/{order['id']}/cancel", json={"reason": "无人接单，已电话告知"},
                                        headers=world.dispatcher)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled", cancelled.text
    assert (await money.reservation(order["id"])).status == "released"
    assert await money.figures() == (0, 0, 0, 0)


# --- capture and exclusion ---------------------------------------------------------------------------------------

async def test_a_confirmed_visit_captures_its_reservation(money: Funded) -> None:
    world = money.world
    order = await money.quota_order()
    visit_id, cg = await accepted_visit(world, order)
    out = await serve(world, visit_id, cg, minutes=60)
    assert (out["billing"], out["flags"]) == ("pending", [])
    assert await money.figures() == (RESERVED, 0, RESERVED, 0)  # checked out, not yet confirmed: still reserved
    assert await money.captures(order["id"]) == []
    confirmed = await world.client.post(f"/v1/visits/{visit_id}/confirm", json={"rating": 5}, headers=world.family)
    assert confirmed.status_code == 200 and confirmed.json()["billing"] == "captured", confirmed.text
    assert (await money.reservation(order["id"])).status == "captured"
    assert await money.captures(order["id"]) == [(PRICE, RESERVED, COPAY)]
    assert await money.figures() == (0, RESERVED, 0, RESERVED)
    assert await money.exclusions(order["id"]) == []


async def test_a_longer_visit_bills_the_excess_over_the_reservation_as_copay(money: Funded) -> None:
    """65 minutes are three started half hours (6750 fen); the quota part stays at the 4050 reserved."""
    world = money.world
    order = await money.quota_order()
    visit_id, cg = await accepted_visit(world, order)
    assert (await serve(world, visit_id, cg, minutes=65))["billing"] == "pending"
    confirmed = await world.client.post(f"/v1/visits/{visit_id}/confirm", json={}, headers=world.family)
    assert confirmed.json()["billing"] == "captured", confirmed.text
    assert await money.captures(order["id"]) == [(6750, RESERVED, 6750 - RESERVED)]
    assert await money.figures() == (0, RESERVED, 0, RESERVED)


async def test_a_flagged_visit_is_held_then_captured_once_its_flag_is_approved_and_it_is_confirmed(
        money: Funded) -> None:
    world = money.world
    order = await money.quota_order()
    visit_id, cg = await accepted_visit(world, order)
    far = offset(*world.home, north_m=2000)
    out = await serve(world, visit_id, cg, minutes=60, at=far)
    assert (out["billing"], out["open_flags"]) == ("held", ["far_check_in"])
    # held: the reservation goes back while a dispatcher looks (a held visit must not hold quota)
    assert (await money.reservation(order["id"])).status == "excluded"
    assert await money.exclusions(order["id"]) == ["unresolved: far_check_in"]
    assert await money.figures() == (0, 0, 0, 0)
    confirmed = await world.client.post(f"/v1/visits/{visit_id}/confirm", json={"rating": 4}, headers=world.family)
    assert confirmed.status_code == 200 and confirmed.json()["billing"] == "held", confirmed.text  # flag still open
    assert await money.captures(order["id"]) == []
    assert await money.figures() == (0, 0, 0, 0)
    approved = await world.client.post(f"/v1/visits/{visit_id}/flags/far_check_in/resolve",
                                       json={"decision": "approved", "reason": "老人在女儿家，已电话核实"},
                                       headers=world.dispatcher)
    assert approved.status_code == 200, approved.text
    assert (approved.json()["open_flags"], approved.json()["billing"]) == ([], "captured")
    assert await money.captures(order["id"]) == [(PRICE, RESERVED, COPAY)]  # drawn again from what remains
    assert await money.figures() == (0, RESERVED, 0, RESERVED)


async def test_a_flagged_visit_approved_before_confirmation_waits_for_the_confirmation(money: Funded) -> None:
    world = money.world
    order = await money.quota_order()
    visit_id, cg = await accepted_visit(world, order)
    await serve(world, visit_id, cg, minutes=60, at=offset(*world.home, north_m=2000))
    approved = await world.client.post(f"/v1/visits/{visit_id}/flags/far_check_in/resolve",
                                       json={"decision": "approved", "reason": "定位漂移"}, headers=world.dispatcher)
    assert approved.json()["billing"] == "held", approved.text  # every flag resolved, but nobody confirmed yet
    assert await money.captures(order["id"]) == []
    assert await money.figures() == (0, 0, 0, 0)
    confirmed = await world.client.post(f"/v1/visits/{visit_id}/confirm", json={}, headers=world.family)
    assert confirmed.json()["billing"] == "captured", confirmed.text
    assert await money.captures(order["id"]) == [(PRICE, RESERVED, COPAY)]
    assert await money.figures() == (0, RESERVED, 0, RESERVED)


async def test_a_rejected_flag_excludes_the_visit_and_nothing_is_captured(money: Funded) -> None:
    world = money.world
    order = await money.quota_order()
    visit_id, cg = await accepted_visit(world, order)
    out = await serve(world, visit_id, cg, minutes=60, at=offset(*world.home, north_m=2000))
    assert out["billing"] == "held"
    rejected = await world.client.post(f"/v1/visits/{visit_id}/flags/far_check_in/resolve",
                                       json={"decision": "rejected", "reason": "定位显示未到老人家"},
                                       headers=world.dispatcher)
    assert rejected.status_code == 200 and rejected.json()["billing"] == "excluded", rejected.text
    assert await money.exclusions(order["id"]) == ["unresolved: far_check_in",
                                                   "rejected: far_check_in: 定位显示未到老人家"]
    assert await money.figures() == (0, 0, 0, 0)
    # the elder's later confirmation stands, but the visit stays excluded and nothing is drawn
    confirmed = await world.client.post(f"/v1/visits/{visit_id}/confirm", json={"rating": 2}, headers=world.family)
    assert confirmed.status_code == 200 and confirmed.json()["billing"] == "excluded", confirmed.text
    assert await money.captures(order["id"]) == []
    assert await money.figures() == (0, 0, 0, 0)


@pytest.mark.parametrize("outcome", ["elder_absent", "aborted"])
async def test_a_visit_that_did_not_happen_is_excluded_and_its_reservation_released(money: Funded,
                                                                                     outcome: str) -> None:
    world = money.world
    order = await money.quota_order()
    visit_id, cg = await accepted_visit(world, order)
    here = {"lat": world.home[0], "lon": world.home[1]}
    assert (await world.client.post(f"/v1/visits/{visit_id}/check-in", json=here, headers=cg)).status_code == 200
    clock(world).advance(timedelta(minutes=10))
    out = await world.client.post(f"/v1/visits/{visit_id}/check-out", json={**here, "outcome": outcome}, headers=cg)
    assert out.status_code == 200 and out.json()["billing"] == "excluded", out.text
    assert (await money.reservation(order["id"])).status == "excluded"
    assert await money.exclusions(order["id"]) == [f"outcome: {outcome}"]
    assert await money.captures(order["id"]) == []
    assert await money.figures() == (0, 0, 0, 0)


@pytest.mark.parametrize("second", ["approved", "rejected"])
async def test_a_visit_with_two_flags_is_billed_only_when_both_are_resolved(money: Funded, second: str) -> None:
    """Far and short: approving one flag leaves the visit held; the other decides. 29 minutes bill one started
    half hour, 2250 fen, of which 225 co-pay."""
    world = money.world
    order = await money.quota_order()
    visit_id, cg = await accepted_visit(world, order)
    out = await serve(world, visit_id, cg, minutes=29, at=offset(*world.home, north_m=2000))
    assert (out["billing"], out["open_flags"]) == ("held", ["far_check_in", "too_short"])
    assert await money.exclusions(order["id"]) == ["unresolved: far_check_in, too_short"]
    confirmed = await world.client.post(f"/v1/visits/{visit_id}/confirm", json={}, headers=world.family)
    assert confirmed.json()["billing"] == "held", confirmed.text
    first = await world.client.post(f"/v1/visits/{visit_id}/flags/far_check_in/resolve",
                                    json={"decision": "approved", "reason": "老人在邻居家"}, headers=world.dispatcher)
    assert first.status_code == 200, first.text
    assert (first.json()["billing"], first.json()["open_flags"]) == ("held", ["too_short"])
    assert await money.captures(order["id"]) == []
    assert await money.figures() == (0, 0, 0, 0)
    last = await world.client.post(f"/v1/visits/{visit_id}/flags/too_short/resolve",
                                   json={"decision": second, "reason": "已核实服务时长"}, headers=world.dispatcher)
    assert last.status_code == 200 and last.json()["open_flags"] == [], last.text
    if second == "approved":
        assert last.json()["billing"] == "captured"
        assert await money.captures(order["id"]) == [(2250, 2025, 225)]
        assert await money.figures() == (0, 2025, 0, 2025)
    else:
        assert last.json()["billing"] == "excluded"
        assert await money.captures(order["id"]) == []
        assert (await money.exclusions(order["id"]))[-1] == "rejected: too_short: 已核实服务时长"
        assert await money.figures() == (0, 0, 0, 0)
