"""The batch assigner: scheduled orders (window start beyond `dispatch.batch_horizon`) are offered together, per
region and time slot, by a min-cost matching of the matcher's scores instead of first come, first served.

It runs periodically in every instance (one at a time: an advisory lock) and on demand (`vnh dispatch batch`).
Within one slot (a local day and two-hour block) a caregiver gets at most one order; declined or expired batch
offers put their order back for the next run, which does not offer it to the same caregiver again.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from dispatch import offers
from dispatch.assignment import FORBIDDEN, optimal
from dispatch.candidates import find_candidates
from dispatch.models import Offer
from kernel.runtime import Runtime
from orders.models import Order

BATCH_LOCK_ID = 0x766E68_0002
LOOKAHEAD = timedelta(days=7)


@dataclass
class BatchReport:
    orders: int = 0
    offered: int = 0
    without_candidate: int = 0
    slots: int = 0
    total_cost: float = 0.0
    offers: list[tuple[uuid.UUID, uuid.UUID]] = field(default_factory=list)


def _slot(rt: Runtime, order: Order) -> tuple[str, str, int]:
    local = order.window_start.astimezone(rt.settings.tz)
    return order.region_code, local.date().isoformat(), local.hour // 2


async def assign_batch(session: AsyncSession, rt: Runtime, *, region_code: str | None = None,
                       until: datetime | None = None) -> BatchReport:
    """Offer every open scheduled order of the coming week (or until `until`) that has a candidate."""
    report = BatchReport()
    if not await session.scalar(select(func.pg_try_advisory_xact_lock(BATCH_LOCK_ID))):
        return report  # another instance is running the batch
    now = rt.clock.now()
    query = select(Order).where(Order.scheduled, Order.status == "created", Order.window_start > now,
                                Order.window_start <= (until or now + LOOKAHEAD))
    if region_code:
        query = query.where(Order.region_code == region_code)
    orders = list((await session.scalars(query.order_by(Order.window_start, Order.created_at)
                                          .with_for_update(skip_locked=True))).all())
    report.orders = len(orders)
    slots: dict[tuple[str, str, int], list[Order]] = defaultdict(list)
    for order in orders:
        slots[_slot(rt, order)].append(order)
    for slot_orders in slots.values():
        report.slots += 1
        scored: list[dict[uuid.UUID, tuple[float, float]]] = []
        for order in slot_orders:
            tried = set((await session.scalars(select(Offer.caregiver_id).where(Offer.order_id == order.id))).all())
            ranked = await find_candidates(session, rt, order, exclude=tried, live_positions=False)
            scored.append({s.candidate.caregiver_id: (s.score, s.candidate.distance_m) for s in ranked.ranked})
        columns = sorted({cid for row in scored for cid in row}, key=str)
        if not columns:
            report.without_candidate += len(slot_orders)
            continue
        index = {cid: j for j, cid in enumerate(columns)}
        # scores may be negative (continuity, rating): shift so every allowed cost is >= 0
        shift = -min(min(score for score, _ in row.values()) for row in scored if row) if any(scored) else 0.0
        cost = np.full((len(slot_orders), len(columns)), FORBIDDEN)
        for i, row in enumerate(scored):
            for cid, (score, _distance) in row.items():
                cost[i, index[cid]] = score + max(shift, 0.0)
        matched = dict(optimal(cost))
        for i, order in enumerate(slot_orders):
            if i not in matched:
                report.without_candidate += 1
                continue
            caregiver_id = columns[matched[i]]
            score, distance = scored[i][caregiver_id]
            await offers.batch_offer(session, rt, order, caregiver_id, round(distance, 1), score)
            report.offered += 1
            report.total_cost += score
            report.offers.append((order.id, caregiver_id))
    await session.flush()
    return report
