from __future__ import annotations

import asyncio
import base64
import json
import stat
import sys

import asyncpg
import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from kernel.audit import (
    AuditEntry,
    ChainHasher,
    SystemActor,
    record_audit,
    request_id_var,
    seal_pending,
    verify_chain,
)
from kernel.audit_witness import HttpWitness, parse
from kernel.runtime import Runtime
from tests.conftest import free_port, login_headers, settings_env
from vnh.workers import seal_audit_once


async def _write(rt: Runtime, n: int) -> None:
    async with rt.database.unit_of_work() as s:
        for i in range(n):
            await record_audit(s, rt.clock, SystemActor("test"), "thing.change", "thing", str(i), {"n": i, "名": "值"},
                               client=("203.0.113.7", "probe/1.0") if i % 2 else None)


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
        ("UPDATE audit_log SET source_ip = '198.51.100.1' WHERE entity_id = '3'", "3"),  # the address is sealed
        ("UPDATE audit_log SET source_ip = NULL, user_agent = NULL WHERE entity_id = '5'", "5"),
        ("UPDATE audit_log SET source_ip = '198.51.100.1' WHERE entity_id = '2'", "2"),  # none recorded, one added
    ],
    ids=["edited-summary", "edited-actor", "deleted-row", "forged-seal", "edited-region", "edited-source-ip",
         "erased-client", "added-source-ip"],
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


# --- the chain's head witnessed outside the database (issue 13, item 7) ---------------------------------------

_TRUNCATE = ("DELETE FROM audit_seal WHERE chain_seq > 4;"
             "DELETE FROM audit_log WHERE id NOT IN (SELECT audit_id FROM audit_seal)")


