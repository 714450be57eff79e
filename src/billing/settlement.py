"""Monthly settlement per organisation and programme (decisions §4): draft → approved (closed, immutable).

A statement for month M takes every capture and exclusion of its organisation and programme that became billable
(or was excluded) before M ended and is on no statement yet: a visit lands on the first statement drafted after it
became billable, showing its own service month; one from an earlier month is an `adjustment` line. Re-drafting a
draft refreshes it; an approved statement never changes (the database refuses it), so anything later goes to a
later month's statement. Lines are written and totalled in SQL (`INSERT … SELECT`), never loaded into Python.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import Select, case, delete, exists, func, literal, select, union, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from billing import schemas
from billing.models import Capture, Exclusion, Program, Settlement, SettlementLine
from billing.programs import get_program
from billing.rules import format_month, month_bounds
from dispatch.models import Organization
from kernel.audit import record_audit
from kernel.authz import Access
from kernel.clock import Clock
from kernel.db import Database
from kernel.errors import InvalidState, NotFound, Unprocessable
from kernel.ids import parse_id
from kernel.outbox import emit

LINE_COLUMNS = ("settlement_id", "kind", "capture_id", "exclusion_id", "visit_id", "order_id", "elder_id",
                "caregiver_id", "service_code", "service_month", "served_at", "price_fen", "quota_fen", "copay_fen",
                "reason")


def _capture_lines(settlement_id: uuid.UUID, program_id: uuid.UUID, organization_id: uuid.UUID, month: date
                   ) -> Select[*tuple[Any, ...]]:
    c = Capture
    end = month_bounds(month)[1]
    return (
        select(literal(settlement_id), case((c.service_month < month, "adjustment"), else_="capture"), c.id,
               literal(None, type_=SettlementLine.exclusion_id.type), c.visit_id, c.order_id, c.elder_id,
               c.caregiver_id, c.service_code, c.service_month, c.served_at, c.price_fen, c.quota_fen, c.copay_fen,
               literal(None, type_=SettlementLine.reason.type))
        .where(c.program_id == program_id, c.organization_id == organization_id, c.billable_at < end,
               ~exists().where(SettlementLine.capture_id == c.id))
        .order_by(c.service_month, c.served_at, c.id)
    )


def _exclusion_lines(settlement_id: uuid.UUID, program_id: uuid.UUID, organization_id: uuid.UUID, month: date
                     ) -> Select[*tuple[Any, ...]]:
    """The latest exclusion of each visit not billed by the end of the month (an earlier 'unresolved' one is
    superseded by a later rejection; a visit captured meanwhile is a capture line, not an exclusion)."""
    x = Exclusion
    newer = aliased(Exclusion)
    end = month_bounds(month)[1]
    return (
        select(literal(settlement_id), literal("exclusion"), literal(None, type_=SettlementLine.capture_id.type),
               x.id, x.visit_id, x.order_id, x.elder_id, x.caregiver_id, x.service_code, x.service_month,
               x.served_at, x.price_fen, literal(0), literal(0), x.reason)
        .where(x.program_id == program_id, x.organization_id == organization_id, x.excluded_at < end,
               ~exists().where(SettlementLine.exclusion_id == x.id),
               ~exists().where(newer.visit_id == x.visit_id, newer.id > x.id, newer.excluded_at < end),
               ~exists().where(Capture.visit_id == x.visit_id, Capture.billable_at < end))
        .order_by(x.service_month, x.served_at, x.id)
    )


async def _fill(session: AsyncSession, settlement: Settlement) -> None:
    """(Re)write a draft's lines and totals, all in SQL."""
    sid, pid, oid, month = settlement.id, settlement.program_id, settlement.organization_id, settlement.month
    await session.execute(delete(SettlementLine).where(SettlementLine.settlement_id == sid))
    await session.execute(pg_insert(SettlementLine).from_select(LINE_COLUMNS, _capture_lines(sid, pid, oid, month))
                          .on_conflict_do_nothing(index_elements=["capture_id"],
                                                  index_where=SettlementLine.capture_id.is_not(None)))
    await session.execute(pg_insert(SettlementLine)
                          .from_select(LINE_COLUMNS, _exclusion_lines(sid, pid, oid, month))
                          .on_conflict_do_nothing(index_elements=["exclusion_id"],
                                                  index_where=SettlementLine.exclusion_id.is_not(None)))
    line = SettlementLine
    billed = line.kind != "exclusion"
    totals = (await session.execute(
        select(func.count().filter(line.kind == "capture"), func.count().filter(line.kind == "adjustment"),
               func.count().filter(line.kind == "exclusion"),
               func.coalesce(func.sum(line.price_fen).filter(billed), 0),
               func.coalesce(func.sum(line.quota_fen).filter(billed), 0),
               func.coalesce(func.sum(line.copay_fen).filter(billed), 0))
        .where(line.settlement_id == sid)
    )).one()
    await session.execute(update(Settlement).where(Settlement.id == sid).values(
        line_count=totals[0], adjustment_count=totals[1], exclusion_count=totals[2], price_fen=totals[3],
        quota_fen=totals[4], copay_fen=totals[5]))


