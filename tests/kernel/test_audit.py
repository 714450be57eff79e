from __future__ import annotations

import asyncpg
import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from kernel.audit import AuditEntry, SystemActor, record_audit, verify_chain
from kernel.runtime import Runtime
from tests.conftest import login_headers
from vnh.workers import seal_audit_once


async def _write(rt: Runtime, n: int) -> None:
    async with rt.database.unit_of_work() as s:
        for i in range(n):
            await record_audit(s, rt.clock, SystemActor("test"), "thing.change", "thing", str(i), {"n": i, "名": "值"})


async def _verify(rt: Runtime) -> tuple[bool, int, int, str | None]:
    async with rt.database.unit_of_work() as s:
        v = await verify_chain(s, rt.chain)
    return v.intact, v.checked, v.unsealed, v.first_broken_id


async def _as_owner(rt: Runtime, sql: str) -> None:
    """Tamper as the database owner would, with the append-only triggers out of the way."""
    dsn = make_url(rt.settings.app_url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SET session_replication_role = replica")  # triggers off (superuser)
        await conn.execute(sql)
    finally:
        await conn.close()


async def test_sealed_rows_verify_and_unsealed_ones_are_counted(committed_runtime: Runtime) -> None:
    rt = committed_runtime
    await _write(rt, 5)
    assert await _verify(rt) == (True, 0, 5, None)
    assert await seal_audit_once(rt) == 5
    await _write(rt, 2)
    assert await _verify(rt) == (True, 5, 2, None)
    assert await seal_audit_once(rt) == 2
    assert await _verify(rt) == (True, 7, 0, None)


@pytest.mark.parametrize(
    ("tamper", "broken_id"),
    [
        ("UPDATE audit_log SET summary = '{\"n\": 99}' WHERE entity_id = '2'", "2"),
        ("UPDATE audit_log SET actor_id = 'user:someone-else' WHERE entity_id = '3'", "3"),
        ("DELETE FROM audit_seal WHERE audit_id = (SELECT id FROM audit_log WHERE entity_id = '1');"
         "DELETE FROM audit_log WHERE entity_id = '1'", "2"),
        ("UPDATE audit_seal SET hash = repeat('0', 64) WHERE chain_seq = 4", "3"),
        ("UPDATE audit_log SET region_code = '150602' WHERE entity_id = '4'", "4"),  # moved out of an auditor's sight
    ],
    ids=["edited-summary", "edited-actor", "deleted-row", "forged-seal", "edited-region"],
)
async def test_tampering_breaks_the_chain_at_the_first_damaged_row(committed_runtime: Runtime, tamper: str,
                                                                   broken_id: str) -> None:
    rt = committed_runtime
    await _write(rt, 6)
    await seal_audit_once(rt)
    async with rt.database.unit_of_work() as s:
        ids = {e: str(i) for i, e in (await s.execute(text("select id, entity_id from audit_log"))).all()}
    await _as_owner(rt, tamper)
    intact, _checked, _unsealed, first_broken = await _verify(rt)
    assert intact is False
    # the verdict names the audit id of the first broken link (entity ids 0..5 were written in order)
    assert first_broken == ids[broken_id]


async def test_the_app_role_cannot_change_or_delete_audit_rows(committed_runtime: Runtime) -> None:
    rt = committed_runtime
    await _write(rt, 1)
    await seal_audit_once(rt)
    for statement in ("UPDATE audit_log SET outcome = 'failed'", "DELETE FROM audit_log",
                      "DELETE FROM audit_seal", "TRUNCATE audit_log CASCADE"):
        with pytest.raises(DBAPIError, match="permission denied"):
            async with rt.database.unit_of_work() as s:
                await s.execute(text(statement))
    assert (await _verify(rt))[0] is True


async def test_even_the_owner_hits_the_append_only_trigger(committed_runtime: Runtime) -> None:
    rt = committed_runtime
    await _write(rt, 1)
    dsn = make_url(rt.settings.app_url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await conn.execute("DELETE FROM audit_log")
    finally:
        await conn.close()


async def test_refused_requests_are_audited(client: httpx.AsyncClient, runtime: Runtime) -> None:
    dispatcher = await login_headers(runtime, "dispatcher", region_code="150625")
    await client.post("/v1/organizations", json={"name": "x服务中心", "region_code": "150625"}, headers=dispatcher)
    async with runtime.database.unit_of_work() as s:
        entry = await s.scalar(select(AuditEntry).where(AuditEntry.action == "http.refused"))
    assert entry is not None
    assert entry.outcome == "denied" and entry.actor_role == "dispatcher"
    assert entry.summary["path"] == "/v1/organizations"