async def test_deleting_the_newest_rows_with_their_seals_is_reported_as_truncation(committed_runtime: Runtime) -> None:
    rt = committed_runtime
    await _write(rt, 6)
    assert await seal_audit_once(rt) == 6
    witnessed = rt.witnesses.newest()
    assert witnessed is not None and (witnessed.chain_seq, witnessed.count) == (6, 6)
    await _as_owner(rt, _TRUNCATE)  # the superuser removes the last two rows and their seals, triggers off
    async with rt.database.unit_of_work() as s:
        assert (await s.scalar(text("select count(*) from audit_log"))) == 4
        alone = await verify_chain(s, rt.chain)  # what verify answered before the witness: the attack unseen
        verdict = await verify_chain(s, rt.chain, witnessed=rt.witnesses.newest())
    assert alone.intact is True and alone.checked == 4
    assert verdict.intact is False and verdict.truncated is True
    assert verdict.witnessed_head == witnessed
    assert verdict.found_head is not None and (verdict.found_head.chain_seq, verdict.found_head.count) == (4, 4)
    assert verdict.first_broken_id == str(witnessed.audit_id)

    # the HTTP verify endpoint says so too
    from vnh.app import create_app

    headers = await login_headers(rt, "auditor", region_code="150625")
    transport = httpx.ASGITransport(app=create_app(rt, background=False), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://vnh.test") as client:
        report = (await client.get("/v1/audit/log/verify", headers=headers)).json()
    assert report["intact"] is False and report["truncated"] is True
    assert report["witnessed_head"]["chain_seq"] == 6
    assert report["witnessed_head"]["audit_id"] == str(witnessed.audit_id)
    assert report["found_head"]["chain_seq"] == 4


async def test_vnh_audit_verify_exits_non_zero_on_a_truncated_chain(committed_runtime: Runtime) -> None:
    rt = committed_runtime
    await _write(rt, 6)
    await seal_audit_once(rt)

    async def cli() -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "vnh.cli", "audit", "verify", env=settings_env(rt.settings),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode is not None
        return proc.returncode, out.decode()

    code, out = await cli()
    assert code == 0, out
    await _as_owner(rt, _TRUNCATE)
    code, out = await cli()
    assert code == 1, out
    assert "intact=False" in out and "truncated=true" in out and '"chain_seq": 6' in out


async def test_a_witness_line_cannot_be_forged_without_the_audit_key(committed_runtime: Runtime) -> None:
    rt = committed_runtime
    await _write(rt, 3)
    await seal_audit_once(rt)
    assert rt.witnesses.file is not None
    path = rt.witnesses.file.path
    lines = path.read_text().splitlines()
    assert len(lines) == 1 and stat.S_IMODE(path.stat().st_mode) == 0o600
    forged = {**json.loads(lines[0]), "chain_seq": 99, "count": 99}  # a head that would hide nothing, but unsigned
    with path.open("a") as fh:
        fh.write(json.dumps(forged) + "\n" + "not json\n")
    head = rt.witnesses.newest()
    assert head is not None and head.chain_seq == 3
    async with rt.database.unit_of_work() as s:
        assert (await verify_chain(s, rt.chain, witnessed=head)).intact is True
    # later seals append further heads; the newest is what verify compares against
    await _write(rt, 2)
    await seal_audit_once(rt)
    newest = rt.witnesses.newest()
    assert newest is not None and newest.chain_seq == 5 and len(path.read_text().splitlines()) == 4


async def test_an_unreachable_http_witness_never_stops_sealing_and_gets_the_newest_head_later(
        committed_runtime: Runtime) -> None:
    rt = committed_runtime
    received: list[dict[str, object]] = []
    assert rt.settings.audit.key is not None
    key = base64.b64decode(rt.settings.audit.key.get_secret_value())

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length")))
        received.append(json.loads(await reader.readexactly(length)))
        writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    port = free_port()
    witness = HttpWitness(f"http://127.0.0.1:{port}/heads", key, timeout_s=2.0, max_backoff_s=0.0)
    rt.witnesses.witnesses.append(witness)
    await _write(rt, 2)
    assert await seal_audit_once(rt) == 2  # nobody listens: sealed anyway
    await _write(rt, 1)
    assert await seal_audit_once(rt) == 1
    assert received == []
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    try:
        assert await seal_audit_once(rt) == 0  # a tick with nothing to seal retries the newest undelivered head
    finally:
        server.close()
        await server.wait_closed()
    assert len(received) == 1 and received[0]["chain_seq"] == 3
    assert parse(key, received[0]) is not None  # signed with the audit key


# --- where HTTP actions came from (issue 13, item 8) ---------------------------------------------------------

async def test_every_http_action_records_the_client_address_and_user_agent(client: httpx.AsyncClient,
                                                                           runtime: Runtime) -> None:
    ua = {"User-Agent": "Mozilla/5.0 (probe) " + "x" * 400}
    failed = await client.post("/v1/auth/token", json={"username": "nobody-here", "password": "wrong-Pass-1"},
                               headers=ua)
    assert failed.status_code == 401
    admin = await login_headers(runtime, "admin")
    created = await client.post("/v1/organizations", json={"name": "锡尼镇服务中心", "region_code": "150625"},
                                headers={**admin, **ua})
    assert created.status_code == 201, created.text
    async with runtime.database.unit_of_work() as s:
        rows = {e.action: e for e in (await s.scalars(select(AuditEntry).where(
            AuditEntry.action.in_(["auth.login", "organization.create"])))).all()}
    assert set(rows) == {"auth.login", "organization.create"}
    for entry in rows.values():
        assert entry.source_ip == "127.0.0.1"  # httpx's ASGI transport is the client at 127.0.0.1
        assert entry.user_agent is not None and entry.user_agent.startswith("Mozilla/5.0 (probe) ")
        assert len(entry.user_agent) == 256
    assert rows["auth.login"].outcome == "denied"
    # system work outside a request has none
    await _write(runtime, 1)
    async with runtime.database.unit_of_work() as s:
        system = await s.scalar(select(AuditEntry).where(AuditEntry.action == "thing.change"))
    assert system is not None and system.source_ip is None and system.user_agent is None
    # auditors see it in the log
    rows_out = (await client.get("/v1/audit/log", headers=admin, params={"entity": "organization"})).json()["items"]
    assert rows_out[0]["source_ip"] == "127.0.0.1" and rows_out[0]["user_agent"].startswith("Mozilla/5.0")


async def test_an_unexpected_failure_is_audited_with_the_client_address(runtime: Runtime) -> None:
    from vnh.app import create_app

    app = create_app(runtime, background=False)

    async def boom() -> None:
        raise RuntimeError("boom")

    app.add_api_route("/v1/test-boom", boom)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=("192.0.2.44", 5555))
    async with httpx.AsyncClient(transport=transport, base_url="http://vnh.test") as client:
        assert (await client.get("/v1/test-boom", headers={"User-Agent": "probe/2"})).status_code == 500
    async with runtime.database.unit_of_work() as s:
        entry = await s.scalar(select(AuditEntry).where(AuditEntry.action == "http.failed"))
    assert entry is not None and (entry.source_ip, entry.user_agent) == ("192.0.2.44", "probe/2")


