"""Managing the credit blacklist (the bureau's decision, with reason and period, lifted early only with a reason)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from dispatch.models import Caregiver, Organization
from kernel.audit import record_audit
from kernel.authz import Access
from kernel.errors import InvalidState, NotFound, Unprocessable
from kernel.runtime import Runtime
from supervision.models import BlacklistEntry


async def add(session: AsyncSession, rt: Runtime, access: Access, *, kind: str, subject_id: str, reason: str,
              valid_from: datetime | None, valid_to: datetime | None) -> BlacklistEntry:
    try:
        sid = uuid.UUID(subject_id)
    except ValueError:
        raise NotFound(f"{kind} not found") from None
    model = Organization if kind == "organization" else Caregiver
    if await session.get(model, sid) is None:
        raise NotFound(f"{kind} not found")
    start = valid_from or rt.clock.now()
    if valid_to is not None and valid_to <= start:
        raise Unprocessable("valid_to must be after valid_from", code="invalid_period")
    entry = BlacklistEntry(id=uuid.uuid4(), subject_kind=kind, subject_id=sid, reason=reason, valid_from=start,
                           valid_to=valid_to, created_by=access.actor_id, created_at=rt.clock.now())
    session.add(entry)
    await record_audit(session, rt.clock, access, "blacklist.add", kind, sid,
                       {"entry_id": str(entry.id), "reason": reason, "valid_from": start.isoformat(),
                        "valid_to": valid_to.isoformat() if valid_to else None})
    return entry


async def lift(session: AsyncSession, rt: Runtime, access: Access, entry_id: str, reason: str) -> BlacklistEntry:
    try:
        eid = uuid.UUID(entry_id)
    except ValueError:
        raise NotFound("blacklist entry not found") from None
    entry = await session.get(BlacklistEntry, eid, with_for_update=True)
    if entry is None:
        raise NotFound("blacklist entry not found")
    if entry.lifted_at is not None:
        raise InvalidState("the entry is already lifted")
    entry.lifted_at, entry.lifted_by, entry.lift_reason = rt.clock.now(), access.actor_id, reason
    await record_audit(session, rt.clock, access, "blacklist.lift", entry.subject_kind, entry.subject_id,
                       {"entry_id": str(entry.id), "reason": reason})
    return entry


async def entries(session: AsyncSession) -> list[BlacklistEntry]:
    return list((await session.scalars(select(BlacklistEntry).order_by(BlacklistEntry.created_at.desc())
                                       .limit(1000))).all())
