"""Visits: from an accepted offer to a verified, confirmed (or excepted) service, and the facts dispatch asks of
visits (who is busy, who served an elder before, workload today).

Check-in and check-out positions are converted to WGS-84 first, so a phone's GCJ-02 datum never makes a visit
"far". Exceptions (`far_check_in`, `too_short`, `overlap`, `impossible_travel`, `no_confirmation`) are flags a
dispatcher resolves; billing captures a visit only when it is completed, confirmed (or its missing confirmation
approved) and every flag approved.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import and_, bindparam, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from billing import service as billing
from kernel.audit import record_audit
from kernel.authz import Access
from kernel.errors import InvalidState, NotFound, Unprocessable
from kernel.geo import haversine_m, to_wgs84
from kernel.ids import parse_id
from kernel.outbox import emit
from kernel.runtime import Runtime
from orders.home import CHECK_IN_CONTEXT, CHECK_OUT_CONTEXT, open_home, open_point, seal_point
from orders.models import Elder, Order, ServiceType, Visit, VisitFlag
from orders.pricing import price_fen
from orders.service import apply_event, load_order
from supervision.service import Blacklisted

LIVE = ("assigned", "en_route", "in_service")
Outcome = Literal["completed", "elder_absent", "aborted"]


# --- facts dispatch asks of visits ---------------------------------------------------------------------------

async def busy_caregivers(session: AsyncSession, ids: Iterable[uuid.UUID], start: datetime, end: datetime
                          ) -> set[uuid.UUID]:
    """Caregivers with a live visit whose window overlaps [start, end)."""
    ids = list(ids)
    if not ids:
        return set()
    rows = await session.scalars(select(Visit.caregiver_id).where(
        Visit.caregiver_id.in_(ids), Visit.status.in_(LIVE), Visit.window_start < end, Visit.window_end > start))
    return set(rows.all())


async def previous_caregivers(session: AsyncSession, elder_id: uuid.UUID, since: datetime | None = None
                              ) -> set[uuid.UUID]:
    """Caregivers who checked out of a visit to the elder (since `since`, or ever)."""
    query = select(Visit.caregiver_id).distinct().where(Visit.elder_id == elder_id, Visit.check_out_at.is_not(None))
    if since is not None:
        query = query.where(Visit.check_out_at >= since)
    return set((await session.scalars(query)).all())


# Built once: constructing the expression costs more than running it (bench/sos_path.py); values are bound per call.
_FACTS = select(
    Visit.caregiver_id,
    func.bool_or(and_(Visit.status.in_(LIVE), Visit.window_start < bindparam("end"),
                      Visit.window_end > bindparam("start"))),
    func.count().filter(Visit.status != "withdrawn", Visit.window_start >= bindparam("day_start"),
                        Visit.window_start < bindparam("day_end")),
    func.bool_or(and_(Visit.elder_id == bindparam("elder_id"), Visit.check_out_at >= bindparam("served_since"))),
).where(Visit.caregiver_id == func.any(bindparam("ids"))).group_by(Visit.caregiver_id)


async def caregiver_facts(session: AsyncSession, ids: Iterable[uuid.UUID], *, start: datetime, end: datetime,
                          day_start: datetime, day_end: datetime, elder_id: uuid.UUID, served_since: datetime
                          ) -> dict[uuid.UUID, tuple[bool, int, bool]]:
    """For matching, in one query: per caregiver (busy in [start, end), visits in the day, served this elder since)."""
    ids = list(ids)
    if not ids:
        return {}
    rows = await session.execute(_FACTS, {"ids": ids, "start": start, "end": end, "day_start": day_start,
                                          "day_end": day_end, "elder_id": elder_id, "served_since": served_since})
    return {cid: (bool(b), int(n), bool(s)) for cid, b, n, s in rows.all()}


async def visits_in(session: AsyncSession, ids: Iterable[uuid.UUID], start: datetime, end: datetime
                    ) -> dict[uuid.UUID, int]:
    ids = list(ids)
    if not ids:
        return {}
    rows = await session.execute(
        select(Visit.caregiver_id, func.count()).where(
            Visit.caregiver_id.in_(ids), Visit.status != "withdrawn",
            Visit.window_start >= start, Visit.window_start < end,
        ).group_by(Visit.caregiver_id))
    return {cid: int(n) for cid, n in rows.all()}


# --- lifecycle -----------------------------------------------------------------------------------------------

def _emit(session: AsyncSession, rt: Runtime, visit: Visit, verb: str, region_code: str,
          flags: list[str] | None = None) -> None:
    emit(session, rt.clock, f"orders.visit.{verb}", str(visit.id), {
        "visit_id": str(visit.id), "order_id": str(visit.order_id), "caregiver_id": str(visit.caregiver_id),
        "elder_id": str(visit.elder_id), "region_code": region_code, "status": visit.status,
        "flags": flags or [],
    })


async def create_visit(session: AsyncSession, rt: Runtime, order: Order, caregiver_id: uuid.UUID,
                       organization_id: uuid.UUID) -> Visit:
    visit = Visit(id=uuid.uuid4(), order_id=order.id, caregiver_id=caregiver_id, organization_id=organization_id,
                  elder_id=order.elder_id, service_code=order.service_code, status="assigned",
                  window_start=order.window_start, window_end=order.window_end, assigned_at=rt.clock.now())
    session.add(visit)
    await session.flush()
    order.visit_id = visit.id
    order.assigned_caregiver_id = caregiver_id
    return visit


async def withdraw_live_visit(session: AsyncSession, rt: Runtime, order: Order, reason: str) -> None:
    """End an order's visit before check-in (cancellation, reassignment)."""
    if order.visit_id is None:
        return
    visit = await session.get(Visit, order.visit_id, with_for_update=True)
    if visit is None or visit.status not in ("assigned", "en_route"):
        return
    visit.status = "withdrawn"
    visit.withdrawn_reason = reason
    order.visit_id = None
    order.assigned_caregiver_id = None
    _emit(session, rt, visit, "withdrawn", order.region_code)
    from dispatch import offers

    await offers.release_accepted(session, rt, order.id, f"visit withdrawn: {reason}")


