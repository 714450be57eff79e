"""The append-only, hash-chained audit log.

Every domain calls `record_audit(...)` in its own transaction: the row is inserted unchained, so audit never
serialises requests. One background sealer (holding an advisory lock) appends seal rows — chain position, audit id,
previous hash, keyed hash of the audit row — to the insert-only `audit_seal` table in the order it sees commits.
`verify_chain` recomputes the chain: an edited, deleted or reordered audit row, or a deleted seal, breaks it.

The app role has INSERT and SELECT only on both tables, and triggers refuse UPDATE, DELETE and TRUNCATE for
everyone else too (see the initial migration).
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import uuid
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from sqlalchemy import BigInteger, ForeignKey, String, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from kernel.clock import Clock
from kernel.db import Base
from kernel.settings import Settings

log = logging.getLogger("vnh.audit")

request_id_var: ContextVar[str | None] = ContextVar("vnh_request_id", default=None)
# The HTTP client's address (the ASGI scope's `client`, after the server's trusted-proxy handling) and user agent,
# set by the request middleware and written into every audit row of that request.
client_var: ContextVar[tuple[str | None, str | None] | None] = ContextVar("vnh_client", default=None)
SOURCE_IP_MAX = 64
USER_AGENT_MAX = 256

Outcome = Literal["success", "denied", "failed"]
SEALER_LOCK_ID = 0x766E68_0001  # pg advisory lock key: "vnh" + 1
GENESIS = "0" * 64
# A transaction that inserted audit rows may commit after later rows were sealed; the sealer looks this far back
# for such late commits. `verify` reports any row still unsealed, so nothing is silently skipped.
LATE_COMMIT_WINDOW = 100_000


class Actor(Protocol):
    @property
    def actor_id(self) -> str: ...
    @property
    def role(self) -> str: ...


@dataclass(frozen=True)
class SystemActor:
    """The service itself (relay, sealer, device ingest, CLI)."""

    name: str = "system"

    @property
    def actor_id(self) -> str:
        return f"system:{self.name}"

    @property
    def role(self) -> str:
        return "system"


class AuditEntry(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    actor_id: Mapped[str] = mapped_column(String(100))
    actor_role: Mapped[str] = mapped_column(String(30))
    action: Mapped[str] = mapped_column(String(100))
    entity: Mapped[str] = mapped_column(String(60))
    entity_id: Mapped[str | None] = mapped_column(String(100))
    summary: Mapped[dict[str, Any]]
    outcome: Mapped[str] = mapped_column(String(10))
    request_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    # The region of what the row is about, for auditors' scoping: given by the caller or resolved at insert by the
    # `vnh_audit_region` trigger from the entity (migration 0006); NULL rows are visible to `all` scopes only.
    region_code: Mapped[str | None] = mapped_column(String(12))
    # Where an HTTP action came from (migration 0008): the client address the server saw and its user agent,
    # truncated; NULL for work that came from no HTTP request. Part of the sealed hash when present.
    source_ip: Mapped[str | None] = mapped_column(String(SOURCE_IP_MAX))
    user_agent: Mapped[str | None] = mapped_column(String(USER_AGENT_MAX))


class AuditSeal(Base):
    __tablename__ = "audit_seal"

    chain_seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    audit_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("audit_log.id"), unique=True)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    sealed_at: Mapped[datetime] = mapped_column(server_default=func.now())


async def record_audit(
    session: AsyncSession,
    clock: Clock,
    actor: Actor,
    action: str,
    entity: str,
    entity_id: str | uuid.UUID | None,
    summary: Mapping[str, Any] | None = None,
    outcome: Outcome = "success",
    *,
    region_code: str | None = None,
    client: tuple[str | None, str | None] | None = None,
) -> None:
    """Add an audit row to the caller's transaction. `summary` holds ids, codes and masked values only.

    The source address and user agent come from the HTTP request being served (`client_var`), or from `client`
    (address, user agent) where the caller runs outside the request middleware (the 500 handler).

    Without `region_code`, pending rows are flushed first, so the insert trigger that resolves the row's region
    finds the entity it names even when the entity was created in this same transaction. A caller that knows the
    region passes it and saves that flush (the row then goes in with the caller's next one, in its order)."""
    if region_code is None:
        await session.flush()
    source_ip, user_agent = client or client_var.get() or (None, None)
    session.add(
        AuditEntry(
            at=clock.now(),
            actor_id=actor.actor_id,
            actor_role=actor.role,
            action=action,
            entity=entity,
            entity_id=str(entity_id) if entity_id is not None else None,
            summary=dict(summary or {}),
            outcome=outcome,
            request_id=request_id_var.get(),
            region_code=region_code,
            source_ip=source_ip[:SOURCE_IP_MAX] if source_ip else None,
            user_agent=user_agent[:USER_AGENT_MAX] if user_agent else None,
        )
    )


class ChainHasher:
    def __init__(self, key: bytes, algorithm: Literal["sha256", "sm3"]) -> None:
        self._key = key
        self._algorithm = algorithm

    @classmethod
    def from_settings(cls, settings: Settings) -> ChainHasher:
        if settings.audit.key is None:
            raise RuntimeError("VNH_AUDIT__KEY is not configured")
        return cls(base64.b64decode(settings.audit.key.get_secret_value()), settings.audit.hmac)

    def link(self, prev_hash: str, entry: AuditEntry) -> str:
        fields: list[Any] = [
            entry.id,
            entry.at.isoformat(),
            entry.actor_id,
            entry.actor_role,
            entry.action,
            entry.entity,
            entry.entity_id,
            entry.summary,
            entry.outcome,
            entry.request_id,
        ]
        if entry.region_code is not None:  # rows sealed before regions existed keep their hashes
            fields.append(entry.region_code)
        if entry.source_ip is not None or entry.user_agent is not None:
            # likewise rows from before client addresses; an object, so it can never pass for a region
            fields.append({"source_ip": entry.source_ip, "user_agent": entry.user_agent})
        body = json.dumps(
            fields,
            sort_keys=True,
            ensure_ascii=False,
            separators=(",", ":"),
            default=str,
        ).encode()
        message = prev_hash.encode() + b"\x00" + body
        if self._algorithm == "sha256":
            return hmac.new(self._key, message, "sha256").hexdigest()
        mac = crypto_hmac.HMAC(self._key, hashes.SM3())
        mac.update(message)
        return mac.finalize().hex()


@dataclass(frozen=True)
class ChainHead:
    """The newest seal of the chain: what a witness outside the database remembers (`kernel.audit_witness`).
    `count` is the number of sealed rows up to it (chain positions start at 1 and have no gaps)."""

    chain_seq: int
    audit_id: int
    hash: str
    count: int
    at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"chain_seq": self.chain_seq, "audit_id": str(self.audit_id), "hash": self.hash, "count": self.count,
                "at": self.at.isoformat() if self.at else None}


