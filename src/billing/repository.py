"""All of billing's SQL for quota and the ledger: named queries, row locks, conditional updates.

Concurrency (design §5): an entitlement or a programme changes only through `move_entitlement` / `move_program`,
conditional UPDATEs that refuse to overdraw whatever else committed meanwhile (PostgreSQL re-checks the WHERE
clause on the newest row version at READ COMMITTED), backed by CHECK constraints. Callers that need an exact
figure first lock the rows, always in the order reservation → entitlement → programme, so two transactions never
wait on each other in a cycle. Locks are `FOR NO KEY UPDATE`: every insert that references a programme (an
entitlement, a posting) holds a KEY SHARE lock on it, which a plain `FOR UPDATE` would wait for — two intakes
would deadlock.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import any_, insert, literal, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from billing import ledger
from billing.models import Contract, Entitlement, LedgerEntry, LedgerPosting, Program, ProgramRule
from billing.rules import ElderFacts, Rule, next_month
from kernel.regions import scope_covers
from orders.models import Elder


class LedgerInvariantBroken(RuntimeError):
    """A conditional update found no room it had just checked: a bug, never a user error."""


@dataclass(frozen=True)
class ProgramTerms:
    id: uuid.UUID
    name: str
    region_code: str
    period_start: date
    period_end: date
    budget_fen: int
    reserved_fen: int
    used_fen: int
    covered_services: tuple[str, ...]
    rules: tuple[Rule, ...]

    @property
    def budget_remaining(self) -> int:
        return self.budget_fen - self.reserved_fen - self.used_fen


@dataclass(frozen=True)
class Balance:
    """An entitlement's or programme's figures as locked or read."""

    id: uuid.UUID
    limit_fen: int  # quota of an entitlement, budget of a programme
    reserved_fen: int
    used_fen: int
    copay_percent: int = 0  # an entitlement's (from the rule it was granted by)

    @property
    def remaining(self) -> int:
        return self.limit_fen - self.reserved_fen - self.used_fen


async def elder_facts(session: AsyncSession, elder_id: uuid.UUID) -> ElderFacts | None:
    row = (await session.execute(
        select(Elder.categories, Elder.assessment_level, Elder.birth_date, Elder.region_code, Elder.status,
               Elder.status_changed_at).where(Elder.id == elder_id)
    )).one_or_none()
    if row is None:
        return None
    return ElderFacts(categories=tuple(row.categories or ()), assessment_level=row.assessment_level,
                      birth_date=row.birth_date, region_code=row.region_code, status=row.status,
                      status_changed_at=row.status_changed_at)


async def program_rules(session: AsyncSession, program_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[Rule]]:
    out: dict[uuid.UUID, list[Rule]] = {pid: [] for pid in program_ids}
    if not program_ids:
        return out
    rows = await session.scalars(
        select(ProgramRule).where(ProgramRule.program_id.in_(program_ids))
        .order_by(ProgramRule.program_id, ProgramRule.position)
    )
    for r in rows:
        out[r.program_id].append(Rule(position=r.position, monthly_quota_fen=r.monthly_quota_fen,
                                      copay_percent=r.copay_percent, category=r.category,
                                      assessment_level_min=r.assessment_level_min, min_age=r.min_age))
    return out


def _terms(program: Program, rules: list[Rule]) -> ProgramTerms:
    return ProgramTerms(id=program.id, name=program.name, region_code=program.region_code,
                        period_start=program.period_start, period_end=program.period_end,
                        budget_fen=program.budget_fen, reserved_fen=program.reserved_fen, used_fen=program.used_fen,
                        covered_services=tuple(program.covered_services), rules=tuple(rules))


async def covering_programs(session: AsyncSession, *, region_code: str, month: date,
                            service_code: str | None = None) -> list[ProgramTerms]:
    """Programmes whose region covers `region_code`, whose period overlaps the month and (when given) which cover
    the service, in drawing order: earliest `period_end`, then id."""
    query = (select(Program, ProgramRule).join(ProgramRule, ProgramRule.program_id == Program.id)
             .where(Program.period_start < next_month(month), Program.period_end >= month)
             .order_by(Program.period_end, Program.id, ProgramRule.position)
             .execution_options(populate_existing=True))
    if service_code is not None:
        query = query.where(literal(service_code) == any_(Program.covered_services))
    programs: dict[uuid.UUID, Program] = {}
    rules: dict[uuid.UUID, list[Rule]] = {}
    for program, r in (await session.execute(query)).all():  # one query: programmes with their rules
        if not scope_covers(program.region_code, region_code):
            continue
        programs.setdefault(program.id, program)
        rules.setdefault(program.id, []).append(
            Rule(position=r.position, monthly_quota_fen=r.monthly_quota_fen, copay_percent=r.copay_percent,
                 category=r.category, assessment_level_min=r.assessment_level_min, min_age=r.min_age))
    return [_terms(p, rules[p.id]) for p in programs.values()]


async def entitlement_for(session: AsyncSession, *, elder_id: uuid.UUID, program_id: uuid.UUID, month: date
                          ) -> Entitlement | None:
    return await session.scalar(select(Entitlement).where(
        Entitlement.elder_id == elder_id, Entitlement.program_id == program_id, Entitlement.month == month,
    ).execution_options(populate_existing=True))


async def materialise_entitlement(session: AsyncSession, *, elder_id: uuid.UUID, program_id: uuid.UUID,
                                  month: date, rule: Rule) -> uuid.UUID:
    """The entitlement row of (elder, programme, month), created from the rule if it does not exist yet. A
    concurrent creator wins harmlessly (the unique key waits for it, then this insert does nothing)."""
    inserted: uuid.UUID | None = await session.scalar(
        pg_insert(Entitlement).values(
            id=uuid.uuid4(), elder_id=elder_id, program_id=program_id, month=month, rule_position=rule.position,
            quota_fen=rule.monthly_quota_fen, reserved_fen=0, used_fen=0, copay_percent=rule.copay_percent,
        ).on_conflict_do_nothing(index_elements=["elder_id", "program_id", "month"]).returning(Entitlement.id)
    )
    if inserted is not None:
        return inserted
    existing = await session.scalar(select(Entitlement.id).where(
        Entitlement.elder_id == elder_id, Entitlement.program_id == program_id, Entitlement.month == month))
    assert existing is not None
    return existing


async def read_entitlement(session: AsyncSession, entitlement_id: uuid.UUID, *, lock: bool = False) -> Balance:
    query = select(Entitlement.id, Entitlement.quota_fen, Entitlement.reserved_fen, Entitlement.used_fen,
                   Entitlement.copay_percent).where(Entitlement.id == entitlement_id)
    if lock:
        query = query.with_for_update(key_share=True)
    row = (await session.execute(query)).one()
    return Balance(row.id, row.quota_fen, row.reserved_fen, row.used_fen, row.copay_percent)


async def read_program(session: AsyncSession, program_id: uuid.UUID, *, lock: bool = False) -> Balance:
    query = select(Program.id, Program.budget_fen, Program.reserved_fen, Program.used_fen).where(
        Program.id == program_id)
    if lock:
        query = query.with_for_update(key_share=True)
    row = (await session.execute(query)).one()
    return Balance(row.id, row.budget_fen, row.reserved_fen, row.used_fen)


async def move_entitlement(session: AsyncSession, entitlement_id: uuid.UUID, *, reserved: int = 0,
                           used: int = 0) -> None:
    """Change an entitlement's reserved and used figures, only if it stays within its quota and above zero."""
    if reserved == 0 and used == 0:
        return
    e = Entitlement
    changed = await session.scalar(
        update(e).where(
            e.id == entitlement_id,
            e.reserved_fen + reserved >= 0,
            e.used_fen + used >= 0,
            e.reserved_fen + reserved + e.used_fen + used <= e.quota_fen,
        ).values(reserved_fen=e.reserved_fen + reserved, used_fen=e.used_fen + used).returning(e.id)
    )
    if changed is None:
        raise LedgerInvariantBroken(f"entitlement {entitlement_id} has no room for {reserved:+}/{used:+} fen")