# --- the tamper matrix (issue 14, item 3): every sealed field, each hash algorithm ----------------------------

_HASHED_EDITS = {
    "id": "id = id + 1000000",
    "at": "at = at + interval '1 second'",
    "actor_id": "actor_id = 'user:someone-else'",
    "actor_role": "actor_role = 'admin'",
    "action": "action = 'thing.read'",
    "entity": "entity = 'other'",
    "entity_id": "entity_id = 'x1'",
    "entity_id-erased": "entity_id = NULL",
    "summary": "summary = '{\"n\": 99}'",
    "outcome": "outcome = 'denied'",
    "request_id": "request_id = 'req-forged'",
    "request_id-erased": "request_id = NULL",
    "region_code": "region_code = '150602'",
    "region_code-erased": "region_code = NULL",
    "source_ip": "source_ip = '198.51.100.1'",
    "user_agent": "user_agent = 'forged/1.0'",
    "client-erased": "source_ip = NULL, user_agent = NULL",
}


def _hasher(rt: Runtime, algorithm: str) -> ChainHasher:
    """The chain hasher the settings give (`VNH_AUDIT__HMAC`)."""
    audit = rt.settings.audit.model_copy(update={"hmac": algorithm})
    return ChainHasher.from_settings(rt.settings.model_copy(update={"audit": audit}))


async def _sealed_rows(rt: Runtime, hasher: ChainHasher, n: int = 3) -> dict[str, int]:
    """`n` audit rows with every optional field set (entity ids '0'..), sealed with `hasher`; their audit ids."""
    token = request_id_var.set("req-matrix")
    try:
        async with rt.database.unit_of_work() as s:
            for i in range(n):
                await record_audit(s, rt.clock, SystemActor("test"), "thing.change", "thing", str(i), {"n": i},
                                   region_code="150625", client=("203.0.113.7", "probe/1.0"))
    finally:
        request_id_var.reset(token)
    async with rt.database.unit_of_work() as s:
        assert await seal_pending(s, hasher) == n
        return {e: int(i) for i, e in (await s.execute(text("select id, entity_id from audit_log"))).all()}


async def _tamper_in_place(rt: Runtime, sql: str) -> None:
    """Tamper inside the test's own (rolled-back) transaction, as the superuser with the append-only triggers off;
    then act as the app role again."""
    async with rt.database.unit_of_work() as s:
        await s.execute(text("RESET ROLE"))
        await s.execute(text("SET LOCAL session_replication_role = replica"))
        await s.execute(text(sql))
        await s.execute(text("SET LOCAL session_replication_role = origin"))
        await s.execute(text("SET ROLE vnh_app"))


