"""Every visit flag with its effect on billing (issue 14 item 3): each is raised by the rule that owns it, puts the
visit in the dispatcher's exception queue with billing held (the reservation given back meanwhile); approved, the
visit is captured (once confirmed; `no_confirmation` approved stands for the confirmation); rejected, it is excluded
and nothing is captured. Real billing throughout (tests/billing/funded.py), the ledger verified after each decision.

The thresholds are the defaults of `VisitSettings`: 500 m for `far_check_in`, half the service's 60 minutes for
`too_short`, 60 km/h for `impossible_travel`, 24 h for `no_confirmation`."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

import pytest

from tests.billing.funded import (
    COPAY,
    PRICE,
    RESERVED,
    Funded,
    accepted_visit,
    clock,
    funded,
    report_positions,
    serve,
)
from tests.factories import XINI_TOWN, create_elder, offset
from tests.world import World
from vnh.workers import raise_missing_confirmations_once

Decision = Literal["approved", "rejected"]
DECISIONS = ["approved", "rejected"]


@pytest.fixture
async def money(world: World, admin_headers: dict[str, str]) -> Funded:
    return await funded(world, admin_headers)


async def queued(world: World, flag: str) -> dict[str, dict[str, Any]]:
    """The exception queue filtered by `flag`, by visit id."""
    answer = await world.client.get("/v1/visits/exceptions", params={"flag": flag}, headers=world.dispatcher)
    assert answer.status_code == 200, answer.text
    return {v["id"]: v for v in answer.json()["items"]}


async def decide(money: Funded, order: dict[str, Any], visit_id: str, flag: str, decision: Decision, *,
                 confirm: bool = True, captured: tuple[int, int, int] = (PRICE, RESERVED, COPAY),
                 confirmer: dict[str, str] | None = None) -> None:
    """From a visit held on `flag` to its billing outcome: queued and held first (the elder's confirmation, when
    `confirm`, by the family or `confirmer`, does not release the hold), then the dispatcher's decision and what
    billing recorded."""
    world = money.world
    item = (await queued(world, flag))[visit_id]
    assert (item["billing"], item["open_flags"]) == ("held", [flag])
    assert (await money.reservation(order["id"])).status == "excluded"  # held visits hold no quota
    assert await money.exclusions(order["id"]) == [f"unresolved: {flag}"]
    assert await money.captures(order["id"]) == []
    await money.assert_ledger_verifies()
    if confirm:
        confirmed = await world.client.post(f"/v1/visits/{visit_id}/confirm", json={"rating": 4},
                                            headers=confirmer or world.family)
        assert confirmed.status_code == 200 and confirmed.json()["billing"] == "held", confirmed.text
        assert await money.captures(order["id"]) == []
    reason = "已电话回访核实" if decision == "approved" else "核实后不予结算"
    resolved = await world.client.post(f"/v1/visits/{visit_id}/flags/{flag}/resolve",
                                       json={"decision": decision, "reason": reason}, headers=world.dispatcher)
    assert resolved.status_code == 200, resolved.text
    assert resolved.json()["open_flags"] == [] and resolved.json()["flags"] == [flag]
    assert visit_id not in await queued(world, flag)
    if decision == "approved":
        assert resolved.json()["billing"] == "captured"
        assert (await money.reservation(order["id"])).status == "captured"
        assert await money.captures(order["id"]) == [captured]
        assert await money.exclusions(order["id"]) == [f"unresolved: {flag}"]
    else:
        assert resolved.json()["billing"] == "excluded"
        assert await money.captures(order["id"]) == []
        assert await money.exclusions(order["id"]) == [f"unresolved: {flag}", f"rejected: {flag}: {reason}"]
    await money.assert_ledger_verifies()
    again = await world.client.post(f"/v1/visits/{visit_id}/flags/{flag}/resolve",
                                    json={"decision": "approved", "reason": "改判"}, headers=world.dispatcher)
    assert again.status_code == 409 and again.json()["error"]["code"] == "invalid_state"


# --- far_check_in --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("decision", DECISIONS)
async def test_far_check_in_holds_billing_until_a_dispatcher_decides(money: Funded, decision: Decision) -> None:
    world = money.world
    order = await money.quota_order()
    visit_id, cg = await accepted_visit(world, order)
    out = await serve(world, visit_id, cg, at=offset(*world.home, north_m=600))  # beyond 500 m
    assert out["check_in_distance_m"] == pytest.approx(600, abs=5) and out["flags"] == ["far_check_in"]
    await decide(money, order, visit_id, "far_check_in", decision)


async def test_a_check_in_within_500_m_is_not_far(money: Funded) -> None:
    world = money.world
    order = await money.quota_order()
    visit_id, cg = await accepted_visit(world, order)
    out = await serve(world, visit_id, cg, at=offset(*world.home, north_m=450))
    assert (out["flags"], out["billing"]) == ([], "pending")
    assert visit_id not in await queued(world, "far_check_in")


# --- too_short -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("decision", DECISIONS)
async def test_too_short_holds_billing_until_a_dispatcher_decides(money: Funded, decision: Decision) -> None:
    world = money.world
    order = await money.quota_order()
    visit_id, cg = await accepted_visit(world, order)
    out = await serve(world, visit_id, cg, minutes=29)  # under half of the planned 60 minutes
    assert (out["duration_min"], out["flags"]) == (29, ["too_short"])
    # approved, the one started half hour is billed: 2250 fen, 225 of it co-pay
    await decide(money, order, visit_id, "too_short", decision, captured=(2250, 2025, 225))


async def test_half_the_planned_time_is_not_too_short(money: Funded) -> None:
    world = money.world
    order = await money.quota_order()
    visit_id, cg = await accepted_visit(world, order)
    out = await serve(world, visit_id, cg, minutes=30)
    assert (out["flags"], out["billing"]) == ([], "pending")


# --- overlap -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("decision", DECISIONS)
async def test_overlapping_visits_of_one_caregiver_are_both_flagged_and_held(money: Funded,
                                                                             decision: Decision) -> None:
    """A caregiver checks in at a second elder's while the first visit is still running (a dispatcher assigned it
    to them, which no busy filter stops): both visits are flagged `overlap` at their check-outs."""
    world, client = money.world, money.world.client
    first_order = await money.quota_order()
    first, cg = await accepted_visit(world, first_order)
    here = {"lat": world.home[0], "lon": world.home[1]}
    assert (await client.post(f"/v1/visits/{first}/check-in", json=here, headers=cg)).status_code == 200

    neighbour_home = offset(*XINI_TOWN, east_m=200)
    neighbour = await create_elder(world.rt, lat=neighbour_home[0], lon=neighbour_home[1], preferences={})
    order = await world.order(elder_id=str(neighbour.id))
    assert order["quota_fen"] == RESERVED
    assigned = await client.post(f"/v1/orders/{order['id']}/assign", headers=world.dispatcher,
                                 json={"caregiver_id": str(world.caregivers[0].id)})
    assert assigned.status_code == 201, assigned.text
    accepted = await client.post(f"/v1/offers/{assigned.json()['id']}/accept", headers=cg)
    assert accepted.status_code == 200, accepted.text
    second = accepted.json()["visit_id"]
    clock(world).advance(timedelta(minutes=5))
    there = {"lat": neighbour_home[0], "lon": neighbour_home[1]}
    checked_in = await client.post(f"/v1/visits/{second}/check-in", json=there, headers=cg)
    assert checked_in.status_code == 200 and checked_in.json()["flags"] == [], checked_in.text
    clock(world).advance(timedelta(minutes=60))
    out = await client.post(f"/v1/visits/{second}/check-out", json=there, headers=cg)
    assert out.status_code == 200, out.text
    assert (out.json()["flags"], out.json()["billing"]) == (["overlap"], "held")
    clock(world).advance(timedelta(minutes=5))
    first_out = await client.post(f"/v1/visits/{first}/check-out", json=here, headers=cg)
    assert first_out.status_code == 200, first_out.text
    assert (first_out.json()["flags"], first_out.json()["billing"]) == (["overlap"], "held")
    assert set(await queued(world, "overlap")) == {first, second}
    # the neighbour's visit lasted 60 minutes: 4500 fen, of which 4050 quota, as reserved; the neighbour has no
    # family login here, so the dispatcher records a hotline call-back's confirmation
    await decide(money, order, second, "overlap", decision, confirmer=world.dispatcher)


async def test_back_to_back_visits_do_not_overlap(money: Funded) -> None:
    world = money.world
    first_order = await money.quota_order()
    first, cg = await accepted_visit(world, first_order)
    assert (await serve(world, first, cg))["flags"] == []
    await report_positions(world)
    order = await money.quota_order()
    offer = next((o for o in await world.offers_of(0) if o["order_id"] == order["id"]), None)
    assert offer is not None  # the same caregiver, free again
    second, cg = await accepted_visit(world, order)
    assert (await serve(world, second, cg))["flags"] == []


# --- impossible_travel -----------------------------------------------------------------------------------------------

async def _travelled_visit(money: Funded, *, km: float, minutes: int) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """A first visit checked out `km` north of the elder's home (a forged position, say), then a second order of
    the same elder whose visit checks in at home `minutes` later: (second order, its visit id, its check-out)."""
    world, client = money.world, money.world.client
    first_order = await money.quota_order()
    first, cg = await accepted_visit(world, first_order)
    here = {"lat": world.home[0], "lon": world.home[1]}
    assert (await client.post(f"/v1/visits/{first}/check-in", json=here, headers=cg)).status_code == 200
    clock(world).advance(timedelta(minutes=60))
    away = offset(*world.home, north_m=km * 1000)
    out = await client.post(f"/v1/visits/{first}/check-out", json={"lat": away[0], "lon": away[1]}, headers=cg)
    assert out.status_code == 200 and out.json()["flags"] == [], out.text
    await report_positions(world)
    order = await money.quota_order()
    second, cg = await accepted_visit(world, order)
    clock(world).advance(timedelta(minutes=minutes))
    return order, second, await serve(world, second, cg)


@pytest.mark.parametrize("decision", DECISIONS)
async def test_impossible_travel_holds_billing_until_a_dispatcher_decides(money: Funded, decision: Decision) -> None:
    order, visit_id, out = await _travelled_visit(money, km=60, minutes=10)  # 360 km/h
    assert (out["flags"], out["billing"]) == (["impossible_travel"], "held")
    await decide(money, order, visit_id, "impossible_travel", decision)


async def test_travel_at_a_possible_speed_is_not_flagged(money: Funded) -> None:
    _order, _visit_id, out = await _travelled_visit(money, km=60, minutes=70)  # about 51 km/h
    assert (out["flags"], out["billing"]) == ([], "pending")


# --- no_confirmation -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("decision", DECISIONS)
async def test_no_confirmation_is_raised_after_confirm_within_and_holds_billing(money: Funded,
                                                                               decision: Decision) -> None:
    world = money.world
    order = await money.quota_order()
    visit_id, cg = await accepted_visit(world, order)
    assert (await serve(world, visit_id, cg))["billing"] == "pending"
    within = world.rt.settings.visits.confirm_within
    assert within == timedelta(hours=24)
    clock(world).advance(within - timedelta(seconds=1))
    await money.log_in_again()  # a day later
    assert await raise_missing_confirmations_once(world.rt) == 0  # not yet due
    assert visit_id not in await queued(world, "no_confirmation")
    assert (await money.reservation(order["id"])).status == "reserved"
    clock(world).advance(timedelta(seconds=1))
    assert await raise_missing_confirmations_once(world.rt) == 1
    assert await raise_missing_confirmations_once(world.rt) == 0  # raised once
    # approved, the dispatcher's decision stands for the confirmation nobody gave: captured without one
    await decide(money, order, visit_id, "no_confirmation", decision, confirm=False)


async def test_a_confirmed_visit_is_never_flagged_for_missing_confirmation(money: Funded) -> None:
    world = money.world
    order = await money.quota_order()
    visit_id, cg = await accepted_visit(world, order)
    await serve(world, visit_id, cg)
    confirmed = await world.client.post(f"/v1/visits/{visit_id}/confirm", json={}, headers=world.family)
    assert confirmed.json()["billing"] == "captured", confirmed.text
    clock(world).advance(timedelta(hours=48))
    assert await raise_missing_confirmations_once(world.rt) == 0
    await money.log_in_again()
    assert await money.captures(order["id"]) == [(PRICE, RESERVED, COPAY)]
