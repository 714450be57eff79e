"""Entitlements (免申即享): an eligible elder holds them without applying. Computed from the programmes' rules on
demand; the row of (elder, programme, month) is materialised the first time an order draws on it, and from then on
that row is the record (its quota fixed for the month, its reserved and used figures moved only by the ledger)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from billing import repository, schemas
from billing.models import Entitlement, Program
from billing.rules import ElderFacts, best_rule, eligible_in_month, format_month, month_of
from kernel.audit import record_audit
from kernel.authz import Access
from kernel.clock import Clock
from orders.elders import load_elder


@dataclass(frozen=True)
class EntitlementView:
    program_id: uuid.UUID
    program_name: str
    period_end: date
    month: date
    quota_fen: int
    reserved_fen: int
    used_fen: int
    copay_percent: int

    @property
    def remaining_fen(self) -> int:
        return self.quota_fen - self.reserved_fen - self.used_fen


async def entitlements_of(session: AsyncSession, elder_id: uuid.UUID, elder: ElderFacts, month: date
                          ) -> list[EntitlementView]:
    """One entitlement per programme for the month: the materialised row where there is one, else what the rules
    grant (nothing for an elder no longer eligible that month). In drawing order: earliest period end, then id."""
    rows = (await session.execute(
        select(Entitlement, Program.name, Program.period_end).join(Program, Program.id == Entitlement.program_id)
        .where(Entitlement.elder_id == elder_id, Entitlement.month == month)
        .execution_options(populate_existing=True)
    )).all()
    out = {
        e.program_id: EntitlementView(e.program_id, name, period_end, month, e.quota_fen, e.reserved_fen, e.used_fen,
                                      e.copay_percent)
        for e, name, period_end in rows
    }
    if eligible_in_month(elder, month):
        for terms in await repository.covering_programs(session, region_code=elder.region_code, month=month):
            if terms.id in out:
                continue
            rule = best_rule(terms.rules, elder, month)
            if rule is not None:
                out[terms.id] = EntitlementView(terms.id, terms.name, terms.period_end, month,
                                                rule.monthly_quota_fen, 0, 0, rule.copay_percent)
    return sorted(out.values(), key=lambda v: (v.period_end, str(v.program_id)))


async def read_entitlements(session: AsyncSession, clock: Clock, access: Access, elder_id: str,
                            month: date | None) -> list[schemas.Entitlement]:
    elder = await load_elder(session, access, elder_id)
    month = month or month_of(clock.now())
    facts = ElderFacts(categories=tuple(elder.categories or ()), assessment_level=elder.assessment_level,
                       birth_date=elder.birth_date, region_code=elder.region_code, status=elder.status,
                       status_changed_at=elder.status_changed_at)
    views = await entitlements_of(session, elder.id, facts, month)
    if access.role != "elder":
        await record_audit(session, clock, access, "entitlement.read", "elder", elder.id,
                           {"month": format_month(month), "programs": len(views)})
    return [
        schemas.Entitlement(program_id=str(v.program_id), program_name=v.program_name, month=format_month(v.month),
                            quota_fen=v.quota_fen, reserved_fen=v.reserved_fen, used_fen=v.used_fen,
                            remaining_fen=v.remaining_fen, copay_percent=v.copay_percent)
        for v in views
    ]
