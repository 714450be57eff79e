"""Anomalies over visits for auditors: the exception flags, and billing that no one confirmed."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from kernel.authz import Access
from orders import visits

FLAG_KINDS = ("far_check_in", "too_short", "overlap", "impossible_travel", "no_confirmation")


@dataclass(frozen=True)
class Anomaly:
    kind: str
    visit_id: str
    caregiver_id: str
    organization_id: str
    elder_id: str
    region_code: str
    at: datetime | None
    resolution: str | None
    details: dict[str, Any] = field(default_factory=dict)


async def find(session: AsyncSession, access: Access, start: datetime, end: datetime) -> list[Anomaly]:
    found: list[Anomaly] = []
    for kind in FLAG_KINDS:
        rows = await visits.search(session, access, start=start, end=end, flag=kind, limit=2000)
        flags = await visits.flags_of(session, [v.id for v, _ in rows])
        for visit, region in rows:
            flag = next(f for f in flags[visit.id] if f.flag == kind)
            found.append(Anomaly(kind, str(visit.id), str(visit.caregiver_id), str(visit.organization_id),
                                 str(visit.elder_id), region, flag.raised_at, flag.decision, flag.details))
    for visit in await visits.billed_without_confirmation(session, access, start, end):
        found.append(Anomaly("billed_without_confirmation", str(visit.id), str(visit.caregiver_id),
                             str(visit.organization_id), str(visit.elder_id), "", visit.check_out_at, None,
                             {"billing": visit.billing}))
    never = datetime.max.replace(tzinfo=UTC)
    return sorted(found, key=lambda a: (a.at or never, a.kind))
