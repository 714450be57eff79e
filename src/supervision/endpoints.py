from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel
from sqlalchemy import select

from kernel.audit import AuditEntry, verify_chain
from kernel.authz import Access
from kernel.http import RuntimeDep, SessionDep, authorize
from kernel.pagination import Page

router = APIRouter(tags=["supervision"])

ReadAudit = Annotated[Access, Depends(authorize("audit.read"))]
VerifyAudit = Annotated[Access, Depends(authorize("audit.verify"))]


class AuditRecord(BaseModel):
    id: str
    at: datetime
    actor_id: str
    actor_role: str
    action: str
    entity: str
    entity_id: str | None
    summary: dict[str, Any]
    outcome: str
    request_id: str | None


class ChainReport(BaseModel):
    intact: bool
    checked: int
    unsealed: int
    first_broken_id: str | None = None
    reason: str | None = None


@router.get("/v1/audit/log", response_model=Page[AuditRecord])
async def audit_log(session: SessionDep, access: ReadAudit,
                    entity: Annotated[str | None, Query(max_length=60)] = None,
                    entity_id: Annotated[str | None, Query(max_length=100)] = None,
                    from_: Annotated[datetime | None, Query(alias="from")] = None,
                    to: Annotated[datetime | None, Query()] = None,
                    cursor: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
                    limit: Annotated[int, Query(ge=1, le=500)] = 100) -> Page[AuditRecord]:
    """Newest first. Region scoping of audit rows comes with the supervision issue; auditors see all rows now."""
    del access
    query = select(AuditEntry)
    if entity:
        query = query.where(AuditEntry.entity == entity)
    if entity_id:
        query = query.where(AuditEntry.entity_id == entity_id)
    if from_:
        query = query.where(AuditEntry.at >= from_)
    if to:
        query = query.where(AuditEntry.at < to)
    if cursor is not None:
        query = query.where(AuditEntry.id < cursor)
    rows = list((await session.scalars(query.order_by(AuditEntry.id.desc()).limit(limit + 1))).all())
    next_cursor = str(rows[limit - 1].id) if len(rows) > limit else None
    items = [
        AuditRecord(id=str(r.id), at=r.at, actor_id=r.actor_id, actor_role=r.actor_role, action=r.action,
                    entity=r.entity, entity_id=r.entity_id, summary=r.summary, outcome=r.outcome,
                    request_id=r.request_id)
        for r in rows[:limit]
    ]
    return Page(items=items, next_cursor=next_cursor)


@router.get("/v1/audit/log/verify", response_model=ChainReport)
async def verify_audit_log(session: SessionDep, runtime: RuntimeDep, access: VerifyAudit) -> ChainReport:
    del access
    verdict = await verify_chain(session, runtime.chain)
    return ChainReport(intact=verdict.intact, checked=verdict.checked, unsealed=verdict.unsealed,
                       first_broken_id=verdict.first_broken_id, reason=verdict.reason)
