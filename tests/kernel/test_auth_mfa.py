"""Second factor: TOTP (RFC 6238) enrolment and check, recovery codes; admins must enrol (`VNH_AUTH__MFA_ROLES`)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pyotp
import pytest
from sqlalchemy import select

from kernel.audit import AuditEntry
from kernel.auth import User
from kernel.clock import ManualClock
from kernel.runtime import Runtime
from kernel.settings import AuthSettings
from tests.conftest import TEST_PASSWORD, login_headers


@pytest.fixture
def default_mfa_roles(runtime: Runtime) -> Iterator[list[str]]:
    """The default roles (the suite's settings switch the requirement off; the settings object is shared)."""
    saved = runtime.settings.auth.mfa_roles
    runtime.settings.auth.mfa_roles = AuthSettings().mfa_roles
    try:
        yield runtime.settings.auth.mfa_roles
    finally:
        runtime.settings.auth.mfa_roles = saved


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _login(client: httpx.AsyncClient, username: str, otp: str | None = None) -> httpx.Response:
    body = {"username": username, "password": TEST_PASSWORD} | ({"otp": otp} if otp is not None else {})
    return await client.post("/v1/auth/token", json=body)


async def test_an_admin_must_enrol_a_second_factor_and_then_use_it(client: httpx.AsyncClient, runtime: Runtime,
                                                                   default_mfa_roles: list[str]) -> None:
    assert default_mfa_roles == ["admin"]
    assert isinstance(runtime.clock, ManualClock)
    username = (await client.get("/v1/auth/me", headers=await login_headers(runtime, "admin"))).json()["username"]
    first = await _login(client, username)
    assert first.status_code == 200 and first.json()["mfa_enrolment_required"] is True
    limited = _bearer(first.json()["access_token"])
    refused = await client.get("/v1/organizations", headers=limited)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "mfa_enrolment_required"

    enrolment = await client.post("/v1/auth/totp", headers=limited)
    assert enrolment.status_code == 200, enrolment.text
    secret = enrolment.json()["secret"]
    assert enrolment.json()["otpauth_uri"].startswith("otpauth://totp/vnh:")
    async with runtime.database.unit_of_work() as s:
        stored = await s.scalar(select(User.totp_secret_enc).where(User.username == username))
    assert stored is not None and secret not in stored  # sealed at rest
    totp = pyotp.TOTP(secret)
    wrong = await client.post("/v1/auth/totp/confirm", headers=limited, json={"code": "000000"
                              if totp.at(runtime.clock.now()) != "000000" else "111111"})
    assert wrong.status_code == 422 and wrong.json()["error"]["code"] == "invalid_otp"
    confirmed = await client.post("/v1/auth/totp/confirm", headers=limited,
                                  json={"code": totp.at(runtime.clock.now())})
    assert confirmed.status_code == 200, confirmed.text
    recovery = confirmed.json()["recovery_codes"]
    assert len(recovery) == 10 and len(set(recovery)) == 10
    full = _bearer(confirmed.json()["token"]["access_token"])
    assert (await client.get("/v1/organizations", headers=full)).status_code == 200

    missing = await _login(client, username)
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "mfa_required"
    runtime.clock.advance(60)
    guessed = await _login(client, username, "123456" if totp.at(runtime.clock.now()) != "123456" else "654321")
    assert guessed.status_code == 401 and guessed.json()["error"]["code"] == "invalid_credentials"
    good = await _login(client, username, totp.at(runtime.clock.now()))
    assert good.status_code == 200 and good.json()["mfa_enrolment_required"] is False
    assert (await client.get("/v1/organizations", headers=_bearer(good.json()["access_token"]))).status_code == 200
    # a recovery code works once
    assert (await _login(client, username, recovery[0])).status_code == 200
    assert (await _login(client, username, recovery[0])).status_code == 401
    again = await client.post("/v1/auth/totp", headers=full, json={"password": TEST_PASSWORD})
    assert again.status_code == 409 and again.json()["error"]["code"] == "mfa_already_enrolled"


async def test_other_staff_may_enrol_and_roles_outside_the_setting_need_not(client: httpx.AsyncClient,
                                                                            runtime: Runtime,
                                                                            default_mfa_roles: list[str]) -> None:
    headers = await login_headers(runtime, "dispatcher", region_code="150625")
    username = (await client.get("/v1/auth/me", headers=headers)).json()["username"]
    plain = await _login(client, username)
    assert plain.status_code == 200 and plain.json()["mfa_enrolment_required"] is False
    secret = (await client.post("/v1/auth/totp", headers=headers, json={"password": TEST_PASSWORD})).json()["secret"]
    code = pyotp.TOTP(secret).at(runtime.clock.now())
    assert (await client.post("/v1/auth/totp/confirm", headers=headers, json={"code": code})).status_code == 200
    assert (await _login(client, username)).json()["error"]["code"] == "mfa_required"
    assert isinstance(runtime.clock, ManualClock)
    runtime.clock.advance(30)  # the confirmation used this step's code
    assert (await _login(client, username, pyotp.TOTP(secret).at(runtime.clock.now()))).status_code == 200
    # every staff role, by setting
    runtime.settings.auth.mfa_roles = ["admin", "dispatcher", "finance"]
    finance = await login_headers(runtime, "finance", region_code="150625")
    name = (await client.get("/v1/auth/me", headers=finance)).json()["username"]
    assert (await _login(client, name)).json()["mfa_enrolment_required"] is True
    family = await login_headers(runtime, "elder", elder_ids=[uuid.uuid4()])
    name = (await client.get("/v1/auth/me", headers=family)).json()["username"]
    assert (await _login(client, name)).json()["mfa_enrolment_required"] is False


async def _enrolled_admin(client: httpx.AsyncClient, runtime: Runtime) -> tuple[str, pyotp.TOTP]:
    headers = await login_headers(runtime, "admin")
    username = (await client.get("/v1/auth/me", headers=headers)).json()["username"]
    secret = (await client.post("/v1/auth/totp", headers=headers, json={"password": TEST_PASSWORD})).json()["secret"]
    totp = pyotp.TOTP(secret)
    confirmed = await client.post("/v1/auth/totp/confirm", headers=headers, json={"code": totp.at(runtime.clock.now())})
    assert confirmed.status_code == 200, confirmed.text
    return username, totp


async def test_a_totp_code_is_accepted_once(client: httpx.AsyncClient, runtime: Runtime) -> None:
    """RFC 6238 §5.2: the code of a time step logs in once; a later step's code logs in again; a code of the step
    before (drift) is refused once a later step was used."""
    assert isinstance(runtime.clock, ManualClock)
    username, totp = await _enrolled_admin(client, runtime)
    # the confirmation's code was used: it does not log in
    replayed = await _login(client, username, totp.at(runtime.clock.now()))
    assert replayed.status_code == 401 and replayed.json()["error"]["code"] == "invalid_credentials"
    runtime.clock.advance(30)
    code = totp.at(runtime.clock.now())
    assert (await _login(client, username, code)).status_code == 200
    again = await _login(client, username, code)
    assert again.status_code == 401 and again.json()["error"]["code"] == "invalid_credentials"
    runtime.clock.advance(30)
    earlier = totp.at(runtime.clock.now(), counter_offset=-1)  # still inside the drift window, but already used
    assert earlier == code
    assert (await _login(client, username, earlier)).status_code == 401
    assert (await _login(client, username, totp.at(runtime.clock.now()))).status_code == 200
    async with runtime.database.unit_of_work() as s:
        reasons = [e.summary["reason"] for e in (await s.scalars(
            select(AuditEntry).where(AuditEntry.action == "auth.login", AuditEntry.outcome == "denied")
            .order_by(AuditEntry.id))).all()]
    assert reasons.count("reused_otp") == 3


async def test_a_confirmation_code_is_accepted_once(client: httpx.AsyncClient, runtime: Runtime) -> None:
    """The enrolment records the step of the code that confirmed it (which then cannot log in)."""
    headers = await login_headers(runtime, "dispatcher", region_code="150625")
    secret = (await client.post("/v1/auth/totp", headers=headers, json={"password": TEST_PASSWORD})).json()["secret"]
    async with runtime.database.unit_of_work() as s:
        user = await s.scalar(select(User).where(User.totp_secret_enc.is_not(None)))
        assert user is not None and user.totp_last_step is None
    code = pyotp.TOTP(secret).at(runtime.clock.now())
    assert (await client.post("/v1/auth/totp/confirm", headers=headers, json={"code": code})).status_code == 200
    async with runtime.database.unit_of_work() as s:
        step = await s.scalar(select(User.totp_last_step).where(User.id == user.id))
    assert step == pyotp.TOTP(secret).timecode(runtime.clock.now())


async def test_enrolling_needs_the_password_counted_like_a_login(client: httpx.AsyncClient,
                                                                 runtime: Runtime) -> None:
    """A stolen token alone cannot bind an authenticator: `password` is required and guessing it locks out."""
    headers = await login_headers(runtime, "dispatcher", region_code="150625")
    username = (await client.get("/v1/auth/me", headers=headers)).json()["username"]
    missing = await client.post("/v1/auth/totp", headers=headers)
    assert missing.status_code == 422 and missing.json()["error"]["code"] == "password_required"
    for i in range(5):
        wrong = await client.post("/v1/auth/totp", headers=headers, json={"password": f"Wrong-{i}-pass"})
        assert wrong.status_code == 422 and wrong.json()["error"]["code"] == "wrong_password"
    locked = await client.post("/v1/auth/totp", headers=headers, json={"password": TEST_PASSWORD})
    assert locked.status_code == 422 and locked.json()["error"]["code"] == "wrong_password"
    assert (await _login(client, username)).status_code == 401  # this address is locked out of the account
    async with runtime.database.unit_of_work() as s:
        user = await s.scalar(select(User).where(User.username == username))
        assert user is not None and user.totp_secret_enc is None


async def test_the_enrolment_token_of_a_fresh_login_enrols_without_the_password(
        client: httpx.AsyncClient, runtime: Runtime, default_mfa_roles: list[str]) -> None:
    """The enrolment-limited token proves the password only for 10 minutes after its login."""
    assert isinstance(runtime.clock, ManualClock)
    username = (await client.get("/v1/auth/me", headers=await login_headers(runtime, "admin"))).json()["username"]
    limited = _bearer((await _login(client, username)).json()["access_token"])
    runtime.clock.advance(11 * 60)
    stale = await client.post("/v1/auth/totp", headers=limited)
    assert stale.status_code == 422 and stale.json()["error"]["code"] == "password_required"
    assert (await client.post("/v1/auth/totp", headers=limited, json={"password": TEST_PASSWORD})).status_code == 200
    fresh = _bearer((await _login(client, username)).json()["access_token"])
    assert (await client.post("/v1/auth/totp", headers=fresh)).status_code == 200


async def test_an_admin_resets_a_second_factor_and_the_users_sessions_end(
        client: httpx.AsyncClient, runtime: Runtime, admin_headers: dict[str, str]) -> None:
    assert isinstance(runtime.clock, ManualClock)
    headers = await login_headers(runtime, "dispatcher", region_code="150625")
    me = (await client.get("/v1/auth/me", headers=headers)).json()
    secret = (await client.post("/v1/auth/totp", headers=headers, json={"password": TEST_PASSWORD})).json()["secret"]
    code = pyotp.TOTP(secret).at(runtime.clock.now())
    assert (await client.post("/v1/auth/totp/confirm", headers=headers, json={"code": code})).status_code == 200
    assert (await _login(client, me["username"])).json()["error"]["code"] == "mfa_required"
    refused = await client.delete(f"/v1/users/{me['id']}/totp", headers=headers)
    assert refused.status_code == 403
    reset = await client.delete(f"/v1/users/{me['id']}/totp", headers=admin_headers)
    assert reset.status_code == 204, reset.text
    assert (await client.get("/v1/auth/me", headers=headers)).json()["error"]["code"] == "token_revoked"
    fresh = await _login(client, me["username"])
    assert fresh.status_code == 200, fresh.text
    async with runtime.database.unit_of_work() as s:
        user = await s.scalar(select(User).where(User.id == uuid.UUID(me["id"])))
        audit = await s.scalar(select(AuditEntry).where(AuditEntry.action == "user.mfa_reset"))
    assert user is not None and user.totp_secret_enc is None and user.totp_enabled_at is None
    assert user.recovery_codes == [] and user.totp_last_step is None
    assert audit is not None and audit.entity_id == me["id"] and audit.summary["was_enrolled"] is True
    # the user enrols again
    again = _bearer(fresh.json()["access_token"])
    assert (await client.post("/v1/auth/totp", headers=again, json={"password": TEST_PASSWORD})).status_code == 200
    missing = await client.delete(f"/v1/users/{uuid.uuid4()}/totp", headers=admin_headers)
    assert missing.status_code == 404
