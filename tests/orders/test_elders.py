from __future__ import annotations

from datetime import date

import httpx
from sqlalchemy import select, text

from kernel.audit import AuditEntry
from kernel.geo import from_wgs84
from kernel.runtime import Runtime
from orders.models import Elder
from tests.conftest import login_headers
from tests.factories import HANGGIN, create_elder, elder_payload


async def _count_elders(runtime: Runtime) -> int:
    async with runtime.database.unit_of_work() as s:
        return int(await s.scalar(text("select count(*) from elders")) or 0)


async def test_registering_an_elder_stores_personal_data_encrypted_and_answers_it_masked(
        client: httpx.AsyncClient, runtime: Runtime, admin_headers: dict[str, str]) -> None:
    payload = elder_payload()
    response = await client.post("/v1/elders", json=payload, headers=admin_headers)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["id_number"] == payload["id_number"][:6] + "********" + payload["id_number"][-4:]
    assert body["phone"] == payload["phone"][:3] + "****" + payload["phone"][-4:]
    assert "巴音乌素" not in body["address"]
    async with runtime.database.unit_of_work() as s:
        raw = (await s.execute(text("select * from elders where id = :id"), {"id": body["id"]})).mappings().one()
    stored = " ".join(str(v) for v in raw.values())
    for secret in (payload["id_number"], payload["phone"], payload["address"],
                   payload["emergency_contacts"][0]["phone"]):
        assert secret not in stored
    assert raw["id_number_enc"].startswith("k1:aes-gcm:")


async def test_a_wrong_check_digit_is_refused_and_nothing_is_stored(
        client: httpx.AsyncClient, runtime: Runtime, admin_headers: dict[str, str]) -> None:
    payload = elder_payload()
    last = payload["id_number"][-1]
    payload["id_number"] = payload["id_number"][:-1] + ("0" if last != "0" else "1")
    response = await client.post("/v1/elders", json=payload, headers=admin_headers)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_id_number"
    assert payload["id_number"] not in response.text  # never echoed back
    assert await _count_elders(runtime) == 0


async def test_id_number_must_agree_with_birth_date_and_sex(client: httpx.AsyncClient,
                                                            admin_headers: dict[str, str]) -> None:
    payload = elder_payload(birth_date=date(1944, 3, 2), gender="female")
    wrong_birth = {**payload, "birth_date": "1944-03-03"}
    wrong_sex = {**payload, "gender": "male"}
    for body in (wrong_birth, wrong_sex):
        response = await client.post("/v1/elders", json=body, headers=admin_headers)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "id_number_mismatch"


async def test_an_id_of_the_old_county_code_is_accepted(client: httpx.AsyncClient,
                                                        admin_headers: dict[str, str]) -> None:
    # 杭锦旗 elders registered before 2001 hold 152726… numbers for life
    response = await client.post("/v1/elders", json=elder_payload(id_region="152726"), headers=admin_headers)
    assert response.status_code == 201, response.text


async def test_the_same_person_cannot_be_registered_twice(client: httpx.AsyncClient,
                                                          admin_headers: dict[str, str]) -> None:
    payload = elder_payload()
    assert (await client.post("/v1/elders", json=payload, headers=admin_headers)).status_code == 201
    again = await client.post("/v1/elders", json={**payload, "phone": "13800138000"}, headers=admin_headers)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "id_number_taken"


async def test_bad_phone_region_and_coordinates_have_their_own_codes(
        client: httpx.AsyncClient, runtime: Runtime, admin_headers: dict[str, str]) -> None:
    cases = {
        "invalid_phone": {"phone": "010-12345678"},
        "invalid_region_code": {"region_code": "159999"},
        "invalid_coordinates": {"lat": 95.0},
    }
    for code, change in cases.items():
        response = await client.post("/v1/elders", json=elder_payload(**change), headers=admin_headers)
        assert response.status_code == 422, (code, response.text)
        assert response.json()["error"]["code"] == code
    assert await _count_elders(runtime) == 0


async def test_positions_from_chinese_map_sdks_are_stored_as_wgs84(client: httpx.AsyncClient,
                                                                   admin_headers: dict[str, str]) -> None:
    wgs = (39.8584, 108.7363)
    gcj = from_wgs84(*wgs, "gcj02")
    response = await client.post("/v1/elders", json=elder_payload(lat=gcj[0], lon=gcj[1], crs="gcj02"),
                                 headers=admin_headers)
    body = response.json()
    assert (body["lat"], body["lon"]) == (39.86, 108.74)  # what staff see: the ~1 km cell
    revealed = await client.post(f"/v1/elders/{body['id']}/reveal", json={"fields": ["home"], "reason": "地图核对"},
                                 headers=admin_headers)
    assert revealed.status_code == 200, revealed.text
    home = revealed.json()["home"]
    assert abs(home["lat"] - wgs[0]) < 1e-6 and abs(home["lon"] - wgs[1]) < 1e-6


