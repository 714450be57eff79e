"""The elder's exact home is personal data (issue 13 item 12): sealed at rest, a ~1 km cell for staff and maps, the
exact point only for the caregiver of an active visit and for a reveal with a reason."""

from __future__ import annotations

import os
import secrets
import struct
import uuid
from typing import Any

import asyncpg
import httpx
from sqlalchemy import select, text

from kernel.audit import AuditEntry
from kernel.migrate import migrate
from kernel.personal_data import FieldCipher
from kernel.runtime import Runtime
from orders.home import CHECK_IN_CONTEXT, CHECK_OUT_CONTEXT, coarse, open_home, open_point
from tests.conftest import _admin, _admin_dsn, _db_url, login_headers
from tests.factories import HANGGIN, elder_payload, offset
from tests.world import World

# digits that a rounded cell never shows: 39.857391 → 39.86, 108.736827 → 108.74
EXACT = (39.857391, 108.736827)


async def _register(client: httpx.AsyncClient, admin_headers: dict[str, str], **overrides: Any) -> dict[str, Any]:
    response = await client.post("/v1/elders", json=elder_payload(lat=EXACT[0], lon=EXACT[1], **overrides),
                                 headers=admin_headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


def _digits(value: float) -> str:
    return f"{value}".split(".")[1]  # "857391": the part a cell rounds away


async def test_the_exact_home_is_stored_sealed_and_nowhere_in_clear(
        client: httpx.AsyncClient, runtime: Runtime, admin_headers: dict[str, str]) -> None:
    body = await _register(client, admin_headers)
    moved = await client.patch(f"/v1/elders/{body['id']}", json={"lat": EXACT[0], "lon": EXACT[1]},
                               headers=admin_headers)
    assert moved.status_code == 200, moved.text
    async with runtime.database.unit_of_work() as s:
        await s.execute(text("RESET ROLE"))  # the database superuser's view of the raw row
        row = (await s.execute(text("SELECT row_to_json(e)::text AS raw, e.home_enc, e.coarse_lat, e.coarse_lon "
                                    "FROM elders e WHERE id = :id"), {"id": body["id"]})).one()
        outbox = " ".join((await s.scalars(text("SELECT payload::text FROM outbox"))).all())
        audit = " ".join((await s.scalars(text("SELECT summary::text FROM audit_log"))).all())
        await s.execute(text("SET ROLE vnh_app"))
    for where in (row.raw, outbox, audit):
        assert _digits(EXACT[0]) not in where and _digits(EXACT[1]) not in where
    assert row.home_enc.startswith(runtime.cipher.current_prefix)
    assert open_home(runtime.cipher, row.home_enc) == EXACT
    assert (row.coarse_lat, row.coarse_lon) == coarse(*EXACT) == (39.86, 108.74)


async def test_dispatchers_and_auditors_see_only_the_cell(client: httpx.AsyncClient, runtime: Runtime,
                                                          admin_headers: dict[str, str]) -> None:
    body = await _register(client, admin_headers)
    assert (body["lat"], body["lon"]) == (39.86, 108.74)
    for role in ("dispatcher", "auditor"):
        headers = await login_headers(runtime, role, region_code=HANGGIN)  # type: ignore[arg-type]
        got = await client.get(f"/v1/elders/{body['id']}", headers=headers)
        assert got.status_code == 200, got.text
        assert (got.json()["lat"], got.json()["lon"]) == (39.86, 108.74), role
        listed = await client.get("/v1/elders", headers=headers)
        for text_seen in (got.text, listed.text):
            assert _digits(EXACT[0]) not in text_seen and _digits(EXACT[1]) not in text_seen


async def test_a_reveal_gives_the_exact_home_with_a_reason_and_is_audited(
        client: httpx.AsyncClient, runtime: Runtime, admin_headers: dict[str, str]) -> None:
    body = await _register(client, admin_headers)
    dispatcher = await login_headers(runtime, "dispatcher", region_code=HANGGIN)
    no_reason = await client.post(f"/v1/elders/{body['id']}/reveal", json={"fields": ["home"]}, headers=dispatcher)
    assert no_reason.status_code == 422
    revealed = await client.post(f"/v1/elders/{body['id']}/reveal",
                                 json={"fields": ["home"], "reason": "救护车需要定位"}, headers=dispatcher)
    assert revealed.status_code == 200, revealed.text
    assert revealed.json()["home"] == {"lat": EXACT[0], "lon": EXACT[1]}
    assert revealed.json()["address"] is None  # only what was asked
    async with runtime.database.unit_of_work() as s:
        entry = await s.scalar(select(AuditEntry).where(AuditEntry.action == "elder.reveal",
                                                        AuditEntry.entity_id == body["id"]))
    assert entry is not None and entry.summary["fields"] == ["home"] and entry.summary["reason"] == "救护车需要定位"
    assert _digits(EXACT[0]) not in str(entry.summary)
    auditor = await login_headers(runtime, "auditor", region_code=HANGGIN)
    refused = await client.post(f"/v1/elders/{body['id']}/reveal", json={"fields": ["home"], "reason": "looking"},
                                headers=auditor)
    assert refused.status_code == 403


async def test_the_caregiver_sees_the_exact_home_from_acceptance_to_check_out_and_not_after(world: World) -> None:
    rt, client = world.rt, world.client
    exact = world.home
    await world.order(headers=world.family)
    offer = (await world.offers_of(0))[0]
    assert offer["elder"]["lat"] is None  # an offer not yet accepted shows no point
    cg = await world.as_cg(0)
    accepted = await client.post(f"/v1/offers/{offer['id']}/accept", headers=cg)
    assert accepted.status_code == 200, accepted.text
    assert (accepted.json()["elder"]["lat"], accepted.json()["elder"]["lon"]) == exact
    visit_id = accepted.json()["visit_id"]

    def home(response: httpx.Response) -> tuple[float, float] | None:
        assert response.status_code == 200, response.text
        point = response.json()["elder_home"]
        return None if point is None else (point["lat"], point["lon"])

    assert home(await client.get(f"/v1/visits/{visit_id}", headers=cg)) == exact
    assert home(await client.post(f"/v1/visits/{visit_id}/depart", headers=cg)) == exact
    near = offset(*exact, north_m=20)
    assert home(await client.post(f"/v1/visits/{visit_id}/check-in", json={"lat": near[0], "lon": near[1]},
                                  headers=cg)) == exact
    assert home(await client.get(f"/v1/visits/{visit_id}", headers=world.dispatcher)) is None  # staff: reveal
    assert home(await client.get(f"/v1/visits/{visit_id}", headers=world.family)) is None
    rt.clock.advance(3600)  # type: ignore[attr-defined]
    out = await client.post(f"/v1/visits/{visit_id}/check-out", json={"lat": near[0], "lon": near[1]}, headers=cg)
    assert home(out) is None
    assert home(await client.get(f"/v1/visits/{visit_id}", headers=cg)) is None
    async with rt.database.unit_of_work() as s:
        reads = (await s.scalars(select(AuditEntry.summary).where(
            AuditEntry.action == "elder.read_for_visit", AuditEntry.entity_id == str(world.elder.id)))).all()
    assert reads and all("home" in r["fields"] for r in reads)
    async with rt.database.unit_of_work() as s:  # the check-in and check-out points, taken at the door, are sealed
        raw = (await s.execute(text("SELECT row_to_json(v)::text AS raw, check_in_enc, check_out_enc FROM visits v "
                                    "WHERE id = :id"), {"id": visit_id})).one()
    assert _digits(near[0])[:5] not in raw.raw and _digits(near[1])[:5] not in raw.raw
    assert open_point(rt.cipher, raw.check_in_enc, context=CHECK_IN_CONTEXT) == near
    assert open_point(rt.cipher, raw.check_out_enc, context=CHECK_OUT_CONTEXT) == near


async def test_the_migration_seals_existing_homes_and_leaves_no_plaintext_in_the_table(
        server_urls: dict[str, str]) -> None:
    """0010 on a database with elders and a visit: each home and check-in/out point sealed with the service's cipher,
    the cell kept, and the tables rewritten so the dropped plaintext columns' bytes are gone from their pages
    (checked with pageinspect)."""
    base = server_urls["database"]
    name = f"vnh_t_{os.getpid()}_{secrets.token_hex(4)}"
    await _admin(base, f'CREATE DATABASE "{name}"')
    cipher = FieldCipher(cipher="aes-gcm", keys={"k1": os.urandom(32)}, active_key="k1",
                         blind_index_key=os.urandom(32))
    homes = {uuid.uuid4(): (EXACT[0] + i / 1000, EXACT[1] - i / 1000) for i in range(3)}
    first, visit_id = next(iter(homes)), uuid.uuid4()
    door, door_out = (EXACT[0] + 0.000013, EXACT[1] + 0.000021), (EXACT[0] - 0.000017, EXACT[1] + 0.000011)
    try:
        await migrate(_db_url(base, name), "vnh_app", revision="0007")
        conn = await asyncpg.connect(_admin_dsn(base, name))
        try:
            for elder_id, (lat, lon) in homes.items():
                await conn.execute(
                    "INSERT INTO elders (id, name, id_number_enc, id_number_bidx, id_number_masked, address_enc, "
                    "address_masked, emergency_contacts_masked, gender, birth_date, lat, lon, region_code, "
                    "categories, assessment_level, languages, preferences, status) VALUES ($1, '王秀英', 'x', $2, "
                    "'x', 'x', 'x', '[]', 'female', '1940-01-01', $3, $4, '150625', '{}', 0, '{}', '{}', 'active')",
                    elder_id, secrets.token_hex(16), lat, lon)
            # a finished visit at the first elder's door (its order and caregiver need not exist for this: the
            # scratch database drops the foreign keys)
            for constraint in await conn.fetch("SELECT conname FROM pg_constraint WHERE contype = 'f' "
                                               "AND conrelid = 'visits'::regclass"):
                await conn.execute(f'ALTER TABLE visits DROP CONSTRAINT "{constraint[0]}"')
            await conn.execute(
                "INSERT INTO visits (id, order_id, caregiver_id, organization_id, elder_id, service_code, status, "
                "window_start, window_end, assigned_at, check_in_at, check_in_lat, check_in_lon, check_out_at, "
                "check_out_lat, check_out_lon, tasks_done, billing) VALUES ($1, $2, $2, $2, $3, 'daily_care', "
                "'completed', now(), now() + interval '1 hour', now(), now(), $4, $5, now(), $6, $7, '[]', "
                "'pending')", visit_id, uuid.uuid4(), first, *door, *door_out)
            await migrate(_db_url(base, name), "vnh_app", cipher=cipher)
            rows = {r["id"]: r for r in await conn.fetch("SELECT id, home_enc, coarse_lat, coarse_lon FROM elders")}
            visit = await conn.fetchrow("SELECT check_in_enc, check_out_enc FROM visits")
            columns = {r[0] for r in await conn.fetch(
                "SELECT attname FROM pg_attribute WHERE attrelid IN ('elders'::regclass, 'visits'::regclass) "
                "AND NOT attisdropped")}
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pageinspect")
            tuples = []
            for table in ("elders", "visits"):
                pages = await conn.fetchval("SELECT pg_relation_size($1::regclass) / "
                                            "current_setting('block_size')::int", table)
                tuples += [bytes(r[0]) for n in range(pages) for r in await conn.fetch(
                    "SELECT t_data FROM heap_page_items(get_raw_page($1, $2)) WHERE t_data IS NOT NULL", table, n)]
        finally:
            await conn.close()
    finally:
        await _admin(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    assert not columns & {"lat", "lon", "check_in_lat", "check_in_lon", "check_out_lat", "check_out_lon"}
    assert open_point(cipher, visit["check_in_enc"], context=CHECK_IN_CONTEXT) == door
    assert open_point(cipher, visit["check_out_enc"], context=CHECK_OUT_CONTEXT) == door_out
    for elder_id, point in homes.items():
        assert open_home(cipher, rows[elder_id]["home_enc"]) == point
        assert (rows[elder_id]["coarse_lat"], rows[elder_id]["coarse_lon"]) == coarse(*point)
    assert len(tuples) >= len(homes) + 1
    for lat, lon in (*homes.values(), door, door_out):  # float8 as stored on the page, little-endian (x86, arm)
        assert not any(struct.pack("<d", lat) in t or struct.pack("<d", lon) in t for t in tuples)


async def test_impossible_travel_is_still_measured_from_the_sealed_check_out_point(world: World) -> None:
    """The previous visit's check-out point is opened to compare with the next check-in (visits.check_in)."""
    rt, client = world.rt, world.client
    cg = await world.as_cg(0)

    async def visit() -> str:
        order = await world.order(headers=world.family)
        offer = next((o for o in await world.offers_of(0) if o["order_id"] == order["id"]), None)
        if offer is None:  # offered to someone else: the dispatcher assigns it to this caregiver
            assigned = await client.post(f"/v1/orders/{order['id']}/assign", headers=world.dispatcher,
                                         json={"caregiver_id": str(world.caregivers[0].id)})
            assert assigned.status_code == 201, assigned.text
            offer = assigned.json()
        accepted = await client.post(f"/v1/offers/{offer['id']}/accept", headers=cg)
        assert accepted.status_code == 200, accepted.text
        return str(accepted.json()["visit_id"])

    first = await visit()
    assert (await client.post(f"/v1/visits/{first}/depart", headers=cg)).status_code == 200
    at_home = {"lat": world.home[0], "lon": world.home[1]}
    assert (await client.post(f"/v1/visits/{first}/check-in", json=at_home, headers=cg)).status_code == 200
    rt.clock.advance(3600)  # type: ignore[attr-defined]
    far = offset(*world.home, north_m=60_000)  # checked out 60 km away (a fake position, say)
    out = await client.post(f"/v1/visits/{first}/check-out", json={"lat": far[0], "lon": far[1]}, headers=cg)
    assert out.status_code == 200, out.text
    second = await visit()
    assert (await client.post(f"/v1/visits/{second}/depart", headers=cg)).status_code == 200
    rt.clock.advance(600)  # 60 km in 10 minutes
    checked_in = await client.post(f"/v1/visits/{second}/check-in", json=at_home, headers=cg)
    assert checked_in.status_code == 200, checked_in.text
    assert "impossible_travel" in checked_in.json()["flags"]
