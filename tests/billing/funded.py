"""A funded world for tests of the money path with real billing: the `world` of tests/world.py plus a programme
for 低保 elders of 杭锦旗 and a contract with the caregivers' organisation, both made through the API; readers of
the figures that matter (entitlement, programme, billing's rows) that also verify the ledger; and the visit steps.

The figures: 生活照料 (`daily_care`) is 4500 fen an hour, planned for 60 minutes; the 低保 rule grants 20 000 fen a
month at 10 % co-pay, so an order reserves 4500 − ceil(4500 × 10 %) = 4050 fen of quota and the elder pays 450."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from billing.models import Capture, Exclusion, Reservation
from billing.verify import verify_ledger
from kernel.clock import ManualClock
from tests.conftest import login_headers
from tests.factories import HANGGIN, XINI_TOWN, offset
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

    async def figures(self, elder_id: uuid.UUID | None = None) -> tuple[int, int, int, int]:
        """(entitlement reserved, entitlement used, programme reserved, programme used) of the world's elder (or
        `elder_id`), read over HTTP; and the ledger verified, since every step must leave it balanced."""
        client = self.world.client
        seen = await client.get(f"/v1/elders/{elder_id or self.world.elder.id}/entitlements?month={MONTH}",
                                headers=self.world.dispatcher)
        assert seen.status_code == 200, seen.text
        [entitlement] = [e for e in seen.json()["items"] if e["program_id"] == self.program_id]
        assert entitlement["quota_fen"] == QUOTA
        assert entitlement["remaining_fen"] == QUOTA - entitlement["reserved_fen"] - entitlement["used_fen"]
        program = (await client.get(f"/v1/programs/{self.program_id}", headers=self.finance)).json()
        assert program["remaining_fen"] == BUDGET - program["reserved_fen"] - program["used_fen"]
        await self.assert_ledger_verifies()
        return (entitlement["reserved_fen"], entitlement["used_fen"], program["reserved_fen"], program["used_fen"])

    async def log_in_again(self) -> None:
        """Fresh tokens for the dispatcher, the family and finance, after the clock moved past their expiry."""
        rt = self.world.rt
        self.world.dispatcher = await login_headers(rt, "dispatcher", region_code=HANGGIN)
        self.world.family = await login_headers(rt, "elder", elder_ids=[self.world.elder.id])
        self.finance = await login_headers(rt, "finance", region_code=HANGGIN)

    async def assert_ledger_verifies(self) -> None:
        """`vnh billing verify`'s check finds nothing wrong (and did look at this programme's postings)."""
        async with self.world.rt.database.unit_of_work() as s:
            verdict = await verify_ledger(s)
        assert verdict.ok and verdict.problems == [], verdict.summary()
        assert verdict.programs == 1 and verdict.postings >= 1

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


async def report_positions(world: World) -> None:
    """The world's caregivers report their positions again (300 m, 1 km, 3 km north of the elder, as the `world`
    fixture placed them): after the clock moved past `dispatch.position_max_age` dispatch no longer trusts the old
    ones."""
    from dispatch import live

    for caregiver, metres in zip(world.caregivers, (300, 1000, 3000), strict=True):
        await live.set_position(world.rt, caregiver.id, *offset(*XINI_TOWN, north_m=metres), world.rt.clock.now())


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
