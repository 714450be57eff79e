"""Auditors' side: blacklist effects on matching, reproducible inspections, anomalies, visit queries."""

from __future__ import annotations

from datetime import timedelta

import httpx

from kernel.clock import ManualClock
from kernel.runtime import Runtime
from supervision.inspections import draw
from tests.conftest import login_headers
from tests.world import World


async def test_a_blacklisted_caregiver_gets_no_new_offers_until_lifted(world: World,
                                                                       admin_headers: dict[str, str]) -> None:
    nearest = world.caregivers[0]
    listed = await world.client.post("/v1/blacklist", headers=admin_headers, json={
        "subject_kind": "caregiver", "subject_id": str(nearest.id), "reason": "虚报服务记录"})
    assert listed.status_code == 201, listed.text
    order = await world.order()
    assert await world.offers_of(0) == []
    assert [o["order_id"] for o in await world.offers_of(1)] == [order["id"]]
    lifted = await world.client.post(f"/v1/blacklist/{listed.json()['id']}/lift", headers=admin_headers,
                                     json={"reason": "复核后撤销"})
    assert lifted.status_code == 200
    await world.order(service_code="daily_care")
    assert len(await world.offers_of(0)) == 1


async def test_a_blacklisted_organisation_blocks_all_its_caregivers(world: World,
                                                                    admin_headers: dict[str, str]) -> None:
    await world.client.post("/v1/blacklist", headers=admin_headers, json={
        "subject_kind": "organization", "subject_id": str(world.caregivers[0].organization_id),
        "reason": "合同违约"})
    order = await world.order()
    assert order["status"] == "unfulfilled"


def test_the_same_seed_draws_the_same_sample() -> None:
    import uuid

    population = [uuid.uuid4() for _ in range(200)]
    assert draw(population, 20, 7) == draw(list(reversed(population)), 20, 7)
    assert draw(population, 20, 7) != draw(population, 20, 8)
    assert len(draw(population, 500, 1)) == 200


async def _complete_visit(world: World, far: bool = False) -> str:
    from dispatch import live
    from tests.factories import offset

    for i, cg in enumerate(world.caregivers):  # phones report positions all day; the last hours' are stale
        await live.set_position(world.rt, cg.id, *offset(*world.home, north_m=300 * (i + 1)),
                                world.rt.clock.now())
    order = await world.order(service_code="daily_care")
    for index in range(len(world.caregivers)):
        offer = next((o for o in await world.offers_of(index) if o["order_id"] == order["id"]), None)
        if offer is not None:
            break
    assert offer is not None
    cg = await world.as_cg(index)
    visit_id = (await world.client.post(f"/v1/offers/{offer['id']}/accept", headers=cg)).json()["visit_id"]
    where = offset(*world.home, north_m=3000 if far else 0)
    await world.client.post(f"/v1/visits/{visit_id}/check-in", json={"lat": where[0], "lon": where[1]}, headers=cg)
    assert isinstance(world.rt.clock, ManualClock)
    world.rt.clock.advance(timedelta(minutes=125))
    await world.client.post(f"/v1/visits/{visit_id}/check-out", json={"lat": where[0], "lon": where[1]}, headers=cg)
    return str(visit_id)


async def test_inspections_are_reproducible_and_a_call_back_confirms(world: World) -> None:
    visit_ids = [await _complete_visit(world) for _ in range(3)]
    auditor = await login_headers(world.rt, "auditor", region_code="150625")
    month = world.rt.clock.now().astimezone(world.rt.settings.tz).strftime("%Y-%m")
    first = await world.client.post("/v1/audit/inspections", headers=auditor,
                                    json={"region_code": "150625", "month": month, "sample_size": 2, "seed": 99})
    assert first.status_code == 201, first.text
    again = await world.client.post("/v1/audit/inspections", headers=auditor,
                                    json={"region_code": "150625", "month": month, "sample_size": 2, "seed": 99})
    sample = [i["visit_id"] for i in first.json()["items"]]
    assert sample == [i["visit_id"] for i in again.json()["items"]]
    assert first.json()["population"] == 3 and set(sample) <= set(visit_ids)
    result = await world.client.post(f"/v1/audit/inspections/{first.json()['id']}/results", headers=auditor,
                                     json={"visit_id": sample[0], "reached": True, "confirmed": True})
    assert result.status_code == 200, result.text
    visit = (await world.client.get(f"/v1/visits/{sample[0]}", headers=world.dispatcher)).json()
    assert visit["confirmed_at"] is not None
    twice = await world.client.post(f"/v1/audit/inspections/{first.json()['id']}/results", headers=auditor,
                                    json={"visit_id": sample[0], "reached": True, "confirmed": True})
    assert twice.status_code == 409
    outside = await login_headers(world.rt, "auditor", region_code="150602")
    assert (await world.client.get(f"/v1/audit/inspections/{first.json()['id']}", headers=outside)).status_code == 404


async def test_anomalies_and_visit_queries_show_flagged_visits(world: World) -> None:
    far_visit = await _complete_visit(world, far=True)
    auditor = await login_headers(world.rt, "auditor", region_code="150625")
    start = (world.rt.clock.now() - timedelta(days=1)).isoformat()
    found = await world.client.get("/v1/audit/anomalies", headers=auditor, params={"from": start})
    assert found.status_code == 200, found.text
    assert {(a["kind"], a["visit_id"]) for a in found.json()["items"]} >= {("far_check_in", far_visit)}
    flagged = await world.client.get("/v1/audit/visits", headers=auditor, params={"flag": "far_check_in"})
    assert [v["id"] for v in flagged.json()["items"]] == [far_visit]
    refused = await world.client.post("/v1/blacklist", headers=auditor, json={
        "subject_kind": "caregiver", "subject_id": str(world.caregivers[0].id), "reason": "审计员不可操作"})
    assert refused.status_code == 403