async def own_visit(session: AsyncSession, access: Access, visit_id: str, *, for_update: bool = True) -> Visit:
    """A caregiver touches only its own visits; others' answer 404."""
    visit = await session.get(Visit, parse_id(visit_id, "visit"), with_for_update=for_update)
    if visit is None:
        raise NotFound("visit not found")
    order = await session.get(Order, visit.order_id)
    assert order is not None
    access.ensure(what="visit", caregiver_id=visit.caregiver_id, elder_id=visit.elder_id,
                  region_code=order.region_code, organization_id=visit.organization_id)
    return visit


def _require(visit: Visit, *statuses: str) -> None:
    if visit.status not in statuses:
        raise InvalidState(f"the visit is {visit.status}", details={"status": visit.status})


async def depart(session: AsyncSession, rt: Runtime, access: Access, visit_id: str) -> Visit:
    visit = await own_visit(session, access, visit_id)
    _require(visit, "assigned")
    order = await load_order(session, visit.order_id, for_update=True)
    await apply_event(session, rt, order, "depart", access.actor_id)
    visit.status = "en_route"
    visit.departed_at = rt.clock.now()
    _emit(session, rt, visit, "departed", order.region_code)
    await record_audit(session, rt.clock, access, "visit.depart", "visit", visit.id, {})
    return visit


async def _raise_flag(session: AsyncSession, rt: Runtime, visit: Visit, flag: str, details: dict[str, Any]) -> None:
    existing = await session.get(VisitFlag, (visit.id, flag))
    if existing is None:
        session.add(VisitFlag(visit_id=visit.id, flag=flag, raised_at=rt.clock.now(), details=details))


