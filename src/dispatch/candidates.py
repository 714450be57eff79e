"""Gathering candidates for an order: live positions (or home bases for future windows), the organisations that
may serve the elder, qualification, blacklist, busy windows, continuity and workload; then `matching.rank`."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from billing import service as billing
from dispatch import live
from dispatch.matching import Candidate, Need, Scored, rank
from dispatch.models import Caregiver, Organization
from kernel.geo import haversine_m
from kernel.runtime import Runtime
from orders import visits
from orders.elders import ElderProfile, matching_profile
from orders.models import Order, ServiceType
from supervision.service import Subject, blacklisted_among

EMERGENCY = "emergency_response"


@dataclass(frozen=True)
class Ranked:
    order_id: uuid.UUID
    elder: ElderProfile
    need: Need
    ranked: list[Scored]
    considered: int  # caregivers looked at before the filters


async def need_of(session: AsyncSession, order: Order, elder: ElderProfile) -> Need:
    service = await session.get(ServiceType, order.service_code)
    assert service is not None
    return Need(required_skill=service.required_skill, min_certificate_level=service.min_certificate_level,
                languages=elder.languages, preferred_gender=elder.preferred_gender,
                emergency=order.service_code == EMERGENCY)


async def serving_organizations(session: AsyncSession, order: Order, on: datetime) -> set[uuid.UUID] | None:
    """Organisations that may serve the order (None: any, for emergencies). Quota-paid orders need a contract
    with the programme; self-pay ones an organisation of the elder's region or a service-area contract."""
    if order.service_code == EMERGENCY:
        return None
    day = on.date()
    if order.program_id is not None:
        return await billing.contracted_organizations(session, region_code=order.region_code,
                                                      service_code=order.service_code, on=day,
                                                      program_id=order.program_id)
    own = set((await session.scalars(select(Organization.id).where(
        Organization.region_code == order.region_code))).all())
    return own | await billing.contracted_organizations(session, region_code=order.region_code,
                                                        service_code=order.service_code, on=day, program_id=None)


def _shift_covers(shifts: list[dict[str, str | int]], start: datetime, end: datetime, tz: object) -> bool:
    """No shifts means always available; otherwise one shift must contain the local window."""
    if not shifts:
        return True
    local_start, local_end = start.astimezone(tz), end.astimezone(tz)  # type: ignore[arg-type]
    if local_start.date() != local_end.date():
        return False
    for shift in shifts:
        if int(shift["weekday"]) == local_start.isoweekday() and \
                str(shift["start"]) <= local_start.strftime("%H:%M:%S") and \
                local_end.strftime("%H:%M:%S") <= str(shift["end"]):
            return True
    return False


async def find_candidates(session: AsyncSession, rt: Runtime, order: Order, *,
                          exclude: set[uuid.UUID] | frozenset[uuid.UUID] = frozenset(),
                          live_positions: bool | None = None) -> Ranked:
    """Ranked candidates for an order. Live positions for asap/near-term orders (stale ones are not trusted);
    home bases and shifts for future windows (decisions §3)."""
    settings = rt.settings.dispatch
    elder = await matching_profile(session, order.elder_id)
    need = await need_of(session, order, elder)
    use_live = live_positions if live_positions is not None else \
        order.window_start <= rt.clock.now() + settings.batch_horizon
    distance: dict[uuid.UUID, float] = {}
    if use_live:
        for p in await live.nearby(rt, elder.lat, elder.lon, settings.radius_m, settings.candidate_limit):
            distance[p.caregiver_id] = p.distance_m if p.distance_m is not None else 0.0
    orgs = await serving_organizations(session, order, rt.clock.now())
    query = select(Caregiver).where(Caregiver.active)
    if use_live:
        query = query.where(Caregiver.id.in_(list(distance)), Caregiver.on_duty)
    else:
        query = query.where(Caregiver.home_lat.is_not(None))
    if orgs is not None:
        query = query.where(Caregiver.organization_id.in_(list(orgs)))
    rows = list((await session.scalars(query)).all()) if (distance or not use_live) and orgs != set() else []
    considered = len(rows)
    pool: list[Caregiver] = []
    for cg in rows:
        if cg.id in exclude:
            continue
        if not use_live:
            assert cg.home_lat is not None and cg.home_lon is not None
            d = haversine_m(elder.lat, elder.lon, cg.home_lat, cg.home_lon)
            if d > settings.radius_m or not _shift_covers(cg.shifts, order.window_start, order.window_end,
                                                          rt.settings.tz):
                continue
            distance[cg.id] = d
        pool.append(cg)
    now = rt.clock.now()
    listed = await blacklisted_among(
        session, [Subject("caregiver", cg.id) for cg in pool] + [Subject("organization", o)
                                                                 for o in {cg.organization_id for cg in pool}], now)
    blocked = {cg.id for cg in pool
               if Subject("caregiver", cg.id) in listed or Subject("organization", cg.organization_id) in listed}
    ids = [cg.id for cg in pool if cg.id not in blocked]
    busy = set() if need.emergency else await visits.busy_caregivers(session, ids, order.window_start,
                                                                        order.window_end)
    local_day = now.astimezone(rt.settings.tz).replace(hour=0, minute=0, second=0, microsecond=0)
    today = await visits.visits_in(session, ids, local_day, local_day + timedelta(days=1))
    served = await visits.previous_caregivers(session, elder.id, now - settings.continuity_lookback)
    candidates = [
        Candidate(
            caregiver_id=cg.id, organization_id=cg.organization_id, gender=cg.gender,
            languages=frozenset(cg.languages), skills=frozenset(cg.skills), certificate_level=cg.certificate_level,
            distance_m=distance[cg.id],
            rating=cg.rating_sum / cg.rating_count if cg.rating_count else None,
            visits_today=today.get(cg.id, 0), served_before=cg.id in served,
        )
        for cg in pool if cg.id not in blocked and cg.id not in busy
    ]
    return Ranked(order.id, elder, need, rank(need, candidates, settings.weights), considered)
