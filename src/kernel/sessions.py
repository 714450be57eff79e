"""Whether a signed token may still be used: the user still holds it, it was not logged out, it is not idle.

Checked on every authenticated request (`kernel.http.current_principal`), in one Redis round trip:

- `auth:gen:<user>`: the user's current token generation (`users.token_generation`). Deactivation, lock-out,
  deletion, a password change and "log out everywhere" bump it (`kernel.auth.revoke_tokens`); a token whose `gen` is
  older is refused. When Redis lacks the key (evicted, restarted, never read) the user row answers and is cached for
  `GENERATION_CACHE_S`; a missing, inactive or deleted row caches `x` (no token valid). Writers publish the new
  generation after their commit (`publish_revocations`), never lowering what Redis holds.
- `auth:revoked:<jti>`: a logged-out token, until its expiry.
- `auth:seen:<jti>`: when a staff token was last used (epoch seconds, the injected clock); absent means its issue
  time. Refreshed at most once per `_touch_step` so a busy session is not a Redis write per request.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from kernel.auth import REVOKED_TOKENS, TokenClaims, User
from kernel.errors import Unauthenticated
from kernel.runtime import Runtime

GENERATION_CACHE_S = 300
NO_TOKEN_VALID = b"x"
# roles whose sessions are not cut by the idle timeout: elders' and families' apps, and caregivers' apps held
# through a whole shift, stay logged in for the token's lifetime
IDLE_EXEMPT_ROLES = frozenset({"elder", "caregiver"})

# set the generation unless Redis already holds a newer one; `x` (no row) is kept only for rows that are gone
_PUBLISH = """
local current = redis.call('GET', KEYS[1])
if (not current) or current == 'x' or tonumber(current) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
end
return 1
"""


class TokenRevoked(Unauthenticated):
    code = "token_revoked"


def _generation_key(runtime: Runtime, user_id: str) -> str:
    return runtime.redis_key("auth", "gen", user_id)


def _revoked_key(runtime: Runtime, jti: str) -> str:
    return runtime.redis_key("auth", "revoked", jti)


def _seen_key(runtime: Runtime, jti: str) -> str:
    return runtime.redis_key("auth", "seen", jti)


def _touch_step(idle: timedelta) -> float:
    return min(60.0, idle.total_seconds() / 30)


async def _generation_from_database(runtime: Runtime, user_id: str) -> bytes:
    try:
        uid = uuid.UUID(user_id)
    except ValueError:
        return NO_TOKEN_VALID
    async with runtime.database.unit_of_work() as session:
        row = (await session.execute(
            select(User.active, User.deleted_at, User.token_generation).where(User.id == uid))).first()
    if row is None or not row.active or row.deleted_at is not None:
        return NO_TOKEN_VALID
    return str(row.token_generation).encode()


async def _refuse_revoked(runtime: Runtime, claims: TokenClaims, current: bytes | str | None,
                          revoked: bytes | str | None) -> None:
    if revoked is not None:
        raise TokenRevoked("this session was logged out")
    if current is None:
        current = await _generation_from_database(runtime, claims.principal.user_id)
        await runtime.redis.set(_generation_key(runtime, claims.principal.user_id), current,
                                ex=GENERATION_CACHE_S, nx=True)
    if current == NO_TOKEN_VALID or claims.generation < int(current):
        raise TokenRevoked("this token was revoked: log in again")


async def still_held(runtime: Runtime, claims: TokenClaims) -> bool:
    """Whether a long-lived connection (an event stream) opened with this token may go on: not logged out, not
    revoked, its user still active. No idle check: a stream being watched is the session in use."""
    current, revoked = await runtime.redis.mget(_generation_key(runtime, claims.principal.user_id),
                                                _revoked_key(runtime, claims.jti))
    try:
        await _refuse_revoked(runtime, claims, current, revoked)
    except TokenRevoked:
        return False
    return True


async def check_session(runtime: Runtime, claims: TokenClaims) -> None:
    """Refuse a token whose user was deactivated, locked, deleted or revoked, that was logged out, or (staff) that
    has been idle longer than `auth.idle_timeout`."""
    user_id = claims.principal.user_id
    gen_key, revoked_key, seen_key = (_generation_key(runtime, user_id), _revoked_key(runtime, claims.jti),
                                      _seen_key(runtime, claims.jti))
    current, revoked, seen = await runtime.redis.mget(gen_key, revoked_key, seen_key)
    await _refuse_revoked(runtime, claims, current, revoked)
    if claims.principal.role in IDLE_EXEMPT_ROLES:
        return
    idle = runtime.settings.auth.idle_timeout
    now = runtime.clock.now().timestamp()
    last = float(seen) if seen is not None else float(claims.issued_at)
    if now - last > idle.total_seconds():
        raise Unauthenticated("the session was idle too long: log in again", code="session_idle")
    if now - last >= _touch_step(idle):
        await runtime.redis.set(seen_key, str(int(now)), ex=_seconds_left(runtime, claims))


def _seconds_left(runtime: Runtime, claims: TokenClaims) -> int:
    return max(1, int(claims.expires_at - runtime.clock.now().timestamp()) + 60)


async def log_out(runtime: Runtime, claims: TokenClaims) -> None:
    """Refuse this one token from now until it expires."""
    await runtime.redis.set(_revoked_key(runtime, claims.jti), b"1", ex=_seconds_left(runtime, claims))


async def publish_revocations(runtime: Runtime, session: AsyncSession) -> None:
    """After a commit: tell every instance the new token generations the unit of work made."""
    revoked: dict[str, int] = session.info.pop(REVOKED_TOKENS, {})
    for user_id, generation in revoked.items():
        await runtime.redis.eval(_PUBLISH, 1, _generation_key(runtime, user_id), str(generation),
                                 str(GENERATION_CACHE_S))