async def check_in(session: AsyncSession, rt: Runtime, access: Access, visit_id: str, lat: float, lon: float,
                   crs: Literal["wgs84", "gcj02", "bd09"]) -> Visit:
    visit = await own_visit(session, access, visit_id)
    _require(visit, "assigned", "en_route")
    order = await load_order(session, visit.order_id, for_update=True)
    elder = await session.get(Elder, visit.elder_id)
    assert elder is not None
    lat, lon = to_wgs84(lat, lon, crs)
    now = rt.clock.now()
    visit.check_in_at = now
    visit.check_in_enc = seal_point(rt.cipher, lat, lon, context=CHECK_IN_CONTEXT)
    home_lat, home_lon = open_home(rt.cipher, elder.home_enc)
    visit.check_in_distance_m = round(haversine_m(lat, lon, home_lat, home_lon), 1)
    flags = []
    if visit.check_in_distance_m > rt.settings.visits.far_check_in_m:
        flags.append("far_check_in")
        await _raise_flag(session, rt, visit, "far_check_in", {"distance_m": visit.check_in_distance_m})
    previous = await session.scalar(
        select(Visit).where(Visit.caregiver_id == visit.caregiver_id, Visit.id != visit.id,
                            Visit.check_out_at.is_not(None), Visit.check_out_at <= now)
        .order_by(Visit.check_out_at.desc()).limit(1))
    if previous is not None and previous.check_out_enc is not None and previous.check_out_at is not None:
        out_lat, out_lon = open_point(rt.cipher, previous.check_out_enc, context=CHECK_OUT_CONTEXT)
        km = haversine_m(out_lat, out_lon, lat, lon) / 1000
        hours = max((now - previous.check_out_at).total_seconds() / 3600, 1 / 3600)
        if km > 1 and km / hours > rt.settings.visits.travel_speed_kmh:
            flags.append("impossible_travel")
            await _raise_flag(session, rt, visit, "impossible_travel",
                              {"km": round(km, 2), "minutes": round(hours * 60, 1), "after_visit": str(previous.id)})
    visit.status = "in_service"
    await apply_event(session, rt, order, "check_in", access.actor_id)
    _emit(session, rt, visit, "checked_in", order.region_code, flags)
    await record_audit(session, rt.clock, access, "visit.check_in", "visit", visit.id,
                       {"distance_m": visit.check_in_distance_m, "flags": flags})
    return visit


