"""Accounts, passwords (argon2), signed tokens (JWT) and login with lock-out.

Scope claims (organisation, region, elders, caregiver) ride in the token, so authorising a request needs no query.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import ARRAY, BigInteger, CheckConstraint, ForeignKey, String, Text, Uuid, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from kernel import mfa
from kernel.audit import Actor, SystemActor, record_audit
from kernel.authz import ROLES, Principal, Role
from kernel.clock import Clock
from kernel.db import Base, new_id
from kernel.errors import Conflict, NotFound, Unauthenticated, Unprocessable
from kernel.events import UserCreated
from kernel.key_rotation import EncryptedColumn
from kernel.outbox import emit
from kernel.personal_data import FieldCipher

MAX_FAILURES = 5  # from one source address: that address is locked out of the account
LOCKOUT = timedelta(minutes=30)
ACCOUNT_LOCK_FAILURES = 10  # and from at least this many addresses: the account is locked for everyone
ACCOUNT_LOCK_SOURCES = 3
JWT_ALGORITHM = "HS256"
_hasher = PasswordHasher()
# Verifying against this keeps an unknown username as slow as a wrong password (no user enumeration by timing).
_DUMMY_HASH = _hasher.hash("vnh-dummy-password-for-timing")


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    organization_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("organizations.id"))
    region_code: Mapped[str | None] = mapped_column(String(12))
    elder_ids: Mapped[list[uuid.UUID]] = mapped_column(ARRAY(Uuid), default=list, server_default="{}")
    caregiver_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    active: Mapped[bool] = mapped_column(default=True)
    failed_logins: Mapped[int] = mapped_column(default=0)
    locked_until: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    # tokens carry the generation they were issued at; bumping it (`revoke_tokens`) refuses every older token
    token_generation: Mapped[int] = mapped_column(default=0, server_default="0")
    deleted_at: Mapped[datetime | None]
    password_changed_at: Mapped[datetime | None]
    password_history: Mapped[list[str]] = mapped_column(ARRAY(String(200)), default=list, server_default="{}")
    totp_secret_enc: Mapped[str | None] = mapped_column(Text)
    totp_enabled_at: Mapped[datetime | None]
    recovery_codes: Mapped[list[str]] = mapped_column(ARRAY(String(200)), default=list, server_default="{}")
    # the RFC 6238 time step of the last TOTP code accepted: a code is accepted only for a later step (no replay)
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        CheckConstraint("role IN ('admin','dispatcher','org_admin','caregiver','elder','auditor','finance')",
                        name="role_known"),
        CheckConstraint("role <> 'org_admin' OR organization_id IS NOT NULL", name="org_admin_has_organization"),
        CheckConstraint("role NOT IN ('dispatcher','auditor','finance') OR region_code IS NOT NULL",
                        name="regional_role_has_region"),
        CheckConstraint("role <> 'caregiver' OR caregiver_id IS NOT NULL", name="caregiver_login_has_caregiver"),
    )

    def principal(self) -> Principal:
        return Principal(
            user_id=str(self.id),
            username=self.username,
            role=self.role,  # type: ignore[arg-type]  # CHECK constraint keeps it a Role
            organization_id=str(self.organization_id) if self.organization_id else None,
            region_code=self.region_code,
            elder_ids=frozenset(str(e) for e in self.elder_ids),
            caregiver_id=str(self.caregiver_id) if self.caregiver_id else None,
        )


class LoginFailure(Base):
    """Failed logins of one account from one source address (the lock-out's memory)."""

    __tablename__ = "login_failures"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    source: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(default=0, server_default="0")
    last_failure_at: Mapped[datetime]
    locked_until: Mapped[datetime | None]


# what `vnh crypto rotate` rewrites: the TOTP secrets
ENCRYPTED_COLUMNS = (EncryptedColumn(User, "totp_secret_enc", mfa.TOTP_CONTEXT),)

_USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{3,64}$")


PASSWORD_MIN_LENGTH = 8
PASSWORD_HISTORY = 5  # a new password may be neither the current one nor any of the five before it
# the words and keyboard runs of the most common passwords: what is left after stripping digits and symbols from
# both ends ("Qwerty2026" → "qwerty", "P@ssw0rd!" → "p@ssw0rd") may not be one of them
_COMMON_CORES = frozenset({
    "password", "passw0rd", "p@ssword", "p@ssw0rd", "pass", "qwerty", "qwertyuiop", "qwer", "qwert", "asdf",
    "asdfgh", "asdfghjkl", "zxcv", "zxcvbn", "zxcvbnm", "qazwsx", "1qaz2wsx", "abc", "abcd", "abcdef", "abcdefg",
    "admin", "administrator", "root", "welcome", "letmein", "iloveyou", "monkey", "dragon", "master", "login",
    "secret", "changeme", "test", "user", "guest", "woaini", "aini", "a", "aa", "aaa", "aaaa",
})


def password_classes(password: str) -> int:
    """How many of the four classes (lower, upper, digit, other) the password uses."""
    return sum((
        any(c.islower() for c in password),
        any(c.isupper() for c in password),
        any(c.isdigit() for c in password),
        any(not c.isalnum() for c in password),
    ))


def check_password_rules(password: str, username: str) -> None:
    """At least 8 characters from at least 3 of the 4 classes (lower, upper, digit, symbol), not a common
    password with digits or symbols around it, not containing the username (等保 2.0 level 3)."""
    problems = []
    if len(password) < PASSWORD_MIN_LENGTH:
        problems.append(f"at least {PASSWORD_MIN_LENGTH} characters")
    if password_classes(password) < 3:
        problems.append("at least 3 of: lower case, upper case, digits, symbols")
    core = re.sub(r"^[\W\d_]+|[\W\d_]+$", "", password.lower())
    if core in _COMMON_CORES or len(set(password.lower())) <= 2:
        problems.append("too common")
    if username.lower() in password.lower():
        problems.append("must not contain the username")
    if problems:
        raise Unprocessable("password too weak: " + ", ".join(problems), code="weak_password",
                            details={"rules": problems})


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def _verify(password_hash: str, password: str) -> bool:
    """argon2 takes ~0.2 s of CPU on purpose: callers run it in a thread, off the event loop."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


async def create_user(
    session: AsyncSession, clock: Clock, actor: Actor, *, username: str, password: str, role: Role,
    organization_id: uuid.UUID | None = None, region_code: str | None = None,
    elder_ids: list[uuid.UUID] | None = None, caregiver_id: uuid.UUID | None = None,
) -> User:
    if role not in ROLES:
        raise Unprocessable(f"unknown role {role!r}", code="unknown_role")
    if not _USERNAME.match(username):
        raise Unprocessable("username: 3-64 letters, digits or _ . @ -", code="invalid_username")
    check_password_rules(password, username)
    if role == "org_admin" and organization_id is None:
        raise Unprocessable("an org_admin needs organization_id", code="scope_required")
    if role in ("dispatcher", "auditor", "finance") and region_code is None:
        raise Unprocessable(f"a {role} needs region_code", code="scope_required")
    if role == "elder" and not elder_ids:
        raise Unprocessable("an elder login needs elder_ids", code="scope_required")
    existing = await session.scalar(select(User.id).where(User.username == username))
    if existing is not None:
        raise Conflict("username is taken", code="username_taken")
    user = User(
        id=new_id(), username=username, password_hash=await asyncio.to_thread(hash_password, password), role=role,
        organization_id=organization_id, region_code=region_code, elder_ids=list(elder_ids or []),
        caregiver_id=caregiver_id, password_changed_at=clock.now(),
    )
    session.add(user)
    await session.flush()
    await record_audit(session, clock, actor, "user.create", "user", user.id,
                       {"username": username, "role": role, "region_code": region_code,
                        "organization_id": str(organization_id) if organization_id else None})
    emit(session, clock, "kernel.user.created", str(user.id), UserCreated(user_id=str(user.id), role=role).model_dump())
    return user


# `session.info` key: users whose token generation this unit of work bumped (published to Redis after commit)
REVOKED_TOKENS = "vnh.revoked_tokens"


def revoke_tokens(session: AsyncSession, user: User) -> None:
    """Refuse every token issued to `user` so far (deactivation, lock-out, deletion, password change, log out
    everywhere). The new generation reaches Redis after the commit (`kernel.sessions.publish_revocations`)."""
    user.token_generation += 1
    session.info.setdefault(REVOKED_TOKENS, {})[str(user.id)] = user.token_generation


@dataclass(frozen=True)
class TokenClaims:
    principal: Principal
    jti: str
    issued_at: int
    expires_at: int
    generation: int
    # a token that may only change the password or enrol a second factor (`password`, `mfa`), else None
    limited_to: str | None = None


class TokenService:
    def __init__(self, secret: str, ttl: timedelta, clock: Clock) -> None:
        self._secret = secret
        self.ttl = ttl
        self._clock = clock

    def issue(self, principal: Principal, *, generation: int = 0, limited_to: str | None = None) -> str:
        now = self._clock.now()
        claims: dict[str, Any] = {
            "sub": principal.user_id,
            "usr": principal.username,
            "role": principal.role,
            "iat": int(now.timestamp()),
            "exp": int((now + self.ttl).timestamp()),
            "jti": uuid.uuid4().hex,
            "gen": generation,
        }
        if limited_to:
            claims["lim"] = limited_to
        if principal.organization_id:
            claims["org"] = principal.organization_id
        if principal.region_code:
            claims["region"] = principal.region_code
        if principal.elder_ids:
            claims["elders"] = sorted(principal.elder_ids)
        if principal.caregiver_id:
            claims["cg"] = principal.caregiver_id
        return jwt.encode(claims, self._secret, algorithm=JWT_ALGORITHM)

    def decode(self, token: str) -> Principal:
        return self.decode_claims(token).principal

    def decode_claims(self, token: str) -> TokenClaims:
        """The signed claims, checked for signature and expiry only; whether the user may still use the token
        (active, not revoked, not idle) is `kernel.sessions.check_session`."""
        try:
            claims = jwt.decode(
                token, self._secret, algorithms=[JWT_ALGORITHM],
                options={"require": ["sub", "role", "exp", "iat", "jti"], "verify_exp": False},
            )
        except jwt.PyJWTError as exc:
            raise Unauthenticated("invalid token", code="invalid_token") from exc
        # expiry against the injected clock, so tests control it and all instances agree with the domain time
        if claims["exp"] <= self._clock.now().timestamp():
            raise Unauthenticated("token expired", code="token_expired")
        if claims["role"] not in ROLES or not isinstance(claims.get("gen", 0), int):
            raise Unauthenticated("invalid token", code="invalid_token")
        principal = Principal(
            user_id=claims["sub"],
            username=claims.get("usr", ""),
            role=claims["role"],
            organization_id=claims.get("org"),
            region_code=claims.get("region"),
            elder_ids=frozenset(claims.get("elders", [])),
            caregiver_id=claims.get("cg"),
        )
        return TokenClaims(principal=principal, jti=str(claims["jti"]), issued_at=int(claims["iat"]),
                           expires_at=int(claims["exp"]), generation=int(claims.get("gen", 0)),
                           limited_to=claims.get("lim"))


class LoginFailed(Unauthenticated):
    code = "invalid_credentials"


IPV6_SOURCE_PREFIX = 64


def source_key(address: str) -> str:
    """The source a login limit or lock-out counts against: an IPv4 address, or an IPv6 address's /64 (one
    subscriber or host usually holds a whole /64, so counting its addresses one by one would not limit anyone);
    an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) counts as its IPv4 address. Anything else is used as it is."""
    try:
        address_ = ipaddress.ip_address(address.strip())
    except ValueError:
        return address[:64]
    if isinstance(address_, ipaddress.IPv6Address):
        if address_.ipv4_mapped is not None:
            return str(address_.ipv4_mapped)
        network = ipaddress.IPv6Network((int(address_), IPV6_SOURCE_PREFIX), strict=False)
        return str(network)
    return str(address_)


async def _verify_in_thread(password_hash: str, password: str) -> bool:
    return await asyncio.to_thread(_verify, password_hash, password)


# first key of the (space, hashtext(username)) advisory lock every login of a username takes: "vnh" + 2
LOGIN_LOCK_SPACE = 0x766E6802

# `session.info` key: why a login with the right password was still refused, when the caller must say so
LOGIN_REFUSAL = "vnh.login_refusal"


def _locked_out(user: User, failure: LoginFailure | None, now: datetime) -> str | None:
    """Why the account may not log in now whatever the password: locked for everyone, or for this source."""
    if user.locked_until is not None and user.locked_until > now:
        return "locked"
    if failure is not None and failure.locked_until is not None and failure.locked_until > now:
        return "locked_for_source"
    return None


async def authenticate(session: AsyncSession, clock: Clock, username: str, password: str, *,
                       source: str = "unknown", otp: str | None = None,
                       cipher: FieldCipher | None = None) -> User | None:
    """Check a password with lock-out per account and source address.

    5 failures from one address lock the account for that address for 30 minutes; the account itself is locked
    (and its sessions end) only after `ACCOUNT_LOCK_FAILURES` failures from at least `ACCOUNT_LOCK_SOURCES`
    addresses within 30 minutes, so nobody locks an administrator out from one address. An admin unlocks early
    (`unlock_user`). Every branch spends one argon2 verification (unknown, locked, inactive, wrong, right), and
    every branch first takes the username's advisory lock (concurrent logins of one name, known or not, queue the
    same way), so answer times do not tell which it was.

    Answers None for unknown users, wrong passwords, locked and inactive accounts alike (no enumeration); the
    audit log says which it was. It does not raise, because the failure count and the audit row must be committed:
    the caller commits, then refuses with `LoginFailed`. An account with a second factor also needs `otp` (a TOTP
    code or an unused recovery code); without one the refusal is noted as `mfa_required` in `session.info`.
    """
    now = clock.now()
    source = source[:64]
    # Concurrent logins of one username queue here whether or not the account exists (a keyed advisory lock, not
    # the user row's lock alone): otherwise logins of a real account would wait on each other's argon2 and those of
    # an unknown name would not, which tells them apart.
    await session.execute(select(func.pg_advisory_xact_lock(LOGIN_LOCK_SPACE, func.hashtext(username))))
    user = await session.scalar(select(User).where(User.username == username).with_for_update())
    if user is None:
        await _verify_in_thread(_DUMMY_HASH, password)
        await record_audit(session, clock, SystemActor("auth"), "auth.login", "user", None,
                           {"username": username[:64], "reason": "unknown_user", "source": source},
                           outcome="denied")
        return None
    failure = await session.get(LoginFailure, (user.id, source), with_for_update=True)
    # the same work whatever the account's state: the verification runs before any branch
    correct = await _verify_in_thread(user.password_hash, password)
    reason = _locked_out(user, failure, now)
    if reason is None and (not user.active or user.deleted_at is not None):
        reason = "inactive"
    elif reason is None and not correct:
        reason = await _count_failure(session, now, user, failure, source)
    if reason is None and user.totp_enabled_at is not None:
        reason = await _check_second_factor(session, now, user, failure, source, otp, cipher)
    if reason is not None:
        await record_audit(session, clock, SystemActor("auth"), "auth.login", "user", user.id,
                           {"username": username, "reason": reason, "source": source}, outcome="denied")
        return None
    user.failed_logins = 0
    user.locked_until = None
    if failure is not None:
        await session.delete(failure)
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = await asyncio.to_thread(hash_password, password)
    await record_audit(session, clock, user.principal(), "auth.login", "user", user.id,
                       {"username": username, "source": source})
    return user


async def _count_failure(session: AsyncSession, now: datetime, user: User, failure: LoginFailure | None,
                         source: str) -> str:
    recent = now - LOCKOUT
    sources = set((await session.scalars(select(LoginFailure.source).where(
        LoginFailure.user_id == user.id, LoginFailure.last_failure_at > recent))).all())
    if not sources:
        user.failed_logins = 0  # the account's earlier failures are older than the window
    if failure is None:
        failure = LoginFailure(user_id=user.id, source=source, failures=0, last_failure_at=now)
        session.add(failure)
    elif failure.last_failure_at <= recent:
        failure.failures = 0
    failure.failures += 1
    failure.last_failure_at = now
    user.failed_logins += 1
    sources.add(source)
    reason = "wrong_password"
    if failure.failures >= MAX_FAILURES:
        failure.locked_until = now + LOCKOUT
        failure.failures = 0
        reason = "wrong_password_locked_for_source"
    if user.failed_logins >= ACCOUNT_LOCK_FAILURES and len(sources) >= ACCOUNT_LOCK_SOURCES:
        user.locked_until = now + LOCKOUT
        user.failed_logins = 0
        revoke_tokens(session, user)  # a locked account's sessions end too
        reason = "wrong_password_locked"
    await session.flush()
    return reason


async def _check_second_factor(session: AsyncSession, now: datetime, user: User, failure: LoginFailure | None,
                               source: str, otp: str | None, cipher: FieldCipher | None) -> str | None:
    if not otp:
        session.info[LOGIN_REFUSAL] = "mfa_required"
        return "mfa_required"
    if cipher is None or user.totp_secret_enc is None:
        raise RuntimeError("authenticate needs the cipher for an account with a second factor")
    step = mfa.totp_step(cipher.decrypt(user.totp_secret_enc, context=mfa.TOTP_CONTEXT), otp, now)
    if step is not None and _accept_totp_step(user, step):
        return None
    if step is None:
        remaining = await asyncio.to_thread(mfa.consume_recovery_code, user.recovery_codes, otp)
        if remaining is not None:
            user.recovery_codes = remaining
            return None
    # guessing codes counts as failing, and so does replaying one already used
    reason = await _count_failure(session, now, user, failure, source)
    return reason.replace("wrong_password", "wrong_otp" if step is None else "reused_otp")


def _accept_totp_step(user: User, step: int) -> bool:
    """RFC 6238 §5.2: a code is accepted at most once. Only a step later than the last accepted one passes, and it
    becomes the last (the caller holds the user row FOR UPDATE, so two concurrent uses cannot both pass)."""
    if user.totp_last_step is not None and step <= user.totp_last_step:
        return False
    user.totp_last_step = step
    return True


class PasswordRequired(Unprocessable):
    code = "password_required"


class WrongPassword(Unprocessable):
    code = "wrong_password"


async def begin_totp(session: AsyncSession, clock: Clock, cipher: FieldCipher, principal: Principal, *,
                     password: str | None, source: str = "unknown") -> tuple[str, str] | None:
    """Start enrolling a TOTP second factor: a new secret (sealed at rest), shown once with its otpauth URI; it
    takes effect when a code from it is confirmed (`confirm_totp`).

    The caller proves the password (`check_own_password`, counted like a login), so a stolen token cannot bind
    someone else's authenticator; None when it is wrong (the caller commits the count, then refuses).
    `password=None` only for a caller that proved it just before (the enrolment-limited token of a fresh login)."""
    user = await _load_user(session, principal.user_id)
    if password is not None and not await check_own_password(session, clock, user, password, source=source,
                                                              action="auth.mfa_begin"):
        return None
    if user.totp_enabled_at is not None:
        raise Conflict("a second factor is already enrolled", code="mfa_already_enrolled")
    secret = mfa.new_secret()
    user.totp_secret_enc = cipher.encrypt(secret, context=mfa.TOTP_CONTEXT)
    await session.flush()
    await record_audit(session, clock, principal, "auth.mfa_begin", "user", user.id, {})
    return secret, mfa.provisioning_uri(secret, user.username)


async def confirm_totp(session: AsyncSession, clock: Clock, cipher: FieldCipher, principal: Principal,
                       code: str) -> tuple[User, list[str]]:
    """Finish the enrolment with a code from the authenticator: from now on the login needs one. Answers the ten
    single-use recovery codes (stored hashed, shown only here)."""
    user = await _load_user(session, principal.user_id)
    if user.totp_enabled_at is not None:
        raise Conflict("a second factor is already enrolled", code="mfa_already_enrolled")
    if user.totp_secret_enc is None:
        raise Conflict("start the enrolment with POST /v1/auth/totp", code="mfa_not_started")
    step = mfa.totp_step(cipher.decrypt(user.totp_secret_enc, context=mfa.TOTP_CONTEXT), code, clock.now())
    if step is None or not _accept_totp_step(user, step):
        raise Unprocessable("the code does not match: check the authenticator's clock", code="invalid_otp")
    codes, hashes = await asyncio.to_thread(mfa.new_recovery_codes)
    user.totp_enabled_at = clock.now()
    user.recovery_codes = hashes
    await session.flush()
    await record_audit(session, clock, principal, "auth.mfa_enrol", "user", user.id, {})
    return user, codes


async def reset_second_factor(session: AsyncSession, clock: Clock, actor: Actor, user_id: str) -> User:
    """An admin removes a user's second factor (lost phone, or one bound by someone else): the secret, recovery
    codes and last step are cleared and every session of the user ends; the user enrols again at the next login
    (at once when the role requires one)."""
    user = await _load_user(session, user_id)
    was_enrolled = user.totp_enabled_at is not None
    user.totp_secret_enc = None
    user.totp_enabled_at = None
    user.totp_last_step = None
    user.recovery_codes = []
    revoke_tokens(session, user)
    await session.flush()
    await record_audit(session, clock, actor, "user.mfa_reset", "user", user.id,
                       {"username": user.username, "was_enrolled": was_enrolled})
    return user


async def unlock_user(session: AsyncSession, clock: Clock, actor: Actor, user_id: str) -> User:
    """An admin lifts every lock-out of an account (account-wide and per address)."""
    user = await _load_user(session, user_id)
    failures = (await session.scalars(select(LoginFailure).where(LoginFailure.user_id == user.id))).all()
    for failure in failures:
        await session.delete(failure)
    was_locked = user.locked_until is not None and user.locked_until > clock.now()
    user.locked_until = None
    user.failed_logins = 0
    await session.flush()
    await record_audit(session, clock, actor, "user.unlock", "user", user.id,
                       {"username": user.username, "account_locked": was_locked,
                        "sources": sorted(f.source for f in failures)})
    return user


async def _load_user(session: AsyncSession, user_id: str) -> User:
    try:
        uid = uuid.UUID(user_id)
    except ValueError:
        raise NotFound("user not found") from None
    user = await session.scalar(select(User).where(User.id == uid, User.deleted_at.is_(None)).with_for_update())
    if user is None:
        raise NotFound("user not found")
    return user


async def set_user_active(session: AsyncSession, clock: Clock, actor: Actor, user_id: str, active: bool) -> User:
    """Deactivate (every token of the user refused at once) or reactivate an account."""
    user = await _load_user(session, user_id)
    if user.active != active:
        user.active = active
        revoke_tokens(session, user)
        await session.flush()
        await record_audit(session, clock, actor, "user.activate" if active else "user.deactivate", "user", user.id,
                           {"username": user.username})
    return user


async def delete_user(session: AsyncSession, clock: Clock, actor: Actor, user_id: str) -> None:
    """Delete an account: it never logs in again and its tokens are refused. The row stays (the audit log names it),
    so its username stays taken."""
    user = await _load_user(session, user_id)
    user.deleted_at = clock.now()
    user.active = False
    revoke_tokens(session, user)
    await session.flush()
    await record_audit(session, clock, actor, "user.delete", "user", user.id, {"username": user.username})


async def log_out_everywhere(session: AsyncSession, clock: Clock, principal: Principal) -> None:
    """End every session of the caller (every token issued so far)."""
    user = await _load_user(session, principal.user_id)
    revoke_tokens(session, user)
    await session.flush()
    await record_audit(session, clock, principal, "auth.logout", "user", user.id, {"everywhere": True})


# roles whose passwords do not expire: elders' and families' logins (the app, often a relative's phone)
PASSWORD_AGE_EXEMPT_ROLES = frozenset({"elder"})


def password_expired(user: User, now: datetime, max_age: timedelta) -> bool:
    """Staff passwords expire after `auth.password_max_age`; such a login may only change the password."""
    if user.role in PASSWORD_AGE_EXEMPT_ROLES:
        return False
    changed = user.password_changed_at or user.created_at
    return changed is not None and now - changed > max_age


class PasswordChangeRefused(Unprocessable):
    code = "password_change_refused"


async def check_own_password(session: AsyncSession, clock: Clock, user: User, password: str, *, source: str,
                             action: str) -> bool:
    """A signed-in user proves the password again (changing it, enrolling a second factor). Counted like a login:
    a wrong password is a failed login of the account from `source` (the lock-out of `authenticate`), and while the
    account or that source is locked out even the right password is refused. One argon2 verification on every
    branch. Does not raise: the caller commits the count and the audit row, then refuses."""
    now = clock.now()
    source = source[:64]
    failure = await session.get(LoginFailure, (user.id, source), with_for_update=True)
    correct = await _verify_in_thread(user.password_hash, password)
    reason = _locked_out(user, failure, now)
    if reason is None and not correct:
        reason = await _count_failure(session, now, user, failure, source)
    if reason is None:
        return True
    await record_audit(session, clock, user.principal(), action, "user", user.id,
                       {"reason": reason, "source": source}, outcome="denied")
    return False


async def change_password(session: AsyncSession, clock: Clock, principal: Principal, current: str,
                          new: str, *, source: str = "unknown") -> User | None:
    """The caller's own password: the current one must be right (`check_own_password`: a wrong one counts as a
    failed login from `source`; None then, for the caller to commit and refuse), the new one follow the rules and
    be none of the previous five. Every session of the user ends (a new token is issued by the caller)."""
    user = await _load_user(session, principal.user_id)
    if not await check_own_password(session, clock, user, current, source=source, action="auth.password_change"):
        return None
    check_password_rules(new, user.username)
    for old in [user.password_hash, *user.password_history[:PASSWORD_HISTORY]]:
        if await _verify_in_thread(old, new):
            raise PasswordChangeRefused(f"the new password must differ from the last {PASSWORD_HISTORY}",
                                        code="password_reused")
    user.password_history = [user.password_hash, *user.password_history][:PASSWORD_HISTORY]
    user.password_hash = await asyncio.to_thread(hash_password, new)
    user.password_changed_at = clock.now()
    revoke_tokens(session, user)
    await session.flush()
    await record_audit(session, clock, principal, "auth.password_change", "user", user.id, {})
    return user