@pytest.mark.parametrize("algorithm", ["sha256", "sm3"])
@pytest.mark.parametrize("field", list(_HASHED_EDITS))
async def test_editing_any_sealed_field_of_an_audit_row_breaks_the_chain_at_that_row(
        runtime: Runtime, algorithm: str, field: str) -> None:
    rt = runtime
    hasher = _hasher(rt, algorithm)
    ids = await _sealed_rows(rt, hasher)
    async with rt.database.unit_of_work() as s:
        assert (await verify_chain(s, hasher)).intact is True
    edit = _HASHED_EDITS[field]  # a fixed statement of this module, not input
    await _tamper_in_place(rt, f"UPDATE audit_log SET {edit} WHERE entity_id = '1'")  # noqa: S608
    async with rt.database.unit_of_work() as s:
        verdict = await verify_chain(s, hasher)
    assert verdict.intact is False and verdict.truncated is False
    assert verdict.first_broken_id == str(ids["1"]) and verdict.checked == 1  # row '0' still verifies
    # a row whose id changed is no longer the row its seal names: to the chain it is gone
    assert verdict.reason == ("audit row was deleted" if field == "id"
                              else "audit row content does not match its seal")


@pytest.mark.parametrize("algorithm", ["sha256", "sm3"])
async def test_editing_an_audit_rows_unsealed_bookkeeping_leaves_the_chain_intact(runtime: Runtime,
                                                                                   algorithm: str) -> None:
    """The positive control of the matrix: `created_at` (the database's own insert time) is not sealed, so editing
    it is no break; the matrix above fails because of what it edits, not because it edits."""
    rt = runtime
    hasher = _hasher(rt, algorithm)
    await _sealed_rows(rt, hasher)
    await _tamper_in_place(rt, "UPDATE audit_log SET created_at = created_at - interval '1 day'")
    async with rt.database.unit_of_work() as s:
        verdict = await verify_chain(s, hasher)
    assert verdict.intact is True and verdict.checked == 3 and verdict.reason is None


@pytest.mark.parametrize("algorithm", ["sha256", "sm3"])
@pytest.mark.parametrize(
    ("tamper", "broken", "reason"),
    [
        ("UPDATE audit_seal SET prev_hash = repeat('0', 64) WHERE chain_seq = 2", "1",
         "previous-hash link does not match"),
        ("DELETE FROM audit_seal WHERE chain_seq = 2", "2", "seal 2 is missing"),
        ("DELETE FROM audit_log WHERE entity_id = '1'", "1", "audit row was deleted"),
        ("UPDATE audit_seal SET hash = repeat('0', 64) WHERE chain_seq = 2", "1",
         "audit row content does not match its seal"),
    ],
    ids=["edited-prev-hash", "deleted-seal", "deleted-row", "forged-seal-hash"],
)
async def test_tampering_with_seals_is_reported_with_its_reason(runtime: Runtime, algorithm: str, tamper: str,
                                                               broken: str, reason: str) -> None:
    rt = runtime
    hasher = _hasher(rt, algorithm)
    ids = await _sealed_rows(rt, hasher)
    await _tamper_in_place(rt, tamper)
    async with rt.database.unit_of_work() as s:
        verdict = await verify_chain(s, hasher)
    assert verdict.intact is False and verdict.reason == reason
    assert verdict.first_broken_id == str(ids[broken])


async def test_a_chain_sealed_with_sm3_does_not_verify_as_sha256_and_the_other_way_round(runtime: Runtime) -> None:
    rt = runtime
    sm3, sha256 = _hasher(rt, "sm3"), _hasher(rt, "sha256")
    ids = await _sealed_rows(rt, sm3)
    async with rt.database.unit_of_work() as s:
        assert (await verify_chain(s, sm3)).intact is True
        crossed = await verify_chain(s, sha256)
    assert crossed.intact is False and crossed.first_broken_id == str(ids["0"])
    assert crossed.reason == "audit row content does not match its seal"
