"""Gathering candidates for an order: live positions (or home bases for future windows), the organisations that
may serve the elder, qualification, blacklist, busy windows, continuity and workload; then `matching.rank`."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, bindparam, func, select
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


_REQUIREMENTS: dict[str, tuple[float, str | None, str]] = {}
REQUIREMENT_TTL_S = 60.0


async def _requirement(session: AsyncSession, code: str) -> tuple[str | None, str]:
    """(skill, certificate level) of a service; the catalogue barely changes, so it is kept for a minute."""
    cached = _REQUIREMENTS.get(code)
    if cached is not None and time.monotonic() - cached[0] < REQUIREMENT_TTL_S:
        return cached[1], cached[2]
    service = await session.get(ServiceType, code)
    assert service is not None
    _REQUIREMENTS[code] = (time.monotonic(), service.required_skill, service.min_certificate_level)
    return service.required_skill, service.min_certificate_level


def clear_cache() -> None:
    """Forget the cached service requirements (tests, between runtimes)."""
    _REQUIREMENTS.clear()


async def need_of(session: AsyncSession, order: Order, elder: ElderProfile) -> Need:
    skill, level = await _requirement(session, order.service_code)
    return Need(required_skill=skill, min_certificate_level=level,
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


_COLUMNS = (Caregiver.id, Caregiver.organization_id, Caregiver.gender, Caregiver.languages, Caregiver.skills,
            Caregiver.certificate_level, Caregiver.rating_sum, Caregiver.rating_count)


def _caregivers_query(use_live: bool, by_organization: bool) -> Select[Any]:
    """Active caregivers' matching columns: on duty among the GEOSEARCH's `ids`, or (future windows) all with a home
    base; of the organisations `orgs` if given."""
    columns = _COLUMNS if use_live else (*_COLUMNS, Caregiver.home_lat, Caregiver.home_lon, Caregiver.shifts)
    query = select(*columns).where(Caregiver.active)
    if use_live:
        query = query.where(Caregiver.id == func.any(bindparam("ids")), Caregiver.on_duty)
    else:
        query = query.where(Caregiver.home_lat.is_not(None))
    if by_organization:
        query = query.where(Caregiver.organization_id == func.any(bindparam("orgs")))
    return query


# built once per shape: constructing a statement costs more CPU than running it (bench/sos_path.py)
_CAREGIVERS = {(live, by_org): _caregivers_query(live, by_org) for live in (True, False) for by_org in (True, False)}


async def find_candidates(session: AsyncSession, rt: Runtime, order: Order, *,
                          exclude: set[uuid.UUID] | frozenset[uuid.UUID] = frozenset(),
                          live_positions: bool | None = None) -> Ranked:
    """Ranked candidates for an order. Live positions for asap/near-term orders (stale ones are not trusted);
    home bases and shifts for future windows (decisions §3).

    On the hot path (bench/dispatch_matching.py): one GEOSEARCH, then the candidates' matching columns, the
    blacklist and the visit facts (busy, today's load, continuity) in one query each; no ORM objects."""
    settings = rt.settings.dispatch
    elder = await matching_profile(session, order.elder_id, rt.cipher)  # the exact home: one decrypt per call
    need = await need_of(session, order, elder)
    use_live = live_positions if live_positions is not None else \
        order.window_start <= rt.clock.now() + settings.batch_horizon
    distance: dict[uuid.UUID, float] = {}
    if use_live:
        distance = dict(await live.nearby(rt, elder.lat, elder.lon, settings.radius_m, settings.candidate_limit))
        if not distance:
            return Ranked(order.id, elder, need, [], 0)
    orgs = await serving_organizations(session, order, rt.clock.now())
    if orgs == set():
        return Ranked(order.id, elder, need, [], 0)
    params = {"ids": list(distance)} if use_live else {}
    if orgs is not None:
        params["orgs"] = list(orgs)
    rows = (await session.execute(_CAREGIVERS[(use_live, orgs is not None)], params)).all()
    considered = len(rows)
    pool = []
    for row in rows:
        if row.id in exclude:
            continue
        if not use_live:
            d = haversine_m(elder.lat, elder.lon, row.home_lat, row.home_lon)
            if d > settings.radius_m or not _shift_covers(row.shifts, order.window_start, order.window_end,
                                                          rt.settings.tz):
                continue
            distance[row.id] = d
        pool.append(row)
    now = rt.clock.now()
    listed = await blacklisted_among(
        session, [Subject("caregiver", r.id) for r in pool] + [Subject("organization", o)
                                                               for o in {r.organization_id for r in pool}], now)
    pool = [r for r in pool
            if Subject("caregiver", r.id) not in listed and Subject("organization", r.organization_id) not in listed]
    local_day = now.astimezone(rt.settings.tz).replace(hour=0, minute=0, second=0, microsecond=0)
    facts = await visits.caregiver_facts(
        session, [r.id for r in pool], start=order.window_start, end=order.window_end, day_start=local_day,
        day_end=local_day + timedelta(days=1), elder_id=elder.id, served_since=now - settings.continuity_lookback)
    candidates = []
    for r in pool:
        busy, today, served = facts.get(r.id, (False, 0, False))
        if busy and not need.emergency:
            continue
        candidates.append(Candidate(
            caregiver_id=r.id, organization_id=r.organization_id, gender=r.gender, languages=frozenset(r.languages),
            skills=frozenset(r.skills), certificate_level=r.certificate_level, distance_m=distance[r.id],
            rating=r.rating_sum / r.rating_count if r.rating_count else None, visits_today=today,
            served_before=served))
    return Ranked(order.id, elder, need, rank(need, candidates, settings.weights), considered)
