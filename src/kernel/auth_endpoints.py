"""Login (token and console session cookie) and account creation."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from kernel import sessions
from kernel.audit import record_audit
from kernel.auth import (
    LOGIN_REFUSAL,
    LoginFailed,
    PasswordChangeRefused,
    PasswordRequired,
    TokenClaims,
    User,
    WrongPassword,
    authenticate,
    begin_totp,
    change_password,
    confirm_totp,
    log_out_everywhere,
    password_expired,
    source_key,
)
from kernel.authz import Access, Role
from kernel.errors import TooManyRequests, Unauthenticated
from kernel.fields import CountyCode
from kernel.http import RuntimeDep, authorize
from kernel.proxies import client_address
from kernel.sessions import publish_revocations

router = APIRouter(tags=["auth"])


class Credentials(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=200)
    # the second factor, for accounts that enrolled one: a TOTP code or an unused recovery code
    otp: str | None = Field(default=None, max_length=32)


class TokenOut(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105
    expires_in: int
    role: Role
    # the password expired (staff, `VNH_AUTH__PASSWORD_MAX_AGE`): this token only changes it (POST /v1/auth/password)
    password_change_required: bool = False
    # the role must use a second factor (`VNH_AUTH__MFA_ROLES`) and none is enrolled: this token only enrols one
    mfa_enrolment_required: bool = False


class TotpBegin(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # the account's password; may be left out only with the enrolment-limited token of a login just made
    password: str | None = Field(default=None, min_length=1, max_length=200)


class TotpEnrolment(BaseModel):
    secret: str
    otpauth_uri: str


class TotpCode(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str = Field(min_length=6, max_length=8)


class TotpEnabled(BaseModel):
    recovery_codes: list[str]  # shown once; each logs in once in place of a code
    token: TokenOut


class PasswordChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    current: str = Field(min_length=1, max_length=200)
    new: str = Field(min_length=1, max_length=200)


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=3, max_length=64)
    password: str = Field(min_length=1, max_length=200)
    role: Role
    organization_id: str | None = None
    region_code: CountyCode | None = None
    elder_ids: list[str] = Field(default_factory=list, max_length=20)


class UserOut(BaseModel):
    id: str
    username: str
    role: Role
    organization_id: str | None
    region_code: str | None
    elder_ids: list[str]
    caregiver_id: str | None = None


LOGIN_ATTEMPTS_PER_MINUTE = 20


async def _throttle(runtime: RuntimeDep, request: Request) -> str:
    """At most 20 login attempts a minute from one source, whatever the usernames (password spraying); the
    per-account lock-out is in `authenticate`. A fixed window in Redis, shared by all instances. Answers the source
    (`source_key`: an IPv6 address's /64) that the lock-out counts against too; every password check of a signed-in
    user (password change, second-factor enrolment) goes through here as well."""
    client = source_key(client_address(request))
    minute = int(runtime.clock.now().timestamp() // 60)
    key = runtime.redis_key("login", client, str(minute))
    async with runtime.redis.pipeline(transaction=True) as pipe:
        pipe.incr(key)
        pipe.expire(key, 120)
        count, _ = await pipe.execute()
    if int(count) > LOGIN_ATTEMPTS_PER_MINUTE:
        raise TooManyRequests("too many login attempts from this address; wait a minute", code="login_rate_limited")
    return client


async def _login(runtime: RuntimeDep, credentials: Credentials, request: Request) -> TokenOut:
    source = await _throttle(runtime, request)
    # Its own unit of work: a failed attempt's count and audit row must commit even though we refuse.
    async with runtime.database.unit_of_work() as session:
        user = await authenticate(session, runtime.clock, credentials.username, credentials.password, source=source,
                                  otp=credentials.otp, cipher=runtime.cipher)
        token = _token(runtime, user) if user else None
        refusal = session.info.get(LOGIN_REFUSAL)
    await publish_revocations(runtime, session)  # a lock-out ends the account's sessions
    if token is None:
        if refusal == "mfa_required":
            raise Unauthenticated("this account needs its second factor: send `otp`", code="mfa_required")
        raise LoginFailed("invalid username or password")
    return token


def _token(runtime: RuntimeDep, user: User) -> TokenOut:
    """A token for the user, limited to changing the password (expired) or enrolling a second factor (the role
    needs one and has none)."""
    auth = runtime.settings.auth
    limited_to: str | None = None
    if password_expired(user, runtime.clock.now(), auth.password_max_age):
        limited_to = "password"
    elif user.role in auth.mfa_roles and user.totp_enabled_at is None:
        limited_to = "mfa"
    return TokenOut(
        access_token=runtime.tokens.issue(user.principal(), generation=user.token_generation, limited_to=limited_to),
        expires_in=int(runtime.tokens.ttl.total_seconds()), role=user.principal().role,
        password_change_required=limited_to == "password", mfa_enrolment_required=limited_to == "mfa")


@router.post("/v1/auth/token", response_model=TokenOut)
async def issue_token(credentials: Credentials, runtime: RuntimeDep, request: Request) -> TokenOut:
    return await _login(runtime, credentials, request)


def _set_session_cookie(runtime: RuntimeDep, response: Response, token: TokenOut) -> None:
    auth = runtime.settings.auth
    response.set_cookie(auth.session_cookie, token.access_token, max_age=token.expires_in, httponly=True,
                        samesite="strict", secure=auth.session_cookie_secure, path="/")


def _replace_session_cookie(runtime: RuntimeDep, request: Request, response: Response, token: TokenOut) -> None:
    """A call made with the console's cookie that answers a new token puts it in the cookie, so the console does not
    go on with the token the call revoked (password change) or limited (enrolment)."""
    if runtime.settings.auth.session_cookie in request.cookies:
        _set_session_cookie(runtime, response, token)


@router.post("/v1/auth/session", response_model=TokenOut)
async def open_session(credentials: Credentials, runtime: RuntimeDep, response: Response,
                       request: Request) -> TokenOut:
    """Sets the console's HttpOnly, SameSite=Strict session cookie (EventSource cannot send headers)."""
    token = await _login(runtime, credentials, request)
    _set_session_cookie(runtime, response, token)
    return token


@router.post("/v1/auth/password", response_model=TokenOut)
async def change_own_password(data: PasswordChange, runtime: RuntimeDep, request: Request, response: Response,
                              access: Annotated[Access, Depends(authorize("auth.password"))]) -> TokenOut:
    """Change one's own password (the only call an expired password's token may make). Every session of the user
    ends; the answer carries a new token (and sets the console's cookie to it when the call came with the cookie).
    The current password is checked like a login: the same per-address limit, a wrong one counts towards the
    lock-out, and while locked out the answer is that of a wrong one."""
    source = await _throttle(runtime, request)
    async with runtime.database.unit_of_work() as session:
        user = await change_password(session, runtime.clock, access.principal, data.current, data.new, source=source)
        token = _token(runtime, user) if user else None
    await publish_revocations(runtime, session)  # a lock-out ends the account's sessions
    if token is None:
        raise PasswordChangeRefused("the current password is wrong", code="wrong_current_password")
    _replace_session_cookie(runtime, request, response, token)
    return token


# the enrolment-limited token of a login this recent enrols without the password again: that login proved it
ENROL_WITHOUT_PASSWORD_WITHIN = timedelta(minutes=10)


def _password_just_proved(runtime: RuntimeDep, claims: TokenClaims) -> bool:
    age = runtime.clock.now().timestamp() - claims.issued_at
    return claims.limited_to == "mfa" and age <= ENROL_WITHOUT_PASSWORD_WITHIN.total_seconds()


@router.post("/v1/auth/totp", response_model=TotpEnrolment)
async def begin_totp_enrolment(runtime: RuntimeDep, request: Request,
                               access: Annotated[Access, Depends(authorize("auth.mfa"))],
                               data: TotpBegin | None = None) -> TotpEnrolment:
    """Start enrolling a TOTP authenticator (RFC 6238): the secret and its otpauth URI, shown once. Needs
    `{"password"}` (checked like a login: limited per address, counted towards the lock-out), except with the
    enrolment-limited token of a login made in the last 10 minutes."""
    password = data.password if data is not None else None
    if password is None and not _password_just_proved(runtime, request.state.token):
        raise PasswordRequired("enrolling a second factor needs the account's password: send `password`")
    source = await _throttle(runtime, request) if password is not None else "unknown"
    async with runtime.database.unit_of_work() as session:
        begun = await begin_totp(session, runtime.clock, runtime.cipher, access.principal, password=password,
                                 source=source)
    await publish_revocations(runtime, session)  # a lock-out ends the account's sessions
    if begun is None:
        raise WrongPassword("the password is wrong")
    secret, uri = begun
    return TotpEnrolment(secret=secret, otpauth_uri=uri)


@router.post("/v1/auth/totp/confirm", response_model=TotpEnabled)
async def confirm_totp_enrolment(data: TotpCode, runtime: RuntimeDep, request: Request, response: Response,
                                 access: Annotated[Access, Depends(authorize("auth.mfa"))]) -> TotpEnabled:
    """Confirm with a code from the authenticator: the second factor is on; recovery codes and a full token (also
    in the console's cookie when the call came with it)."""
    async with runtime.database.unit_of_work() as session:
        user, codes = await confirm_totp(session, runtime.clock, runtime.cipher, access.principal, data.code)
        token = _token(runtime, user)
    _replace_session_cookie(runtime, request, response, token)
    return TotpEnabled(recovery_codes=codes, token=token)


class LogoutRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    everywhere: bool = False  # also end every other session of this user


@router.post("/v1/auth/logout", status_code=204)
async def log_out(runtime: RuntimeDep, request: Request,
                  access: Annotated[Access, Depends(authorize("auth.logout"))],
                  body: LogoutRequest | None = None) -> Response:
    """Ends this session server-side (the token is refused until it expires) and clears the console cookie;
    `everywhere` ends every session of the user."""
    claims: TokenClaims = request.state.token
    await sessions.log_out(runtime, claims)
    if body is not None and body.everywhere:
        async with runtime.database.unit_of_work() as session:
            await log_out_everywhere(session, runtime.clock, access.principal)
        await sessions.publish_revocations(runtime, session)
    else:
        async with runtime.database.unit_of_work() as session:
            await record_audit(session, runtime.clock, access.principal, "auth.logout", "user",
                               access.principal.user_id, {"everywhere": False})
    auth = runtime.settings.auth
    response = Response(status_code=204)
    response.delete_cookie(auth.session_cookie, path="/", httponly=True, samesite="strict",
                           secure=auth.session_cookie_secure)
    return response


@router.get("/v1/auth/me", response_model=UserOut)
async def who_am_i(access: Annotated[Access, Depends(authorize("auth.me"))]) -> UserOut:
    p = access.principal
    return UserOut(id=p.user_id, username=p.username, role=p.role, organization_id=p.organization_id,
                   region_code=p.region_code, elder_ids=sorted(p.elder_ids), caregiver_id=p.caregiver_id)
