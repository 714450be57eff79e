"""Passwords (等保 2.0 level 3): strength rules, no reuse of the last five, expiry of staff passwords with a change
flow (kernel/auth.py `check_password_rules`, `change_password`, `password_expired`)."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select

from kernel.audit import AuditEntry
from kernel.auth import check_password_rules
from kernel.clock import ManualClock
from kernel.errors import Unprocessable
from kernel.runtime import Runtime
from tests.conftest import TEST_PASSWORD, login_headers
from vnh.demo import DEMO_PASSWORD


@pytest.mark.parametrize("weak", ["password12", "aaaaaaaaa1", "Qwerty2026", "Sh0rt!", "P@ssw0rd2026!", "alllowercase",
                                  "12345678Aa", "ZZZZzzzz99"])
def test_weak_passwords_are_refused(weak: str) -> None:
    with pytest.raises(Unprocessable) as refused:
        check_password_rules(weak, "someone")
    assert refused.value.code == "weak_password"


@pytest.mark.parametrize("strong", [TEST_PASSWORD, DEMO_PASSWORD, "Xin-ni-Zhen-7", "锡尼镇Care2026", "bright-horse-42"])
def test_passwords_of_three_classes_are_accepted(strong: str) -> None:
    check_password_rules(strong, "someone")


async def test_an_admin_cannot_create_a_login_with_a_weak_password(client: httpx.AsyncClient,
                                                                   admin_headers: dict[str, str]) -> None:
    for weak in ("password12", "aaaaaaaaa1", "Qwerty2026"):
        answer = await client.post("/v1/users", headers=admin_headers, json={
            "username": f"weak-{weak.lower()}", "password": weak, "role": "dispatcher", "region_code": "150625"})
        assert answer.status_code == 422, (weak, answer.text)
        assert answer.json()["error"]["code"] == "weak_password"


async def _login(client: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    return await client.post("/v1/auth/token", json={"username": username, "password": password})


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_changing_the_password_ends_every_session_and_refuses_the_last_five(client: httpx.AsyncClient,
                                                                                  runtime: Runtime) -> None:
    headers = await login_headers(runtime, "finance", region_code="150625")
    username = (await client.get("/v1/auth/me", headers=headers)).json()["username"]
    wrong = await client.post("/v1/auth/password", headers=headers, json={"current": "Not-It-2026", "new": "x"})
    assert wrong.status_code == 422 and wrong.json()["error"]["code"] == "wrong_current_password"
    weak = await client.post("/v1/auth/password", headers=headers, json={"current": TEST_PASSWORD,
                                                                          "new": "password12"})
    assert weak.status_code == 422 and weak.json()["error"]["code"] == "weak_password"
    history = [TEST_PASSWORD]
    for i in range(5):
        new = f"Fresh-Pass-{i}x"
        changed = await client.post("/v1/auth/password", headers=headers, json={"current": history[-1], "new": new})
        assert changed.status_code == 200, changed.text
        assert (await client.get("/v1/auth/me", headers=headers)).json()["error"]["code"] == "token_revoked"
        headers = _bearer(changed.json()["access_token"])
        assert (await client.get("/v1/auth/me", headers=headers)).status_code == 200
        history.append(new)
    for old in history:  # the current password and the five before it
        reused = await client.post("/v1/auth/password", headers=headers, json={"current": history[-1], "new": old})
        assert reused.status_code == 422, old
        assert reused.json()["error"]["code"] == "password_reused"
    assert (await _login(client, username, history[0])).status_code == 401
    assert (await _login(client, username, history[-1])).status_code == 200


async def test_an_expired_staff_password_logs_in_only_to_change_it(client: httpx.AsyncClient,
                                                                   runtime: Runtime) -> None:
    assert isinstance(runtime.clock, ManualClock)
    assert runtime.settings.auth.password_max_age.days == 90
    staff = await login_headers(runtime, "dispatcher", region_code="150625")
    family = await login_headers(runtime, "elder", elder_ids=["00000000-0000-0000-0000-000000000001"])
    staff_name = (await client.get("/v1/auth/me", headers=staff)).json()["username"]
    family_name = (await client.get("/v1/auth/me", headers=family)).json()["username"]
    runtime.clock.advance(89 * 86400)
    assert (await _login(client, staff_name, TEST_PASSWORD)).json()["password_change_required"] is False
    runtime.clock.advance(2 * 86400)
    login = await _login(client, staff_name, TEST_PASSWORD)
    assert login.status_code == 200 and login.json()["password_change_required"] is True
    limited = _bearer(login.json()["access_token"])
    refused = await client.get("/v1/orders", headers=limited)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "password_change_required"
    changed = await client.post("/v1/auth/password", headers=limited,
                                json={"current": TEST_PASSWORD, "new": "Renewed-Pass-91"})
    assert changed.status_code == 200, changed.text
    assert changed.json()["password_change_required"] is False
    assert (await client.get("/v1/orders", headers=_bearer(changed.json()["access_token"]))).status_code == 200
    # elders' and families' logins do not expire
    assert (await _login(client, family_name, TEST_PASSWORD)).json()["password_change_required"] is False


async def test_wrong_current_passwords_count_towards_the_lock_out_and_the_limit(client: httpx.AsyncClient,
                                                                                runtime: Runtime) -> None:
    """Guessing `current` is a login attempt: 5 wrong lock the account for that address (then even the right one
    is refused, with the answer of a wrong one), and the per-address limit of 20 a minute applies."""
    headers = await login_headers(runtime, "dispatcher", region_code="150625")
    username = (await client.get("/v1/auth/me", headers=headers)).json()["username"]
    for i in range(5):
        wrong = await client.post("/v1/auth/password", headers=headers,
                                  json={"current": f"Wrong-{i}-pass", "new": "N3w-Passw0rd!x"})
        assert wrong.status_code == 422 and wrong.json()["error"]["code"] == "wrong_current_password"
    right = await client.post("/v1/auth/password", headers=headers,
                              json={"current": TEST_PASSWORD, "new": "N3w-Passw0rd!x"})
    assert right.status_code == 422 and right.json()["error"]["code"] == "wrong_current_password", right.text
    assert (await _login(client, username, TEST_PASSWORD)).status_code == 401  # locked for this address
    async with runtime.database.unit_of_work() as s:
        reasons = [e.summary["reason"] for e in (await s.scalars(
            select(AuditEntry).where(AuditEntry.action == "auth.password_change", AuditEntry.outcome == "denied")
            .order_by(AuditEntry.id))).all()]
    assert reasons == ["wrong_password"] * 4 + ["wrong_password_locked_for_source", "locked_for_source"]
    answers = [(await client.post("/v1/auth/password", headers=headers,
                                  json={"current": "Wrong-x-pass", "new": "N3w-Passw0rd!x"})).status_code
               for _ in range(14)]  # 7 login calls so far this minute, 20 allowed
    assert answers == [422] * 13 + [429]


async def test_changing_the_password_in_the_console_puts_the_new_token_in_its_cookie(
        client: httpx.AsyncClient, runtime: Runtime) -> None:
    headers = await login_headers(runtime, "dispatcher", region_code="150625")
    username = (await client.get("/v1/auth/me", headers=headers)).json()["username"]
    opened = await client.post("/v1/auth/session", json={"username": username, "password": TEST_PASSWORD})
    assert opened.status_code == 200 and client.cookies.get("vnh_session")
    changed = await client.post("/v1/auth/password", json={"current": TEST_PASSWORD, "new": "Console-Pass-77"})
    assert changed.status_code == 200, changed.text
    cookie = changed.headers["set-cookie"]
    assert f"vnh_session={changed.json()['access_token']}" in cookie
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    me = await client.get("/v1/auth/me")  # the cookie alone
    assert me.status_code == 200, me.text
    # a call with the bearer header only does not set a cookie
    client.cookies.clear()
    bearer = _bearer(changed.json()["access_token"])
    again = await client.post("/v1/auth/password", headers=bearer,
                              json={"current": "Console-Pass-77", "new": "Console-Pass-78"})
    assert again.status_code == 200 and "set-cookie" not in again.headers