async def move_program(session: AsyncSession, program_id: uuid.UUID, *, reserved: int = 0, used: int = 0) -> None:
    """Change a programme's reserved and used budget, only if it stays within the budget and above zero."""
    if reserved == 0 and used == 0:
        return
    p = Program
    changed = await session.scalar(
        update(p).where(
            p.id == program_id,
            p.reserved_fen + reserved >= 0,
            p.used_fen + used >= 0,
            p.reserved_fen + reserved + p.used_fen + used <= p.budget_fen,
        ).values(reserved_fen=p.reserved_fen + reserved, used_fen=p.used_fen + used).returning(p.id)
    )
    if changed is None:
        raise LedgerInvariantBroken(f"programme {program_id} has no budget for {reserved:+}/{used:+} fen")


async def post(session: AsyncSession, posting: ledger.Posting, at: datetime) -> bool:
    """Record a posting once: answers False when its key was posted before (nothing is written again).

    The legs go in one INSERT statement: the statement trigger on `ledger_entries` refuses a posting whose legs
    do not sum to zero, so they must arrive together.
    """
    if not posting.balanced:
        raise LedgerInvariantBroken(f"unbalanced posting {posting.key}")
    posting_id = await session.scalar(
        pg_insert(LedgerPosting).values(key=posting.key, kind=posting.kind, order_id=posting.order_id,
                                        program_id=posting.program_id, posted_at=at)
        .on_conflict_do_nothing(index_elements=["key"]).returning(LedgerPosting.id)
    )
    if posting_id is None:
        return False
    if posting.legs:
        await session.execute(insert(LedgerEntry).values([
            {"posting_id": posting_id, "account": leg.account, "account_id": leg.account_id,
             "amount_fen": leg.amount_fen}
            for leg in posting.legs
        ]))
    return True


async def posted(session: AsyncSession, key: str) -> bool:
    return await session.scalar(select(LedgerPosting.id).where(LedgerPosting.key == key)) is not None


async def contracted_organization_ids(session: AsyncSession, *, region_code: str, service_code: str, on: date,
                                     program_id: uuid.UUID | None) -> set[uuid.UUID]:
    query = select(Contract.organization_id, Contract.region_codes).where(
        Contract.valid_from <= on, Contract.valid_to >= on,
        literal(service_code) == any_(Contract.service_codes),
        Contract.program_id.is_(None) if program_id is None else Contract.program_id == program_id,
    )
    rows = (await session.execute(query)).all()
    return {org for org, regions in rows if any(scope_covers(code, region_code) for code in regions)}