async def test_auditors_of_another_region_see_nothing(world: World, runtime: Runtime,
                                                      client: httpx.AsyncClient) -> None:
    await _complete_visit(world)
    elsewhere = await login_headers(runtime, "auditor", region_code="150602")
    assert (await client.get("/v1/audit/visits", headers=elsewhere)).json()["items"] == []


async def test_one_installation_confirming_many_elders_visits_is_an_anomaly(world: World) -> None:
    from tests.factories import XINI_TOWN, create_elder

    first = world.elder
    others = [await create_elder(world.rt, lat=XINI_TOWN[0], lon=XINI_TOWN[1], preferences={}) for _ in range(2)]
    visits = {}
    for elder in (first, *others):
        world.elder = elder
        visits[elder.id] = await _complete_visit(world)
    world.elder = first
    # one phone confirms the visits of three elders (a caregiver's phone, say); the real family app only its own
    phone = await login_headers(world.rt, "elder", elder_ids=[e.id for e in (first, *others)])
    for elder in (first, *others):
        confirmed = await world.client.post(f"/v1/visits/{visits[elder.id]}/confirm", json={"rating": 5},
                                            headers={**phone, "X-Client-Device": "install-7f3a"})
        assert confirmed.status_code == 200, confirmed.text
    own = await _complete_visit(world)
    family = await login_headers(world.rt, "elder", elder_ids=[first.id])  # tokens expire as the clock runs
    bad = await world.client.post(f"/v1/visits/{own}/confirm", json={"rating": 4},
                                  headers={**family, "X-Client-Device": "no spaces allowed"})
    assert bad.status_code == 422
    assert (await world.client.post(f"/v1/visits/{own}/confirm", json={"rating": 4},
                                    headers={**family, "X-Client-Device": "install-0001"})).status_code == 200

    auditor = await login_headers(world.rt, "auditor", region_code="150625")
    start = (world.rt.clock.now() - timedelta(days=1)).isoformat()
    found = (await world.client.get("/v1/audit/anomalies", headers=auditor, params={"from": start})).json()["items"]
    shared = [a for a in found if a["kind"] == "shared_confirmation_source"]
    assert sorted(a["visit_id"] for a in shared) == sorted(visits.values())
    assert {a["details"]["source"] for a in shared} == {"app:install-7f3a"}
    assert shared[0]["details"]["elders"] == 3 and shared[0]["details"]["visits"] == 3
    elsewhere = await login_headers(world.rt, "auditor", region_code="150602")
    assert (await world.client.get("/v1/audit/anomalies", headers=elsewhere,
                                   params={"from": start})).json()["items"] == []


async def test_audit_rows_carry_their_region_and_auditors_read_only_their_own(world: World,
                                                                             admin_headers: dict[str, str]) -> None:
    from tests.factories import create_elder

    order = await world.order()  # the order and its audit row are written in one transaction
    elsewhere_elder = await create_elder(world.rt, region_code="150602")
    auditor = await login_headers(world.rt, "auditor", region_code="150625")
    rows = (await world.client.get("/v1/audit/log", headers=auditor, params={"limit": 500})).json()["items"]
    assert rows and {r["region_code"] for r in rows} == {"150625"}
    assert any(r["entity"] == "order" and r["entity_id"] == order["id"] for r in rows)
    assert all(r["entity_id"] != str(elsewhere_elder.id) for r in rows)
    prefecture = await login_headers(world.rt, "auditor", region_code="150600")
    wider = (await world.client.get("/v1/audit/log", headers=prefecture, params={"entity": "elder"})).json()["items"]
    assert {r["region_code"] for r in wider} == {"150625", "150602"}
    narrowed = (await world.client.get("/v1/audit/log", headers=prefecture,
                                       params={"entity": "elder", "region_code": "150602"})).json()["items"]
    assert [r["entity_id"] for r in narrowed if r["action"] == "elder.create"] == [str(elsewhere_elder.id)]
    everything = (await world.client.get("/v1/audit/log", headers=admin_headers, params={"limit": 500})).json()
    assert any(r["region_code"] is None for r in everything["items"])  # e.g. user accounts made by the tests


async def test_elder_list_rows_carry_the_listed_regions_so_their_auditors_see_them(
        world: World, admin_headers: dict[str, str]) -> None:
    from tests.factories import create_elder

    await create_elder(world.rt, region_code="150602")
    dispatcher = await login_headers(world.rt, "dispatcher", region_code="150625")
    listed = await world.client.get("/v1/elders", headers=dispatcher)  # no region filter: the caller's whole scope
    assert listed.status_code == 200 and listed.json()["items"]
    prefecture = await login_headers(world.rt, "dispatcher", region_code="150600")
    wide = (await world.client.get("/v1/elders", headers=prefecture, params={"limit": 500})).json()["items"]
    assert {e["region_code"] for e in wide} >= {"150625", "150602"}

    async def lists_seen_by(region: str) -> list[dict[str, object]]:
        auditor = await login_headers(world.rt, "auditor", region_code=region)
        rows = (await world.client.get("/v1/audit/log", headers=auditor,
                                       params={"entity": "elder", "limit": 500})).json()["items"]
        return [r for r in rows if r["action"] == "elder.list"]

    here = await lists_seen_by("150625")
    assert len(here) == 2 and {r["region_code"] for r in here} == {"150625"}  # both callers listed 150625's elders
    there = await lists_seen_by("150602")
    assert len(there) == 1 and there[0]["summary"]["count"] == 1  # only the prefecture's list reached 150602
    assert there[0]["source_ip"] == "127.0.0.1"