async def _load(session: AsyncSession, settlement_id: uuid.UUID, *, lock: bool = False) -> Settlement | None:
    query = select(Settlement).where(Settlement.id == settlement_id).execution_options(populate_existing=True)
    if lock:
        query = query.with_for_update(key_share=True)
    return await session.scalar(query)


async def draft_settlement(session: AsyncSession, clock: Clock, access: Access, *, program_id: str,
                           organization_id: str, month: date) -> tuple[Settlement, bool]:
    """Draft the statement of (programme, organisation, month), or refresh the existing draft. Answers the
    statement and whether it was created now. An approved one is 409 `invalid_state`."""
    program = await get_program(session, access, program_id)
    org = await session.get(Organization, parse_id(organization_id, "organization"))
    if org is None:
        raise Unprocessable("unknown organisation id", code="unknown_organization")
    now = clock.now()
    created_id = await session.scalar(
        pg_insert(Settlement).values(
            id=uuid.uuid4(), program_id=program.id, organization_id=org.id, month=month, status="draft",
            line_count=0, adjustment_count=0, exclusion_count=0, price_fen=0, quota_fen=0, copay_fen=0,
            drafted_at=now,
        ).on_conflict_do_nothing(index_elements=["program_id", "organization_id", "month"]).returning(Settlement.id)
    )
    settlement = await session.scalar(
        select(Settlement).where(Settlement.program_id == program.id, Settlement.organization_id == org.id,
                                 Settlement.month == month)
        .with_for_update(key_share=True).execution_options(populate_existing=True))
    assert settlement is not None
    if settlement.status != "draft":
        raise InvalidState("the statement of this month is approved; later items go to a later month",
                           details={"settlement_id": str(settlement.id)})
    if created_id is None:
        await session.execute(update(Settlement).where(Settlement.id == settlement.id).values(drafted_at=now))
    await _fill(session, settlement)
    refreshed = await _load(session, settlement.id)
    assert refreshed is not None
    await record_audit(session, clock, access, "settlement.draft" if created_id else "settlement.refresh",
                       "settlement", refreshed.id, _totals_summary(refreshed))
    emit(session, clock, "billing.settlement.drafted", str(refreshed.id), _event(refreshed))
    return refreshed, created_id is not None


async def get_settlement(session: AsyncSession, access: Access, settlement_id: str, *, lock: bool = False
                         ) -> Settlement:
    settlement = await _load(session, parse_id(settlement_id, "settlement"), lock=lock)
    if settlement is None:
        raise NotFound("settlement not found")
    region = await session.scalar(select(Program.region_code).where(Program.id == settlement.program_id))
    access.ensure(what="settlement", region_code=region, organization_id=settlement.organization_id)
    return settlement


async def approve_settlement(session: AsyncSession, clock: Clock, access: Access, settlement_id: str
                             ) -> Settlement:
    """Close a draft: from now on neither it nor its lines can change."""
    settlement = await get_settlement(session, access, settlement_id, lock=True)
    if settlement.status != "draft":
        raise InvalidState("the statement is approved already")
    await session.execute(update(Settlement).where(Settlement.id == settlement.id, Settlement.status == "draft")
                          .values(status="approved", approved_at=clock.now(), approved_by=access.actor_id))
    approved = await _load(session, settlement.id)
    assert approved is not None
    await record_audit(session, clock, access, "settlement.approve", "settlement", approved.id,
                       _totals_summary(approved))
    emit(session, clock, "billing.settlement.approved", str(approved.id), _event(approved))
    return approved


async def list_settlements(session: AsyncSession, access: Access, *, month: date | None, program_id: str | None,
                           organization_id: str | None, status: str | None) -> list[Settlement]:
    query = select(Settlement).join(Program, Program.id == Settlement.program_id)
    if access.scope == "organization":
        query = query.where(Settlement.organization_id == parse_id(access.principal.organization_id or "", "org"))
    else:
        query = query.where(access.region_clause(Program.region_code))
    if month is not None:
        query = query.where(Settlement.month == month)
    if program_id:
        query = query.where(Settlement.program_id == parse_id(program_id, "programme"))
    if organization_id:
        query = query.where(Settlement.organization_id == parse_id(organization_id, "organization"))
    if status:
        query = query.where(Settlement.status == status)
    return list((await session.scalars(query.order_by(Settlement.month.desc(), Settlement.created_at,
                                                      Settlement.id).limit(1000))).all())


