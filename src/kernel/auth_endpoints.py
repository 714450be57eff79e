"""Login (token and console session cookie) and account creation."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from kernel import sessions
from kernel.audit import record_audit
from kernel.auth import (
    LoginFailed,
    TokenClaims,
    authenticate,
    change_password,
    log_out_everywhere,
    password_expired,
)
from kernel.authz import Access, Principal, Role
from kernel.errors import TooManyRequests
from kernel.fields import CountyCode
from kernel.http import RuntimeDep, authorize
from kernel.proxies import client_address
from kernel.sessions import publish_revocations

router = APIRouter(tags=["auth"])


class Credentials(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=200)


class TokenOut(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105
    expires_in: int
    role: Role
    # the password expired (staff, `VNH_AUTH__PASSWORD_MAX_AGE`): this token only changes it (POST /v1/auth/password)
    password_change_required: bool = False


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
    """At most 20 login attempts a minute from one address, whatever the usernames (password spraying); the
    per-account lock-out is in `authenticate`. A fixed window in Redis, shared by all instances."""
    client = await client_address(request, runtime)
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
        user = await authenticate(session, runtime.clock, credentials.username, credentials.password, source=source)
        principal = user.principal() if user else None
        generation = user.token_generation if user else 0
        expired = user is not None and password_expired(user, runtime.clock.now(),
                                                        runtime.settings.auth.password_max_age)
    await publish_revocations(runtime, session)  # a lock-out ends the account's sessions
    if principal is None:
        raise LoginFailed("invalid username or password")
    return _token(runtime, principal, generation, limited_to="password" if expired else None)


def _token(runtime: RuntimeDep, principal: Principal, generation: int, limited_to: str | None = None) -> TokenOut:
    return TokenOut(access_token=runtime.tokens.issue(principal, generation=generation, limited_to=limited_to),
                    expires_in=int(runtime.tokens.ttl.total_seconds()), role=principal.role,
                    password_change_required=limited_to == "password")


@router.post("/v1/auth/token", response_model=TokenOut)
async def issue_token(credentials: Credentials, runtime: RuntimeDep, request: Request) -> TokenOut:
    return await _login(runtime, credentials, request)


@router.post("/v1/auth/session", response_model=TokenOut)
async def open_session(credentials: Credentials, runtime: RuntimeDep, response: Response,
                       request: Request) -> TokenOut:
    """Sets the console's HttpOnly, SameSite=Strict session cookie (EventSource cannot send headers)."""
    token = await _login(runtime, credentials, request)
    auth = runtime.settings.auth
    response.set_cookie(auth.session_cookie, token.access_token, max_age=token.expires_in, httponly=True,
                        samesite="strict", secure=auth.session_cookie_secure, path="/")
    return token


@router.post("/v1/auth/password", response_model=TokenOut)
async def change_own_password(data: PasswordChange, runtime: RuntimeDep,
                              access: Annotated[Access, Depends(authorize("auth.password"))]) -> TokenOut:
    """Change one's own password (the only call an expired password's token may make). Every session of the user
    ends; the answer carries a new token."""
    async with runtime.database.unit_of_work() as session:
        user = await change_password(session, runtime.clock, access.principal, data.current, data.new)
        principal, generation = user.principal(), user.token_generation
    await publish_revocations(runtime, session)
    return _token(runtime, principal, generation)


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
