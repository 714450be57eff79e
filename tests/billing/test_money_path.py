"""The money path end to end, with real billing and nothing standing in: a programme and a contract made over HTTP,
an eligible elder's order through `POST /v1/orders`, and the visit endpoints. Each step asserts the exact fen on the
order, the elder's entitlement, the programme and billing's own rows, and that `vnh billing verify` finds the
ledger balanced after it (issue 14 item 2).

The figures: 生活照料 (`daily_care`) is 4500 fen an hour, planned for 60 minutes; the 低保 rule grants 20 000 fen a
month at 10 % co-pay, so an order reserves 4500 − ceil(4500 × 10 %) = 4050 fen of quota and the elder pays 450."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from billing.models import Capture, Exclusion, Reservation
from billing.verify import verify_ledger
from kernel.clock import ManualClock
from orders.service import lapse_unserved_orders
from tests.conftest import login_headers
from tests.factories import (
    HANGGIN,
    XINI_TOWN,
    caregiver_headers,
    create_caregiver,
    create_elder,
    create_organization,
    offset,
    on_duty,
)
from tests.world import World

BUDGET = 1_000_000
QUOTA = 20_000
PRICE, RESERVED, COPAY = 4500, 4050, 450
MONTH = "2026-03"  # the ManualClock starts on 2026-03-02


@dataclass
class Funded:
    """The world with a funded programme that covers the elder and a contract with the caregivers' organisation."""

    world: World
    program_id: str
    finance: dict[str, str]

    async def figures(self) -> tuple[int, int, int, int]:
        """(entitlement reserved, entitlement used, programme reserved, programme used), read over HTTP; and the
        ledger verified, since every step here must leave it balanced."""
        client, rt = self.world.client, self.world.rt
        seen = await client.get(f"/v1/elders/{self.world.elder.id}/entitlements?month={MONTH}",
                                headers=self.world.dispatcher)
        assert seen.status_code == 200, seen.text
        [entitlement] = [e for e in seen.json()["items"] if e["program_id"] == self.program_id]
        assert entitlement["quota_fen"] == QUOTA
        assert entitlement["remaining_fen"] == QUOTA - entitlement["reserved_fen"] - entitlement["used_fen"]
        program = (await client.get(f"/v1/programs/{self.program_id}", headers=self.finance)).json()
        assert program["remaining_fen"] == BUDGET - program["reserved_fen"] - program["used_fen"]
        async with rt.database.unit_of_work() as s:
            verdict = await verify_ledger(s)
        assert verdict.ok and verdict.problems == [], verdict.summary()
        assert verdict.programs == 1 and verdict.postings >= 1  # it looked at this programme's ledger
        return (entitlement["reserved_fen"], entitlement["used_fen"], program["reserved_fen"], program["used_fen"])

    async def reservation(self, order_id: str) -> Reservation:
        async with self.world.rt.database.unit_of_work() as s:
            row = await s.scalar(select(Reservation).where(Reservation.order_id == order_id))
        assert row is not None
        return row

    async def captures(self, order_id: str) -> list[tuple[int, int, int]]:
        async with self.world.rt.database.unit_of_work() as s:
            rows = (await s.scalars(select(Capture).where(Capture.order_id == order_id))).all()
        return [(c.price_fen, c.quota_fen, c.copay_fen) for c in rows]

    async def exclusions(self, order_id: str) -> list[str]:
        async with self.world.rt.database.unit_of_work() as s:
            rows = (await s.scalars(select(Exclusion).where(Exclusion.order_id == order_id)
                                    .order_by(Exclusion.excluded_at, Exclusion.id))).all()
        return [e.reason for e in rows]

    async def quota_order(self) -> dict[str, Any]:
        order = await self.world.order(headers=self.world.family)
        assert (order["price_fen"], order["quota_fen"], order["copay_fen"]) == (PRICE, RESERVED, COPAY), order
        assert order["program_id"] == self.program_id
        return order


async def funded(world: World, admin_headers: dict[str, str]) -> Funded:
    """A programme of 1 000 000 fen for 低保 elders of 杭锦旗 (the world's elder is one) and a contract for
    `daily_care` with the organisation of the world's three caregivers, both made through the API."""
    client = world.client
    finance = await login_headers(world.rt, "finance", region_code=HANGGIN)
    program = await client.post("/v1/programs", headers=finance, json={
        "name": "杭锦旗2026年居家养老政府购买服务", "region_code": HANGGIN, "period_start": "2026-01-01",
        "period_end": "2026-12-31", "budget_fen": BUDGET, "covered_services": ["daily_care"],
        "rules": [{"category": "dibao", "monthly_quota_fen": QUOTA, "copay_percent": 10}]})
    assert program.status_code == 201, program.text
    contract = await client.post("/v1/contracts", headers=admin_headers, json={
        "organization_id": str(world.caregivers[0].organization_id), "program_id": program.json()["id"],
        "region_codes": [HANGGIN], "service_codes": ["daily_care"], "valid_from": "2026-01-01",
        "valid_to": "2026-12-31"})
    assert contract.status_code == 201, contract.text
    return Funded(world, program.json()["id"], finance)


@pytest.fixture
async def money(world: World, admin_headers: dict[str, str]) -> Funded:
    return await funded(world, admin_headers)


def clock(world: World) -> ManualClock:
    assert isinstance(world.rt.clock, ManualClock)
    return world.rt.clock


async def accepted_visit(world: World, order: dict[str, Any], index: int = 0) -> tuple[str, dict[str, str]]:
    """The order's offer to caregiver `index` accepted and the caregiver on the way: (visit id, its headers)."""
    [offer] = [o for o in await world.offers_of(index) if o["order_id"] == order["id"]]
    cg = await world.as_cg(index)
    accepted = await world.client.post(f"/v1/offers/{offer['id']}/accept", headers=cg)
    assert accepted.status_code == 200, accepted.text
    visit_id = str(accepted.json()["visit_id"])
    assert (await world.client.post(f"/v1/visits/{visit_id}/depart", headers=cg)).status_code == 200
    return visit_id, cg


async def serve(world: World, visit_id: str, cg: dict[str, str], *, minutes: int = 60,
                at: tuple[float, float] | None = None) -> dict[str, Any]:
    """Check in (at the elder's door unless `at`), serve `minutes`, check out: answers the checked-out visit."""
    lat, lon = at or world.home
    checked_in = await world.client.post(f"/v1/visits/{visit_id}/check-in", json={"lat": lat, "lon": lon},
                                         headers=cg)
    assert checked_in.status_code == 200, checked_in.text
    clock(world).advance(timedelta(minutes=minutes))
    out = await world.client.post(f"/v1/visits/{visit_id}/check-out", json={"lat": lat, "lon": lon}, headers=cg)
    assert out.status_code == 200, out.text
    return dict(out.json())


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
