"""Lock-out: the same work on every branch (no user enumeration by timing), per account and source address first,
account-wide only after failures from several addresses, and an admin's unlock (kernel/auth.py `authenticate`)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import func, select, text

import kernel.auth
from kernel.audit import AuditEntry, SystemActor
from kernel.auth import authenticate, create_user, source_key
from kernel.clock import ManualClock
from kernel.runtime import Runtime
from tests.conftest import TEST_PASSWORD, login_headers

WRONG = "wrong-Pass-123"


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each argon2 verification `authenticate` runs (the real one, counted)."""
    calls: list[str] = []
    real = kernel.auth._verify

    def counted(password_hash: str, password: str) -> bool:
        calls.append(password_hash)
        return real(password_hash, password)

    monkeypatch.setattr(kernel.auth, "_verify", counted)
    return calls


async def _attempt(rt: Runtime, username: str, password: str, source: str = "198.51.100.1") -> bool:
    async with rt.database.unit_of_work() as s:
        return await authenticate(s, rt.clock, username, password, source=source) is not None


async def _user(rt: Runtime, username: str) -> kernel.auth.User:
    async with rt.database.unit_of_work() as s:
        return await create_user(s, rt.clock, SystemActor("test"), username=username, password=TEST_PASSWORD,
                                 role="admin")


async def test_every_branch_spends_one_argon2_verification(runtime: Runtime, verifications: list[str]) -> None:
    from kernel.auth import delete_user, set_user_active

    await _user(runtime, "lock-me")
    inactive = await _user(runtime, "inactive-one")
    deleted = await _user(runtime, "deleted-one")
    async with runtime.database.unit_of_work() as s:
        await set_user_active(s, runtime.clock, SystemActor("test"), str(inactive.id), False)
        await delete_user(s, runtime.clock, SystemActor("test"), str(deleted.id))
    for _ in range(5):
        await _attempt(runtime, "lock-me", WRONG)
    verifications.clear()
    branches = {
        "unknown user": ("nobody-here", TEST_PASSWORD, "198.51.100.1"),
        "wrong password": ("lock-me", WRONG, "198.51.100.2"),
        "locked for this address": ("lock-me", TEST_PASSWORD, "198.51.100.1"),
        "inactive": ("inactive-one", TEST_PASSWORD, "198.51.100.1"),
        "deleted": ("deleted-one", TEST_PASSWORD, "198.51.100.1"),
        "right password": ("lock-me", TEST_PASSWORD, "198.51.100.3"),
    }
    for branch, (username, password, source) in branches.items():
        before = len(verifications)
        await _attempt(runtime, username, password, source)
        assert len(verifications) - before == 1, f"{branch}: {len(verifications) - before} argon2 verifications"
    # and on an account locked for everyone
    for i in range(10):
        await _attempt(runtime, "lock-me", WRONG, f"203.0.113.{i % 3}")
    before = len(verifications)
    assert not await _attempt(runtime, "lock-me", TEST_PASSWORD, "198.51.100.9")
    assert len(verifications) - before == 1


@pytest.fixture
def behind_a_proxy(runtime: Runtime) -> Iterator[None]:
    """The in-process client (127.0.0.1) is a trusted proxy: `X-Forwarded-For` names the client."""
    saved = runtime.settings.http.trusted_proxies
    runtime.settings.http.trusted_proxies = ["127.0.0.1"]
    try:
        yield
    finally:
        runtime.settings.http.trusted_proxies = saved


