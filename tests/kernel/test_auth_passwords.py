"""Passwords (等保 2.0 level 3): strength rules, no reuse of the last five, expiry of staff passwords with a change
flow (kernel/auth.py `check_password_rules`, `change_password`, `password_expired`)."""

from __future__ import annotations

import httpx
import pytest

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
