"""Billing over HTTP: who may do what, entitlements as elders and dispatchers see them, a statement end to end."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import httpx
from openpyxl import load_workbook

from billing import service as billing
from kernel.clock import ManualClock
from kernel.runtime import Runtime
from tests.billing.support import Order, create_program, program_payload, visit_of
from tests.conftest import login_headers
from tests.factories import HANGGIN, create_elder, create_organization


async def test_finance_creates_programmes_in_its_region_only(client: httpx.AsyncClient, runtime: Runtime) -> None:
    finance = await login_headers(runtime, "finance", region_code=HANGGIN)
    created = await client.post("/v1/programs", json=program_payload(), headers=finance)
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["budget_fen"], body["remaining_fen"], body["rules"][0]["copay_percent"]) == (10_000_000,
                                                                                            10_000_000, 10)
    elsewhere = await client.post("/v1/programs", json=program_payload(region_code="150602"), headers=finance)
    assert elsewhere.status_code == 403 and elsewhere.json()["error"]["code"] == "out_of_scope"
    unknown = await client.post("/v1/programs", json=program_payload(covered_services=["teleportation"]),
                                headers=finance)
    assert unknown.status_code == 422 and unknown.json()["error"]["code"] == "unknown_service"
    dispatcher = await login_headers(runtime, "dispatcher", region_code=HANGGIN)
    assert (await client.post("/v1/programs", json=program_payload(), headers=dispatcher)).status_code == 403
    listed = await client.get("/v1/programs", headers=finance)
    assert [p["id"] for p in listed.json()["items"]] == [body["id"]]


async def test_contracts_name_known_programmes_and_cover_their_services(client: httpx.AsyncClient, runtime: Runtime,
                                                                       admin_headers: dict[str, str]) -> None:
    program = await create_program(runtime)
    org = await create_organization(runtime)
    body = {"organization_id": str(org.id), "program_id": str(program.id), "region_codes": [HANGGIN],
            "service_codes": ["daily_care"], "valid_from": "2026-01-01", "valid_to": "2026-12-31"}
    created = await client.post("/v1/contracts", json=body, headers=admin_headers)
    assert created.status_code == 201, created.text
    bad_program = await client.post("/v1/contracts", json={**body, "program_id": "p-1"}, headers=admin_headers)
    assert bad_program.json()["error"]["code"] == "unknown_program"
    uncovered = await client.post("/v1/contracts", json={**body, "service_codes": ["bathing"]}, headers=admin_headers)
    assert uncovered.json()["error"]["code"] == "service_not_covered"
    org_admin = await login_headers(runtime, "org_admin", organization_id=org.id)
    mine = await client.get("/v1/contracts", headers=org_admin)
    assert [c["id"] for c in mine.json()["items"]] == [created.json()["id"]]


async def test_entitlements_are_there_without_applying_for_the_elder_and_the_dispatcher(
        client: httpx.AsyncClient, runtime: Runtime) -> None:
    elder = await create_elder(runtime)
    stranger = await create_elder(runtime)
    program = await create_program(runtime)
    await create_program(runtime, name="高龄津贴项目", period_end="2026-06-30",
                         rules=[{"min_age": 90, "monthly_quota_fen": 30_000, "copay_percent": 0}])
    family = await login_headers(runtime, "elder", elder_ids=[elder.id])
    answer = await client.get(f"/v1/elders/{elder.id}/entitlements?month=2026-03", headers=family)
    assert answer.status_code == 200, answer.text
    assert answer.json()["items"] == [{
        "program_id": str(program.id), "program_name": program.name, "month": "2026-03", "quota_fen": 20_000,
        "reserved_fen": 0, "used_fen": 0, "remaining_fen": 20_000, "copay_percent": 10}]
    assert (await client.get(f"/v1/elders/{stranger.id}/entitlements", headers=family)).status_code == 404
    async with runtime.database.unit_of_work() as s:
        await billing.quote_and_reserve(s, runtime.clock, Order(elder.id, price_fen=4500))
    dispatcher = await login_headers(runtime, "dispatcher", region_code=HANGGIN)
    seen = await client.get(f"/v1/elders/{elder.id}/entitlements", headers=dispatcher)  # current month: March
    assert [(e["reserved_fen"], e["remaining_fen"]) for e in seen.json()["items"]] == [(4050, 15_950)]
    elsewhere = await login_headers(runtime, "dispatcher", region_code="150602")
    assert (await client.get(f"/v1/elders/{elder.id}/entitlements", headers=elsewhere)).status_code == 404
    bad = await client.get(f"/v1/elders/{elder.id}/entitlements?month=2026-13", headers=dispatcher)
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_month"


async def test_a_statement_from_draft_to_export_to_approval(client: httpx.AsyncClient, runtime: Runtime) -> None:
    program = await create_program(runtime)
    org = await create_organization(runtime)
    elder = await create_elder(runtime)
    clock = runtime.clock
    assert isinstance(clock, ManualClock)
    for day in (3, 4, 5):
        clock.set(datetime(2026, 3, day, 2, tzinfo=UTC))
        order = Order(elder.id, price_fen=4500)
        async with runtime.database.unit_of_work() as s:
            await billing.quote_and_reserve(s, clock, order)
            await billing.capture(s, clock, visit_of(order, org, checked_out_at=clock.now()))
    finance = await login_headers(runtime, "finance", region_code=HANGGIN)
    body = {"program_id": str(program.id), "organization_id": str(org.id), "month": "2026-03"}
    drafted = await client.post("/v1/settlements", json=body, headers=finance)
    assert drafted.status_code == 201, drafted.text
    statement = drafted.json()
    assert statement["totals"] == {"line_count": 3, "adjustment_count": 0, "exclusion_count": 0,
                                   "price_fen": 13_500, "quota_fen": 12_150, "copay_fen": 1_350}
    refreshed = await client.post("/v1/settlements", json=body, headers=finance)
    assert refreshed.status_code == 200 and refreshed.json()["id"] == statement["id"]
    page = await client.get(f"/v1/settlements/{statement['id']}?limit=2", headers=finance)
    assert len(page.json()["lines"]) == 2 and page.json()["next_cursor"]
    rest = await client.get(f"/v1/settlements/{statement['id']}?limit=2&cursor={page.json()['next_cursor']}",
                            headers=finance)
    assert len(rest.json()["lines"]) == 1 and rest.json()["next_cursor"] is None

    exported = await client.get(f"/v1/settlements/{statement['id']}/export?format=csv", headers=finance)
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    assert "attachment" in exported.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(exported.content.decode("utf-8-sig"))))
    assert rows[0][13:16] == ["服务金额（元）", "政府补贴金额（元）", "个人自付金额（元）"]
    assert rows[-2][13:16] == ["135.00", "121.50", "13.50"]
    workbook = await client.get(f"/v1/settlements/{statement['id']}/export?format=xlsx", headers=finance)
    assert workbook.status_code == 200
    sheet = load_workbook(io.BytesIO(workbook.content), read_only=True)["结算明细"]
    assert sum(1 for _ in sheet.iter_rows(values_only=True)) == 5

    org_admin = await login_headers(runtime, "org_admin", organization_id=org.id)
    assert (await client.get(f"/v1/settlements/{statement['id']}", headers=org_admin)).status_code == 200
    other_admin = await login_headers(runtime, "org_admin",
                                      organization_id=(await create_organization(runtime, name="别家")).id)
    assert (await client.get(f"/v1/settlements/{statement['id']}", headers=other_admin)).status_code == 404
    assert (await client.post(f"/v1/settlements/{statement['id']}/approve", headers=org_admin)).status_code == 403

    approved = await client.post(f"/v1/settlements/{statement['id']}/approve", headers=finance)
    assert approved.status_code == 200 and approved.json()["status"] == "approved"
    # the approved statement comes back with its lines, as GET shows it
    shown = (await client.get(f"/v1/settlements/{statement['id']}", headers=finance)).json()
    assert len(approved.json()["lines"]) == 3 and approved.json()["lines"] == shown["lines"]
    again = await client.post("/v1/settlements", json=body, headers=finance)
    assert again.status_code == 409 and again.json()["error"]["code"] == "invalid_state"
    listed = await client.get("/v1/settlements?month=2026-03&status=approved", headers=finance)
    assert [s["id"] for s in listed.json()["items"]] == [statement["id"]]
