"""No billing for a blacklisted caregiver or organisation: `billing.capture` refuses (409 with a code), and a visit
confirmed after its caregiver was listed ends excluded with the reason on the statement, its quota given back."""

from __future__ import annotations

import csv
import io
from dataclasses import replace

import httpx
import pytest
from sqlalchemy import select

from billing import service as billing
from billing.models import Capture, Entitlement
from dispatch.models import Organization
from kernel.clock import ManualClock
from kernel.runtime import Runtime
from supervision.service import Blacklisted
from tests.billing.support import Order, create_contract, create_program, visit_of
from tests.conftest import login_headers
from tests.factories import HANGGIN, create_caregiver, create_elder, create_organization
from tests.world import World


async def test_a_visit_confirmed_after_its_caregiver_was_blacklisted_is_not_billed(
        world: World, admin_headers: dict[str, str]) -> None:
    rt, client = world.rt, world.client
    program = await create_program(rt)
    async with rt.database.unit_of_work() as s:
        org = await s.get(Organization, world.caregivers[0].organization_id)
    assert org is not None
    await create_contract(rt, org, program)
    order = await world.order(headers=world.family)
    assert order["quota_fen"] > 0, order
    visit_id, cg = await world.checked_in()
    here = world.at_home
    assert isinstance(rt.clock, ManualClock)
    rt.clock.advance(65 * 60)
    out = await client.post(f"/v1/visits/{visit_id}/check-out", json=here, headers=cg)
    assert out.status_code == 200 and out.json()["billing"] == "pending", out.text

    listed = await client.post("/v1/blacklist", headers=admin_headers, json={
        "subject_kind": "caregiver", "subject_id": str(world.caregivers[0].id), "reason": "虚报服务记录"})
    assert listed.status_code == 201
    confirmed = await client.post(f"/v1/visits/{visit_id}/confirm", json={"rating": 5}, headers=world.family)
    assert confirmed.status_code == 200, confirmed.text  # the elder's confirmation stands
    assert confirmed.json()["billing"] == "excluded"

    async with rt.database.unit_of_work() as s:
        assert await s.scalar(select(Capture.id).where(Capture.order_id == order["id"])) is None
        entitlement = await s.scalar(select(Entitlement).where(Entitlement.elder_id == world.elder.id))
    assert entitlement is not None and (entitlement.reserved_fen, entitlement.used_fen) == (0, 0)
    finance = await login_headers(rt, "finance", region_code=HANGGIN)
    drafted = await client.post("/v1/settlements", headers=finance, json={
        "program_id": str(program.id), "organization_id": str(org.id), "month": "2026-03"})
    assert drafted.status_code == 201, drafted.text
    totals = drafted.json()["totals"]
    assert (totals["line_count"], totals["exclusion_count"], totals["quota_fen"]) == (0, 1, 0)
    exported = await client.get(f"/v1/settlements/{drafted.json()['id']}/export?format=csv", headers=finance)
    rows = list(csv.reader(io.StringIO(exported.content.decode("utf-8-sig"))))
    assert [r[16] for r in rows if r[0].isdigit()] == ["服务人员列入失信黑名单"]


@pytest.mark.parametrize("kind", ["caregiver", "organization"])
async def test_capture_refuses_a_blacklisted_caregiver_or_organisation(runtime: Runtime, client: httpx.AsyncClient,
                                                                       kind: str, admin_headers: dict[str, str]
                                                                       ) -> None:
    org = await create_organization(runtime)
    caregiver = await create_caregiver(runtime, org)
    elder = await create_elder(runtime)
    order = Order(elder.id, price_fen=4500)
    visit = replace(visit_of(order, org, checked_out_at=runtime.clock.now()), caregiver_id=caregiver.id)
    async with runtime.database.unit_of_work() as s:
        await billing.quote_and_reserve(s, runtime.clock, order)
    listed = await client.post("/v1/blacklist", headers=admin_headers, json={
        "subject_kind": kind, "subject_id": str(caregiver.id if kind == "caregiver" else org.id),
        "reason": "合同违约"})
    assert listed.status_code == 201, listed.text
    async with runtime.database.unit_of_work() as s:
        with pytest.raises(Blacklisted) as refused:
            await billing.capture(s, runtime.clock, visit)
        assert await s.scalar(select(Capture.id).where(Capture.order_id == order.id)) is None
    assert refused.value.status == 409 and refused.value.code == f"{kind}_blacklisted"