async def seal_pending(session: AsyncSession, hasher: ChainHasher, *, batch: int = 5000) -> int:
    """Seal committed, unsealed audit rows in id order. Only one sealer works at a time (advisory xact lock)."""
    return (await seal_batch(session, hasher, batch=batch))[0]


async def seal_batch(session: AsyncSession, hasher: ChainHasher, *,
                     batch: int = 5000) -> tuple[int, ChainHead | None]:
    """`seal_pending`, answering also the chain's new head when it sealed anything (for the witnesses, once the
    caller has committed)."""
    got_lock = await session.scalar(select(func.pg_try_advisory_xact_lock(SEALER_LOCK_ID)))
    if not got_lock:
        return 0, None
    last = (
        await session.execute(
            select(AuditSeal.chain_seq, AuditSeal.hash, AuditSeal.audit_id)
            .order_by(AuditSeal.chain_seq.desc())
            .limit(1)
        )
    ).first()
    seq, prev_hash, last_audit_id = (last[0], last[1], last[2]) if last else (0, GENESIS, 0)
    floor = max(0, last_audit_id - LATE_COMMIT_WINDOW)
    pending = (
        await session.scalars(
            select(AuditEntry)
            .where(
                AuditEntry.id > floor,
                ~select(AuditSeal.audit_id).where(AuditSeal.audit_id == AuditEntry.id).exists(),
            )
            .order_by(AuditEntry.id)
            .limit(batch)
        )
    ).all()
    for entry in pending:
        seq += 1
        digest = hasher.link(prev_hash, entry)
        session.add(AuditSeal(chain_seq=seq, audit_id=entry.id, prev_hash=prev_hash, hash=digest))
        prev_hash = digest
    await session.flush()
    if not pending:
        return 0, None
    return len(pending), ChainHead(chain_seq=seq, audit_id=pending[-1].id, hash=prev_hash, count=seq)