def _from(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


async def test_one_address_cannot_lock_an_admin_out_for_everyone(client: httpx.AsyncClient, runtime: Runtime,
                                                                 behind_a_proxy: None) -> None:
    headers = await login_headers(runtime, "admin")
    username = (await client.get("/v1/auth/me", headers=headers)).json()["username"]
    for _ in range(8):
        await client.post("/v1/auth/token", json={"username": username, "password": WRONG}, headers=_from("1.2.3.4"))
    attacker = await client.post("/v1/auth/token", json={"username": username, "password": TEST_PASSWORD},
                                 headers=_from("1.2.3.4"))
    assert attacker.status_code == 401
    admin = await client.post("/v1/auth/token", json={"username": username, "password": TEST_PASSWORD},
                              headers=_from("10.1.1.1"))
    assert admin.status_code == 200, admin.text
    assert (await client.get("/v1/auth/me", headers=headers)).status_code == 200  # sessions live on
    async with runtime.database.unit_of_work() as s:
        reasons = [e.summary["reason"] for e in (await s.scalars(
            select(AuditEntry).where(AuditEntry.action == "auth.login", AuditEntry.outcome == "denied")
            .order_by(AuditEntry.id))).all()]
    assert reasons[4] == "wrong_password_locked_for_source" and reasons[-1] == "locked_for_source"


async def test_failures_from_several_addresses_lock_the_account_until_an_admin_unlocks(
        client: httpx.AsyncClient, runtime: Runtime, admin_headers: dict[str, str], behind_a_proxy: None) -> None:
    assert isinstance(runtime.clock, ManualClock)
    victim = await login_headers(runtime, "dispatcher", region_code="150625")
    me = (await client.get("/v1/auth/me", headers=victim)).json()
    for i in range(10):
        await client.post("/v1/auth/token", json={"username": me["username"], "password": WRONG},
                          headers=_from(f"203.0.113.{i % 3}"))
    fresh = await client.post("/v1/auth/token", json={"username": me["username"], "password": TEST_PASSWORD},
                              headers=_from("10.1.1.1"))
    assert fresh.status_code == 401
    assert (await client.get("/v1/auth/me", headers=victim)).json()["error"]["code"] == "token_revoked"
    unlocked = await client.post(f"/v1/users/{me['id']}/unlock", headers=admin_headers)
    assert unlocked.status_code == 200, unlocked.text
    for address in ("10.1.1.1", "203.0.113.0"):
        again = await client.post("/v1/auth/token", json={"username": me["username"], "password": TEST_PASSWORD},
                                  headers=_from(address))
        assert again.status_code == 200, again.text
    async with runtime.database.unit_of_work() as s:
        audit = await s.scalar(select(AuditEntry).where(AuditEntry.action == "user.unlock"))
    assert audit is not None and audit.entity_id == me["id"] and audit.summary["account_locked"] is True
    assert audit.summary["sources"] == ["203.0.113.0", "203.0.113.1", "203.0.113.2"]


async def test_failures_older_than_the_window_are_forgotten(runtime: Runtime) -> None:
    assert isinstance(runtime.clock, ManualClock)
    await _user(runtime, "slow-typist")
    for _ in range(4):
        assert not await _attempt(runtime, "slow-typist", WRONG)
    runtime.clock.advance(31 * 60)
    assert not await _attempt(runtime, "slow-typist", WRONG)
    assert await _attempt(runtime, "slow-typist", TEST_PASSWORD)


@pytest.mark.parametrize(("address", "key"), [
    ("198.51.100.7", "198.51.100.7"),
    ("::ffff:198.51.100.7", "198.51.100.7"),
    ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
    ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
    ("unknown", "unknown"),
])
def test_an_ipv6_source_is_its_64_and_a_mapped_ipv4_its_ipv4(address: str, key: str) -> None:
    assert source_key(address) == key


async def test_the_lock_out_and_the_limit_count_an_ipv6_64_as_one_source(client: httpx.AsyncClient,
                                                                         runtime: Runtime,
                                                                         behind_a_proxy: None) -> None:
    headers = await login_headers(runtime, "dispatcher", region_code="150625")
    username = (await client.get("/v1/auth/me", headers=headers)).json()["username"]
    for i in range(5):  # a new address of the same /64 for every guess
        await client.post("/v1/auth/token", json={"username": username, "password": WRONG},
                          headers=_from(f"2001:db8:1:2::{i + 1:x}"))
    same_64 = await client.post("/v1/auth/token", json={"username": username, "password": TEST_PASSWORD},
                                headers=_from("2001:db8:1:2:ffff::9"))
    assert same_64.status_code == 401
    other_64 = await client.post("/v1/auth/token", json={"username": username, "password": TEST_PASSWORD},
                                 headers=_from("2001:db8:1:3::1"))
    assert other_64.status_code == 200, other_64.text
    # an IPv4-mapped IPv6 address is its IPv4 address
    for _ in range(5):
        await client.post("/v1/auth/token", json={"username": username, "password": WRONG},
                          headers=_from("::ffff:198.51.100.7"))
    mapped = await client.post("/v1/auth/token", json={"username": username, "password": TEST_PASSWORD},
                               headers=_from("198.51.100.7"))
    assert mapped.status_code == 401
    # the per-minute limit: 20 attempts from one /64, whichever of its addresses
    answers = [(await client.post("/v1/auth/token", json={"username": f"nobody-{i}", "password": WRONG},
                                  headers=_from(f"2001:db8:9:9::{i + 1:x}"))).status_code for i in range(21)]
    assert answers == [401] * 20 + [429]


async def test_logins_of_an_unknown_username_queue_like_those_of_a_real_one(committed_runtime: Runtime) -> None:
    """Logins of an existing account wait on each other (the row is locked across argon2); those of an unknown name
    must too, or their answer times tell the names apart. A second connection holds the username's lock: the
    unknown-user login waits on it (seen in pg_locks, not timed) and finishes once it is released."""
    rt = committed_runtime
    waiting_sql = text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                       "AND classid::bigint = :space AND objid::bigint = (hashtext(:name)::bigint & 4294967295)")

    async def waiters(name: str) -> int:
        async with rt.database.unit_of_work() as s:
            return int(await s.scalar(waiting_sql, {"space": kernel.auth.LOGIN_LOCK_SPACE, "name": name}) or 0)

    async with rt.database.unit_of_work() as holder:
        await holder.execute(select(func.pg_advisory_xact_lock(kernel.auth.LOGIN_LOCK_SPACE,
                                                                func.hashtext("nobody-at-all"))))
        login = asyncio.create_task(_attempt(rt, "nobody-at-all", WRONG))
        deadline = asyncio.get_running_loop().time() + 20
        while not login.done() and await waiters("nobody-at-all") == 0:
            assert asyncio.get_running_loop().time() < deadline, "the login never waited on the username's lock"
            await asyncio.sleep(0.05)
        assert not login.done(), "the unknown-user login finished while its username's lock was held"
    assert await asyncio.wait_for(login, 30) is False  # released: it finishes