async def lines_page(session: AsyncSession, settlement: Settlement, *, cursor: str | None, limit: int
                     ) -> tuple[list[SettlementLine], str | None]:
    """Lines in statement order (keyset on the line id), `limit` at a time."""
    after = 0
    if cursor:
        if not (cursor.isascii() and cursor.isdigit() and len(cursor) <= 18):
            raise Unprocessable("invalid cursor", code="invalid_cursor")
        after = int(cursor)
    rows = list((await session.scalars(
        select(SettlementLine).where(SettlementLine.settlement_id == settlement.id, SettlementLine.id > after)
        .order_by(SettlementLine.id).limit(limit + 1))).all())
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = str(rows[-1].id)
    return rows, next_cursor


def to_schema(settlement: Settlement, lines: list[SettlementLine] | None = None,
              next_cursor: str | None = None) -> schemas.Settlement:
    out = [_line(x) for x in lines or []]
    return schemas.Settlement(
        id=str(settlement.id), program_id=str(settlement.program_id),
        organization_id=str(settlement.organization_id), month=format_month(settlement.month),
        status=settlement.status,
        totals=schemas.SettlementTotals(
            line_count=settlement.line_count, adjustment_count=settlement.adjustment_count,
            exclusion_count=settlement.exclusion_count, price_fen=settlement.price_fen,
            quota_fen=settlement.quota_fen, copay_fen=settlement.copay_fen),
        drafted_at=settlement.drafted_at.isoformat(),
        approved_at=settlement.approved_at.isoformat() if settlement.approved_at else None,
        approved_by=settlement.approved_by,
        lines=[x for x in out if x.kind != "exclusion"], exclusions=[x for x in out if x.kind == "exclusion"],
        next_cursor=next_cursor,
    )


def _line(line: SettlementLine) -> schemas.SettlementLine:
    return schemas.SettlementLine(
        kind=line.kind,
        visit_id=str(line.visit_id), order_id=str(line.order_id), elder_id=str(line.elder_id),
        caregiver_id=str(line.caregiver_id), service_code=line.service_code,
        service_month=format_month(line.service_month),
        served_at=line.served_at.isoformat() if line.served_at else None, price_fen=line.price_fen,
        quota_fen=line.quota_fen, copay_fen=line.copay_fen, reason=line.reason,
    )


def _totals_summary(settlement: Settlement) -> dict[str, object]:
    return {"program_id": str(settlement.program_id), "organization_id": str(settlement.organization_id),
            "month": format_month(settlement.month), "lines": settlement.line_count,
            "adjustments": settlement.adjustment_count, "exclusions": settlement.exclusion_count,
            "price_fen": settlement.price_fen, "quota_fen": settlement.quota_fen, "copay_fen": settlement.copay_fen}


def _event(settlement: Settlement) -> dict[str, str]:
    return {"settlement_id": str(settlement.id), "program_id": str(settlement.program_id),
            "organization_id": str(settlement.organization_id), "month": format_month(settlement.month)}


@dataclass(frozen=True)
class MonthSettled:
    drafted: list[Settlement]
    skipped_approved: list[tuple[uuid.UUID, uuid.UUID]]


async def pending_pairs(session: AsyncSession, month: date) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """(programme, organisation) pairs with something to settle by the end of `month`, or a draft for it."""
    end = month_bounds(month)[1]
    c, x = Capture, Exclusion
    query: Any = union(
        select(c.program_id, c.organization_id).where(
            c.program_id.is_not(None), c.billable_at < end, ~exists().where(SettlementLine.capture_id == c.id)),
        select(x.program_id, x.organization_id).where(
            x.program_id.is_not(None), x.excluded_at < end, ~exists().where(SettlementLine.exclusion_id == x.id)),
        select(Settlement.program_id, Settlement.organization_id).where(
            Settlement.month == month, Settlement.status == "draft"),
    )
    rows = (await session.execute(query)).all()
    return sorted(((p, o) for p, o in rows), key=lambda r: (str(r[0]), str(r[1])))


async def settle_month(database: Database, clock: Clock, access: Access, month: date, *,
                       on_pair: Callable[[int], None] | None = None,
                       on_statement: Callable[[Settlement], None] | None = None) -> MonthSettled:
    """Draft (or refresh) every statement of the month, one transaction per statement so a long run commits as it
    goes and holds no more than one statement's work. Pairs whose statement is approved are skipped (their new
    items wait for a later month)."""
    async with database.unit_of_work() as session:
        pairs = await pending_pairs(session, month)
    if on_pair is not None:
        on_pair(len(pairs))
    drafted: list[Settlement] = []
    skipped: list[tuple[uuid.UUID, uuid.UUID]] = []
    for program_id, organization_id in pairs:
        try:
            async with database.unit_of_work() as session:
                settlement, _ = await draft_settlement(session, clock, access, program_id=str(program_id),
                                                       organization_id=str(organization_id), month=month)
        except InvalidState:
            skipped.append((program_id, organization_id))
            continue
        except NotFound:  # a programme outside the caller's scope
            continue
        drafted.append(settlement)
        if on_statement is not None:
            on_statement(settlement)
    return MonthSettled(drafted=drafted, skipped_approved=skipped)