@dataclass(frozen=True)
class ChainVerdict:
    intact: bool
    checked: int
    unsealed: int
    first_broken_id: str | None = None
    reason: str | None = None
    # set when a witness outside the database saw a head the chain no longer reaches (its newest rows and seals
    # were deleted together): what was witnessed, and the head found instead
    truncated: bool = False
    witnessed_head: ChainHead | None = None
    found_head: ChainHead | None = None


async def verify_chain(session: AsyncSession, hasher: ChainHasher, *, page: int = 5000,
                       witnessed: ChainHead | None = None) -> ChainVerdict:
    """Walk the seals in chain order and recompute every link from the audit rows as they are now.

    Deleting the newest rows together with their seals leaves a shorter chain that is intact in itself; with
    `witnessed` (the newest head a witness outside the database holds) the chain must still contain that seal,
    with the same audit id and hash, or the verdict is `truncated`."""
    checked = 0
    head: ChainHead | None = None
    witness_matches = False
    prev_hash = GENESIS
    expected_seq = 1
    after = 0
    while True:
        rows = (
            await session.execute(
                select(AuditSeal, AuditEntry)
                .outerjoin(AuditEntry, AuditEntry.id == AuditSeal.audit_id)
                .where(AuditSeal.chain_seq > after)
                .order_by(AuditSeal.chain_seq)
                .limit(page)
            )
        ).all()
        if not rows:
            break
        for seal, entry in rows:
            broken: str | None = None
            if seal.chain_seq != expected_seq:
                broken = f"seal {expected_seq} is missing"
            elif seal.prev_hash != prev_hash:
                broken = "previous-hash link does not match"
            elif entry is None:
                broken = "audit row was deleted"
            elif hasher.link(prev_hash, entry) != seal.hash:
                broken = "audit row content does not match its seal"
            if broken:
                return ChainVerdict(False, checked, await _count_unsealed(session), str(seal.audit_id), broken)
            checked += 1
            expected_seq += 1
            prev_hash = seal.hash
            after = seal.chain_seq
            head = ChainHead(seal.chain_seq, seal.audit_id, seal.hash, checked, seal.sealed_at)
            if witnessed is not None and seal.chain_seq == witnessed.chain_seq:
                witness_matches = seal.audit_id == witnessed.audit_id and seal.hash == witnessed.hash
    if witnessed is not None and not (witness_matches and checked >= witnessed.count):
        reason = (f"the chain ends at seal {head.chain_seq if head else 0} but seal {witnessed.chain_seq} "
                  f"(audit id {witnessed.audit_id}) was witnessed"
                  if head is None or head.chain_seq < witnessed.chain_seq
                  else f"seal {witnessed.chain_seq} differs from the witnessed one")
        return ChainVerdict(False, checked, await _count_unsealed(session), str(witnessed.audit_id), reason,
                            truncated=True, witnessed_head=witnessed, found_head=head)
    return ChainVerdict(True, checked, await _count_unsealed(session), found_head=head)


async def _count_unsealed(session: AsyncSession) -> int:
    return int(
        await session.scalar(
            select(func.count())
            .select_from(AuditEntry)
            .where(~select(AuditSeal.audit_id).where(AuditSeal.audit_id == AuditEntry.id).exists())
        )
        or 0
    )


AUDIT_TABLES = ("audit_log", "audit_seal")
AUDIT_GUARD_SQL = [
    text(
        """
        CREATE OR REPLACE FUNCTION vnh_audit_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'audit tables are append-only (% on %)', TG_OP, TG_TABLE_NAME
                USING ERRCODE = 'insufficient_privilege';
        END $$
        """
    ),
    *[
        text(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION vnh_audit_is_append_only()"
        )
        for table in AUDIT_TABLES
    ],
    *[
        text(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION vnh_audit_is_append_only()"
        )
        for table in AUDIT_TABLES
    ],
]