async def test_a_dispatcher_sees_elders_of_its_region_only_and_its_reads_are_audited(
        client: httpx.AsyncClient, runtime: Runtime) -> None:
    ours = await create_elder(runtime)
    theirs = await create_elder(runtime, region_code="150602")  # 东胜区
    headers = await login_headers(runtime, "dispatcher", region_code=HANGGIN)
    assert (await client.get(f"/v1/elders/{ours.id}", headers=headers)).status_code == 200
    assert (await client.get(f"/v1/elders/{theirs.id}", headers=headers)).status_code == 404
    listed = (await client.get("/v1/elders", headers=headers)).json()["items"]
    assert [e["id"] for e in listed] == [str(ours.id)]
    city = await login_headers(runtime, "dispatcher", region_code="150600")  # 鄂尔多斯市 covers both
    assert len((await client.get("/v1/elders", headers=city)).json()["items"]) == 2
    async with runtime.database.unit_of_work() as s:
        actions = (await s.scalars(select(AuditEntry.action).where(AuditEntry.entity_id == str(ours.id)))).all()
    assert "elder.read" in actions


async def test_unmasking_needs_a_reason_and_is_audited(client: httpx.AsyncClient, runtime: Runtime) -> None:
    payload = elder_payload()
    elder = await create_elder(runtime, **{k: v for k, v in payload.items() if k not in ("gender", "birth_date")})
    headers = await login_headers(runtime, "dispatcher", region_code=HANGGIN)
    no_reason = await client.post(f"/v1/elders/{elder.id}/reveal", json={"fields": ["phone"]}, headers=headers)
    assert no_reason.status_code == 422
    revealed = await client.post(f"/v1/elders/{elder.id}/reveal",
                                 json={"fields": ["id_number", "phone"], "reason": "回访电话"}, headers=headers)
    assert revealed.status_code == 200, revealed.text
    assert revealed.json()["id_number"] == payload["id_number"]
    assert revealed.json()["phone"] == "+86" + payload["phone"]
    async with runtime.database.unit_of_work() as s:
        entry = await s.scalar(select(AuditEntry).where(AuditEntry.action == "elder.reveal"))
    assert entry is not None and entry.summary["reason"] == "回访电话"
    assert payload["id_number"] not in str(entry.summary)
    # the contract's body is only the reason: every revealable field comes back
    everything = await client.post(f"/v1/elders/{elder.id}/reveal", json={"reason": "上门核对"}, headers=headers)
    assert everything.status_code == 200, everything.text
    assert everything.json()["id_number"] == payload["id_number"]
    assert everything.json()["phone"] == "+86" + payload["phone"] and everything.json()["address"]
    assert everything.json()["emergency_contacts"] is not None
    auditor = await login_headers(runtime, "auditor", region_code=HANGGIN)
    refused = await client.post(f"/v1/elders/{elder.id}/reveal", json={"fields": ["phone"], "reason": "looking"},
                                headers=auditor)
    assert refused.status_code == 403


async def test_a_family_login_sees_its_own_elder_and_no_other(client: httpx.AsyncClient, runtime: Runtime) -> None:
    mine = await create_elder(runtime)
    other = await create_elder(runtime)
    headers = await login_headers(runtime, "elder", elder_ids=[mine.id])
    assert (await client.get(f"/v1/elders/{mine.id}", headers=headers)).status_code == 200
    assert (await client.get(f"/v1/elders/{other.id}", headers=headers)).status_code == 404
    assert [e["id"] for e in (await client.get("/v1/elders", headers=headers)).json()["items"]] == [str(mine.id)]


async def test_status_change_is_recorded_with_its_time(client: httpx.AsyncClient, runtime: Runtime,
                                                       admin_headers: dict[str, str]) -> None:
    elder = await create_elder(runtime)
    response = await client.patch(f"/v1/elders/{elder.id}", json={"status": "deceased"}, headers=admin_headers)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "deceased"
    async with runtime.database.unit_of_work() as s:
        stored = await s.get(Elder, elder.id)
        assert stored is not None
        await s.refresh(stored)
        assert stored.status_changed_at == runtime.clock.now()


async def test_lists_page_with_a_cursor(client: httpx.AsyncClient, runtime: Runtime,
                                        admin_headers: dict[str, str]) -> None:
    for _ in range(5):
        await create_elder(runtime)
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/elders", params=params, headers=admin_headers)).json()
        seen += [e["id"] for e in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 5
