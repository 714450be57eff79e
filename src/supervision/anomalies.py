"""Anomalies over visits for auditors: the exception flags, billing that no one confirmed, and one device or app
installation confirming the visits of many different elders (a caregiver confirming on the elders' behalf)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from kernel.authz import Access
from orders import visits
from orders.models import Order, Visit

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


async def find(session: AsyncSession, access: Access, start: datetime, end: datetime, *,
               shared_source_elders: int = 3) -> list[Anomaly]:
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
    found.extend(await shared_confirmation_sources(session, access, start, end, shared_source_elders))
    never = datetime.max.replace(tzinfo=UTC)
    return sorted(found, key=lambda a: (a.at or never, a.kind))


async def shared_confirmation_sources(session: AsyncSession, access: Access, start: datetime, end: datetime,
                                      threshold: int) -> list[Anomaly]:
    """Visits confirmed in [start, end) from a source (device, app installation, network client) that confirmed
    visits of at least `threshold` different elders in that period. Hotline call-backs (a dispatcher recording
    many elders' answers) are not confirmations from a device and are left out."""
    in_period = (access.region_clause(Order.region_code), Visit.confirmed_at >= start, Visit.confirmed_at < end,
                 Visit.confirmed_from.is_not(None), Visit.confirmed_via != "hotline")
    elders = func.count(Visit.elder_id.distinct())
    shared = (select(Visit.confirmed_from, elders.label("elders"), func.count().label("visits"))
              .join(Order, Order.id == Visit.order_id).where(*in_period)
              .group_by(Visit.confirmed_from).having(elders >= threshold))
    groups = {r.confirmed_from: (r.elders, r.visits) for r in (await session.execute(shared)).all()}
    if not groups:
        return []
    rows = await session.execute(
        select(Visit, Order.region_code).join(Order, Order.id == Visit.order_id)
        .where(*in_period, Visit.confirmed_from.in_(groups)).order_by(Visit.confirmed_at).limit(2000))
    return [Anomaly("shared_confirmation_source", str(v.id), str(v.caregiver_id), str(v.organization_id),
                    str(v.elder_id), region, v.confirmed_at, None,
                    {"source": v.confirmed_from, "elders": groups[v.confirmed_from][0],
                     "visits": groups[v.confirmed_from][1], "via": v.confirmed_via})
            for v, region in rows.all()]