async def check_out(session: AsyncSession, rt: Runtime, access: Access, visit_id: str, lat: float, lon: float,
                    crs: Literal["wgs84", "gcj02", "bd09"], tasks_done: list[str], notes: str | None,
                    outcome: Outcome) -> Visit:
    visit = await own_visit(session, access, visit_id)
    _require(visit, "in_service")
    assert visit.check_in_at is not None
    order = await load_order(session, visit.order_id, for_update=True)
    service = await session.get(ServiceType, visit.service_code)
    assert service is not None
    lat, lon = to_wgs84(lat, lon, crs)
    now = rt.clock.now()
    visit.check_out_at = now
    visit.check_out_enc = seal_point(rt.cipher, lat, lon, context=CHECK_OUT_CONTEXT)
    visit.duration_min = max(0, int((now - visit.check_in_at).total_seconds() // 60))
    visit.tasks_done, visit.notes, visit.outcome = tasks_done, notes, outcome
    visit.actual_price_fen = price_fen(service.unit, service.price_fen, visit.duration_min)
    visit.status = "completed"
    flags = []
    too_short_below = service.default_duration_min * rt.settings.visits.too_short_fraction
    if outcome == "completed" and visit.duration_min < too_short_below:
        flags.append("too_short")
        await _raise_flag(session, rt, visit, "too_short",
                          {"duration_min": visit.duration_min, "expected_min": service.default_duration_min})
    overlapping = await session.scalar(
        select(Visit.id).where(
            Visit.caregiver_id == visit.caregiver_id, Visit.id != visit.id, Visit.check_in_at.is_not(None),
            Visit.check_in_at < now,
            or_(Visit.check_out_at.is_(None), Visit.check_out_at > visit.check_in_at),
            Visit.status.in_(("in_service", "completed")),
        ).limit(1))
    if overlapping is not None:
        flags.append("overlap")
        await _raise_flag(session, rt, visit, "overlap", {"other_visit": str(overlapping)})
    await apply_event(session, rt, order, "check_out", access.actor_id)
    _emit(session, rt, visit, "checked_out", order.region_code, flags)
    await record_audit(session, rt.clock, access, "visit.check_out", "visit", visit.id,
                       {"duration_min": visit.duration_min, "outcome": outcome, "flags": flags})
    await settle_billing(session, rt, visit, order)
    return visit


async def confirm(session: AsyncSession, rt: Runtime, actor: Any, visit: Visit, rating: int | None,
                  comment: str | None, via: Literal["app", "device", "hotline"], source: str | None = None) -> Visit:
    """The elder (app, device button) or a recorded hotline call-back confirms; a rating feeds matching.

    `source` names what the confirmation came from (`device:<id>`, `app:<installation>`, `net:<hash>`), for the
    auditors' "many visits confirmed from one device" anomaly; a device actor (`system:device:<id>`) names itself."""
    if visit.status != "completed":
        raise InvalidState(f"the visit is {visit.status}; it can be confirmed after check-out")
    if visit.confirmed_at is not None:
        raise InvalidState("the visit is already confirmed")
    order = await load_order(session, visit.order_id, for_update=True)
    visit.confirmed_at, visit.confirmed_via = rt.clock.now(), via
    if source is None and str(actor.actor_id).startswith("system:device:"):
        source = "device:" + str(actor.actor_id).removeprefix("system:device:")
    visit.confirmed_from = source[:80] if source else None
    if rating is not None:
        visit.rating, visit.comment = rating, comment
        from dispatch.registry import record_rating

        await record_rating(session, visit.caregiver_id, rating)
    await apply_event(session, rt, order, "confirm", actor.actor_id)
    _emit(session, rt, visit, "confirmed", order.region_code)
    await record_audit(session, rt.clock, actor, "visit.confirm", "visit", visit.id,
                       {"rating": rating, "via": via, "source": visit.confirmed_from})
    await settle_billing(session, rt, visit, order)
    return visit


async def withdraw(session: AsyncSession, rt: Runtime, access: Access, visit_id: str, reason: str) -> Visit:
    """The caregiver gives the visit back before check-in: the order is dispatched again without it."""
    visit = await own_visit(session, access, visit_id)
    _require(visit, "assigned", "en_route")
    order = await load_order(session, visit.order_id, for_update=True)
    caregiver_id = visit.caregiver_id
    await withdraw_live_visit(session, rt, order, reason)
    await apply_event(session, rt, order, "withdraw", access.actor_id, reason)
    await record_audit(session, rt.clock, access, "visit.withdraw", "visit", visit.id, {"reason": reason})
    from dispatch import offers

    await offers.dispatch_order(session, rt, order, exclude={caregiver_id})
    return visit


# --- exceptions and billing ----------------------------------------------------------------------------------

async def flags_of(session: AsyncSession, visit_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, list[VisitFlag]]:
    ids = list(visit_ids)
    out: dict[uuid.UUID, list[VisitFlag]] = {i: [] for i in ids}
    if ids:
        for flag in (await session.scalars(select(VisitFlag).where(VisitFlag.visit_id.in_(ids)))).all():
            out[flag.visit_id].append(flag)
    return out


async def settle_billing(session: AsyncSession, rt: Runtime, visit: Visit, order: Order) -> None:
    """Tell billing where a finished visit stands: captured when verified, held while an exception is open,
    excluded (and the reservation released) when an exception is rejected or the visit did not happen."""
    if visit.status != "completed" or visit.billing in ("captured", "excluded"):
        return
    flags = (await flags_of(session, [visit.id]))[visit.id]
    rejected = [f for f in flags if f.decision == "rejected"]
    open_flags = [f for f in flags if f.decision is None]
    if rejected or visit.outcome != "completed":
        reason = f"rejected: {rejected[0].flag}: {rejected[0].reason}" if rejected else f"outcome: {visit.outcome}"
        await billing.exclude(session, rt.clock, visit, reason)
        await billing.release(session, rt.clock, order)
        visit.billing = "excluded"
    elif open_flags:
        if visit.billing != "held":
            await billing.exclude(session, rt.clock, visit,
                                  "unresolved: " + ", ".join(sorted(f.flag for f in open_flags)))
            visit.billing = "held"
    elif visit.confirmed_at is not None or any(f.flag == "no_confirmation" and f.decision == "approved"
                                                for f in flags):
        try:
            await billing.capture(session, rt.clock, visit)
        except Blacklisted as refused:  # the confirmation stands; the visit is not billed, and the statement says why
            await billing.exclude(session, rt.clock, visit, refused.code)
            await billing.release(session, rt.clock, order)
            visit.billing = "excluded"
        else:
            visit.billing = "captured"


async def resolve_flag(session: AsyncSession, rt: Runtime, access: Access, visit_id: str, flag: str,
                       decision: Literal["approved", "rejected"], reason: str) -> VisitFlag:
    visit = await own_visit(session, access, visit_id)
    item = await session.get(VisitFlag, (visit.id, flag), with_for_update=True)
    if item is None:
        raise NotFound(f"visit has no {flag} flag")
    if item.decision is not None:
        raise InvalidState(f"the {flag} flag is already {item.decision}")
    item.decision, item.reason, item.resolved_by, item.resolved_at = decision, reason, access.actor_id, rt.clock.now()
    order = await load_order(session, visit.order_id, for_update=True)
    _emit(session, rt, visit, "flag_resolved", order.region_code, [flag])
    await record_audit(session, rt.clock, access, "visit.flag.resolve", "visit", visit.id,
                       {"flag": flag, "decision": decision, "reason": reason})
    await session.flush()
    await settle_billing(session, rt, visit, order)
    return item


async def raise_missing_confirmations(session: AsyncSession, rt: Runtime, limit: int = 500) -> int:
    """`no_confirmation` for visits checked out longer than `visits.confirm_within` ago without a confirmation."""
    due = rt.clock.now() - rt.settings.visits.confirm_within
    visits = (await session.scalars(
        select(Visit).where(
            Visit.status == "completed", Visit.outcome == "completed", Visit.confirmed_at.is_(None),
            Visit.check_out_at <= due,
            ~select(VisitFlag.visit_id).where(and_(VisitFlag.visit_id == Visit.id,
                                                   VisitFlag.flag == "no_confirmation")).exists(),
        ).limit(limit).with_for_update(skip_locked=True))).all()
    for visit in visits:
        hours = rt.settings.visits.confirm_within / timedelta(hours=1)
        await _raise_flag(session, rt, visit, "no_confirmation", {"confirm_within_h": hours})
        order = await load_order(session, visit.order_id)
        await session.flush()
        _emit(session, rt, visit, "flagged", order.region_code, ["no_confirmation"])
        await settle_billing(session, rt, visit, order)
    return len(visits)


def check_tasks(tasks: list[str]) -> list[str]:
    cleaned = [t.strip() for t in tasks if t.strip()]
    if len(cleaned) > 50 or any(len(t) > 100 for t in cleaned):
        raise Unprocessable("at most 50 tasks of at most 100 characters", code="invalid_tasks")
    return cleaned


# --- supervision's read side ------------------------------------------------------------------------------------

async def search(session: AsyncSession, access: Access, *, region_code: str | None = None,
                 organization_id: uuid.UUID | None = None, caregiver_id: uuid.UUID | None = None,
                 elder_id: uuid.UUID | None = None, start: datetime | None = None, end: datetime | None = None,
                 flag: str | None = None, completed_only: bool = False, limit: int = 500,
                 after: uuid.UUID | None = None) -> list[tuple[Visit, str]]:
    """Visits in the caller's scope with the region of their order, by window start then id (for auditors)."""
    query = select(Visit, Order.region_code).join(Order, Order.id == Visit.order_id).where(
        access.region_clause(Order.region_code), Visit.status != "withdrawn")
    if region_code:
        query = query.where(Order.region_code == region_code)
    if organization_id:
        query = query.where(Visit.organization_id == organization_id)
    if caregiver_id:
        query = query.where(Visit.caregiver_id == caregiver_id)
    if elder_id:
        query = query.where(Visit.elder_id == elder_id)
    if start:
        query = query.where(Visit.window_start >= start)
    if end:
        query = query.where(Visit.window_start < end)
    if completed_only:
        query = query.where(Visit.status == "completed", Visit.outcome == "completed")
    if flag:
        query = query.where(select(VisitFlag.visit_id).where(VisitFlag.visit_id == Visit.id,
                                                             VisitFlag.flag == flag).exists())
    if after:
        query = query.where(Visit.id > after)
    rows = await session.execute(query.order_by(Visit.id).limit(limit))
    return [(v, r) for v, r in rows.all()]


async def billed_without_confirmation(session: AsyncSession, access: Access, start: datetime, end: datetime
                                      ) -> list[Visit]:
    """Captured visits that no one confirmed and whose missing confirmation no dispatcher approved."""
    query = (select(Visit).join(Order, Order.id == Visit.order_id)
             .where(access.region_clause(Order.region_code), Visit.billing == "captured", Visit.confirmed_at.is_(None),
                    Visit.window_start >= start, Visit.window_start < end,
                    ~select(VisitFlag.visit_id).where(VisitFlag.visit_id == Visit.id,
                                                      VisitFlag.flag == "no_confirmation",
                                                      VisitFlag.decision == "approved").exists()))
    return list((await session.scalars(query.limit(1000))).all())
