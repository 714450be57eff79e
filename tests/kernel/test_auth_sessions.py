"""A token is only as good as its user: deactivation, lock-out, deletion and logout end it at once; staff sessions
end after the idle timeout (kernel/sessions.py, checked in kernel/http.py `current_claims`)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from kernel.clock import ManualClock
from kernel.runtime import Runtime
from kernel.settings import AuthSettings
from tests.conftest import TEST_PASSWORD, login_headers
from tests.factories import caregiver_headers, create_caregiver, create_organization


async def _me(client: httpx.AsyncClient, headers: dict[str, str]) -> httpx.Response:
    return await client.get("/v1/auth/me", headers=headers)


async def _user_id(client: httpx.AsyncClient, headers: dict[str, str]) -> str:
    me = await _me(client, headers)
    assert me.status_code == 200, me.text
    return str(me.json()["id"])


def _refused(response: httpx.Response, code: str = "token_revoked") -> None:
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == code


async def test_a_deactivated_users_token_is_refused_at_once(client: httpx.AsyncClient, runtime: Runtime,
                                                            admin_headers: dict[str, str]) -> None:
    headers = await login_headers(runtime, "dispatcher", region_code="150625")
    user_id = await _user_id(client, headers)  # the generation is cached in Redis by now
    answer = await client.patch(f"/v1/users/{user_id}", json={"active": False}, headers=admin_headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["active"] is False
    _refused(await _me(client, headers))
    _refused(await client.get("/v1/orders", headers=headers))
    # reactivated: the old token stays dead, a new login works
    assert (await client.patch(f"/v1/users/{user_id}", json={"active": True}, headers=admin_headers)).status_code == 200
    _refused(await _me(client, headers))
    username = answer.json()["username"]
    login = await client.post("/v1/auth/token", json={"username": username, "password": TEST_PASSWORD})
    assert login.status_code == 200, login.text
    assert (await _me(client, {"Authorization": f"Bearer {login.json()['access_token']}"})).status_code == 200


async def test_a_deleted_users_token_creates_no_order(world: Any, admin_headers: dict[str, str]) -> None:
    client = world.client
    user_id = await _user_id(client, world.family)
    deleted = await client.delete(f"/v1/users/{user_id}", headers=admin_headers)
    assert deleted.status_code == 204, deleted.text
    order = await client.post("/v1/orders", headers=world.family, json={
        "elder_id": str(world.elder.id), "service_code": "daily_care", "channel": "app"})
    _refused(order)
    assert (await client.delete(f"/v1/users/{user_id}", headers=admin_headers)).status_code == 404


async def test_a_row_removed_behind_the_services_back_ends_its_tokens(client: httpx.AsyncClient,
                                                                      runtime: Runtime) -> None:
    """No Redis entry (evicted, restarted): the user row answers, and a missing or inactive row refuses."""
    headers = await login_headers(runtime, "admin")
    other = await login_headers(runtime, "finance", region_code="150625")
    user_id, other_id = await _user_id(client, headers), await _user_id(client, other)
    await runtime.redis.delete(*[k async for k in runtime.redis.scan_iter(match=runtime.redis_key("auth", "*"))])
    async with runtime.database.unit_of_work() as s:
        await s.execute(text("DELETE FROM users WHERE id = :id"), {"id": uuid.UUID(user_id)})
        await s.execute(text("UPDATE users SET active = false WHERE id = :id"), {"id": uuid.UUID(other_id)})
    _refused(await _me(client, headers))
    _refused(await _me(client, other))


async def test_a_locked_out_account_loses_its_sessions(client: httpx.AsyncClient, runtime: Runtime) -> None:
    """Locked for everyone (failures from several addresses, tests/kernel/test_auth_lockout.py)."""
    from kernel.auth import authenticate
    from kernel.sessions import publish_revocations

    headers = await login_headers(runtime, "admin")
    username = (await _me(client, headers)).json()["username"]
    for i in range(10):
        async with runtime.database.unit_of_work() as s:
            assert await authenticate(s, runtime.clock, username, "wrong-Pass-123", source=f"203.0.113.{i % 3}") \
                is None
        await publish_revocations(runtime, s)
    _refused(await _me(client, headers))


async def test_caregiver_tokens_follow_their_login(world: Any, admin_headers: dict[str, str]) -> None:
    headers = await caregiver_headers(world.rt, world.caregivers[0])
    assert (await world.client.get("/v1/caregivers/me/offers", headers=headers)).status_code == 200
    user_id = await _user_id(world.client, headers)
    assert (await world.client.patch(f"/v1/users/{user_id}", json={"active": False},
                                     headers=admin_headers)).status_code == 200
    _refused(await world.client.get("/v1/caregivers/me/offers", headers=headers))


async def test_logout_revokes_the_token_and_clears_the_console_cookie(client: httpx.AsyncClient,
                                                                      runtime: Runtime) -> None:
    username = (await _me(client, await login_headers(runtime, "dispatcher", region_code="150625"))).json()["username"]
    opened = await client.post("/v1/auth/session", json={"username": username, "password": TEST_PASSWORD})
    assert opened.status_code == 200
    cookie = opened.cookies[runtime.settings.auth.session_cookie]
    token = opened.json()["access_token"]
    bearer = {"Authorization": f"Bearer {token}"}
    second = (await client.post("/v1/auth/token", json={"username": username, "password": TEST_PASSWORD})).json()
    assert (await _me(client, bearer)).status_code == 200
    out = await client.post("/v1/auth/logout", headers=bearer)
    assert out.status_code == 204, out.text
    assert 'vnh_session=""' in out.headers["set-cookie"] and "Max-Age=0" in out.headers["set-cookie"]
    _refused(await _me(client, bearer))
    client.cookies.clear()
    client.cookies.set(runtime.settings.auth.session_cookie, cookie)
    _refused(await client.get("/v1/auth/me"))
    client.cookies.clear()
    # only that session ended
    other = {"Authorization": f"Bearer {second['access_token']}"}
    assert (await _me(client, other)).status_code == 200
    everywhere = await client.post("/v1/auth/logout", headers=other, json={"everywhere": True})
    assert everywhere.status_code == 204
    _refused(await _me(client, other))


async def test_logout_everywhere_ends_every_session(client: httpx.AsyncClient, runtime: Runtime) -> None:
    username = (await _me(client, await login_headers(runtime, "auditor", region_code="150625"))).json()["username"]
    tokens = [(await client.post("/v1/auth/token", json={"username": username, "password": TEST_PASSWORD})
               ).json()["access_token"] for _ in range(2)]
    first, second = ({"Authorization": f"Bearer {t}"} for t in tokens)
    assert (await client.post("/v1/auth/logout", headers=first, json={"everywhere": True})).status_code == 204
    _refused(await _me(client, second))
    _refused(await _me(client, first))


@pytest.fixture
def idle_timeout(runtime: Runtime) -> Iterator[timedelta]:
    """The default idle timeout (the suite's settings switch it off; the settings object is shared)."""
    saved = runtime.settings.auth.idle_timeout
    runtime.settings.auth.idle_timeout = AuthSettings().idle_timeout
    try:
        yield runtime.settings.auth.idle_timeout
    finally:
        runtime.settings.auth.idle_timeout = saved


async def test_staff_sessions_end_after_the_idle_timeout(client: httpx.AsyncClient, runtime: Runtime,
                                                         idle_timeout: timedelta) -> None:
    assert isinstance(runtime.clock, ManualClock)
    idle = idle_timeout.total_seconds()
    assert idle == 30 * 60
    busy = await login_headers(runtime, "dispatcher", region_code="150625")
    quiet = await login_headers(runtime, "finance", region_code="150625")
    for _ in range(4):  # used every 20 minutes: alive well past 30 minutes after it was issued
        runtime.clock.advance(20 * 60)
        assert (await _me(client, busy)).status_code == 200
    _refused(await _me(client, quiet), "session_idle")
    runtime.clock.advance(idle + 1)
    _refused(await _me(client, busy), "session_idle")


async def test_elder_and_caregiver_apps_have_no_idle_timeout(client: httpx.AsyncClient, runtime: Runtime,
                                                              idle_timeout: timedelta) -> None:
    assert isinstance(runtime.clock, ManualClock)
    org = await create_organization(runtime)
    caregiver = await caregiver_headers(runtime, await create_caregiver(runtime, org))
    family = await login_headers(runtime, "elder", elder_ids=[uuid.uuid4()])
    runtime.clock.advance(runtime.tokens.ttl.total_seconds() - 60)
    assert (await _me(client, caregiver)).status_code == 200
    assert (await _me(client, family)).status_code == 200
