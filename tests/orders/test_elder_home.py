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
from orders.home import coarse, open_home
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


async def test_the_migration_seals_existing_homes_and_leaves_no_plaintext_in_the_table(
        server_urls: dict[str, str]) -> None:
    """0014 on a database with elders: each home sealed with the service's cipher, the cell kept, and the table
    rewritten so the dropped plaintext columns' bytes are gone from its pages (checked with pageinspect)."""
    base = server_urls["database"]
    name = f"vnh_t_{os.getpid()}_{secrets.token_hex(4)}"
    await _admin(base, f'CREATE DATABASE "{name}"')
    cipher = FieldCipher(cipher="aes-gcm", keys={"k1": os.urandom(32)}, active_key="k1",
                         blind_index_key=os.urandom(32))
    homes = {uuid.uuid4(): (EXACT[0] + i / 1000, EXACT[1] - i / 1000) for i in range(3)}
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
            await migrate(_db_url(base, name), "vnh_app", cipher=cipher)
            rows = {r["id"]: r for r in await conn.fetch("SELECT id, home_enc, coarse_lat, coarse_lon FROM elders")}
            columns = {r[0] for r in await conn.fetch(
                "SELECT attname FROM pg_attribute WHERE attrelid = 'elders'::regclass AND NOT attisdropped")}
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pageinspect")
            pages = await conn.fetchval("SELECT pg_relation_size('elders') / current_setting('block_size')::int")
            tuples = [bytes(r[0]) for n in range(pages) for r in await conn.fetch(
                "SELECT t_data FROM heap_page_items(get_raw_page('elders', $1)) WHERE t_data IS NOT NULL", n)]
        finally:
            await conn.close()
    finally:
        await _admin(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    assert "lat" not in columns and "lon" not in columns
    for elder_id, point in homes.items():
        assert open_home(cipher, rows[elder_id]["home_enc"]) == point
        assert (rows[elder_id]["coarse_lat"], rows[elder_id]["coarse_lon"]) == coarse(*point)
    assert len(tuples) >= len(homes)
    for lat, lon in homes.values():  # float8 as stored on the page, little-endian on x86 and arm
        assert not any(struct.pack("<d", lat) in t or struct.pack("<d", lon) in t for t in tuples)
