"""双随机 random inspections: a reproducible sample of a region's completed visits of a month (the seed is stored;
the same seed over the same visits gives the same sample), and the call-back results recorded against it."""

from __future__ import annotations

import random
import secrets
import uuid
from datetime import date, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from kernel.audit import record_audit
from kernel.authz import Access
from kernel.errors import InvalidState, NotFound, Unprocessable
from kernel.runtime import Runtime
from orders import visits
from orders.models import Visit
from supervision.models import Inspection, InspectionItem


def month_bounds(month: date, rt: Runtime) -> tuple[datetime, datetime]:
    start = datetime(month.year, month.month, 1, tzinfo=rt.settings.tz)
    end = datetime(month.year + (month.month == 12), month.month % 12 + 1, 1, tzinfo=rt.settings.tz)
    return start, end


def draw(population: list[uuid.UUID], size: int, seed: int) -> list[uuid.UUID]:
    """The sample: a seeded draw over the population in a canonical order (by id)."""
    ordered = sorted(population, key=str)
    return random.Random(seed).sample(ordered, min(size, len(ordered)))


async def create_inspection(session: AsyncSession, rt: Runtime, access: Access, *, region_code: str, month: date,
                            sample_size: int, seed: int | None) -> tuple[Inspection, list[uuid.UUID]]:
    if not access.covers(region_code=region_code):
        raise NotFound("region not found")
    start, end = month_bounds(month, rt)
    population: list[uuid.UUID] = []
    after = None
    while True:  # page through the month's completed visits (ids only kept)
        page = await visits.search(session, access, region_code=region_code, start=start, end=end,
                                   completed_only=True, limit=5000, after=after)
        population += [v.id for v, _ in page]
        if len(page) < 5000:
            break
        after = page[-1][0].id
    seed = seed if seed is not None else secrets.randbits(62)
    chosen = draw(population, sample_size, seed)
    inspection = Inspection(id=uuid.uuid4(), region_code=region_code, month=month, sample_size=sample_size, seed=seed,
                            population=len(population), created_by=access.actor_id, created_at=rt.clock.now())
    session.add(inspection)
    await session.flush()
    session.add_all(InspectionItem(inspection_id=inspection.id, visit_id=v, position=i) for i, v in enumerate(chosen))
    await record_audit(session, rt.clock, access, "inspection.create", "inspection", inspection.id,
                       {"region_code": region_code, "month": month.isoformat(), "seed": seed,
                        "population": len(population), "sampled": len(chosen)})
    return inspection, chosen


async def load_inspection(session: AsyncSession, access: Access, inspection_id: str
                          ) -> tuple[Inspection, list[InspectionItem]]:
    try:
        iid = uuid.UUID(inspection_id)
    except ValueError:
        raise NotFound("inspection not found") from None
    inspection = await session.get(Inspection, iid)
    if inspection is None:
        raise NotFound("inspection not found")
    access.ensure(what="inspection", region_code=inspection.region_code)
    items = list((await session.scalars(select(InspectionItem).where(InspectionItem.inspection_id == iid)
                                        .order_by(InspectionItem.position))).all())
    return inspection, items


async def record_result(session: AsyncSession, rt: Runtime, access: Access, inspection_id: str, visit_id: str,
                        reached: bool, confirmed: bool, notes: str | None) -> InspectionItem:
    """A call-back's result; an elder reached who confirms the service confirms an unconfirmed visit (hotline)."""
    inspection, items = await load_inspection(session, access, inspection_id)
    item = next((i for i in items if str(i.visit_id) == visit_id), None)
    if item is None:
        raise NotFound("visit is not in this inspection's sample")
    if item.checked_at is not None:
        raise InvalidState("this visit's call-back is already recorded")
    if confirmed and not reached:
        raise Unprocessable("a call-back that did not reach the elder cannot confirm", code="invalid_result")
    item.reached, item.confirmed, item.notes = reached, confirmed, notes
    item.checked_by, item.checked_at = access.actor_id, rt.clock.now()
    await record_audit(session, rt.clock, access, "inspection.result", "inspection", inspection.id,
                       {"visit_id": visit_id, "reached": reached, "confirmed": confirmed})
    visit = await session.get(Visit, item.visit_id, with_for_update=True)
    if confirmed and visit is not None and visit.confirmed_at is None and visit.status == "completed":
        await visits.confirm(session, rt, access, visit, None, None, "hotline")
    return item
