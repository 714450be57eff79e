"""Keeps the demo banner alive while `vnh serve --demo` runs: caregivers on duty moving around their home bases
(phones report positions every minute), and a handful of open orders for the console to show. Everything goes
through the real services (duty and positions through `dispatch.live`, orders through `orders.service`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from dataclasses import dataclass

from sqlalchemy import func, select

from dispatch import live
from dispatch.models import Caregiver, Organization
from kernel.audit import SystemActor
from kernel.runtime import Runtime
from orders.models import Elder, Order
from orders.service import Intake, create_order

log = logging.getLogger("vnh.demo")
ON_DUTY_SHARE = 0.7
OPEN_ORDERS = 6
MOVE_EVERY_S = 60.0
SERVICES = ("meal_assist", "daily_care", "cleaning", "walking_assist", "companionship", "home_nursing", "bathing")


@dataclass
class Activity:
    on_duty: int = 0
    orders_created: int = 0


def _near(rng: random.Random, lat: float, lon: float, max_m: float) -> tuple[float, float]:
    distance, bearing = rng.uniform(0, max_m), rng.uniform(0, 2 * math.pi)
    return (lat + distance * math.cos(bearing) / 111_320,
            lon + distance * math.sin(bearing) / (111_320 * math.cos(math.radians(lat))))


async def _caregivers(rt: Runtime, region_code: str) -> list[Caregiver]:
    async with rt.database.unit_of_work() as session:
        return list((await session.scalars(
            select(Caregiver).join(Organization).where(Organization.region_code == region_code, Caregiver.active,
                                                       Caregiver.home_lat.is_not(None)).order_by(Caregiver.id))).all())


async def start_shift(rt: Runtime, region_code: str, rng: random.Random) -> int:
    """Put most caregivers of the region on duty (the rest stay off), at a position near their home base."""
    caregivers = await _caregivers(rt, region_code)
    chosen = [c for c in caregivers if rng.random() < ON_DUTY_SHARE]
    async with rt.database.unit_of_work() as session:
        for cg in chosen:
            row = await session.get(Caregiver, cg.id)
            assert row is not None
            row.on_duty, row.duty_changed_at = True, rt.clock.now()
    for cg in chosen:
        assert cg.home_lat is not None and cg.home_lon is not None
        await live.set_duty(rt, cg.id, True)
        await live.set_position(rt, cg.id, *_near(rng, cg.home_lat, cg.home_lon, 1500), rt.clock.now())
    return len(chosen)


async def keep_orders_open(rt: Runtime, region_code: str, rng: random.Random) -> int:
    """Create hotline orders until the region has a few open ones (offered, or in the dispatcher's queue)."""
    async with rt.database.unit_of_work() as session:
        open_now = int(await session.scalar(select(func.count()).select_from(Order).where(
            Order.region_code == region_code, Order.status.in_(("offered", "unfulfilled", "dispatching")))) or 0)
        elders = list((await session.scalars(select(Elder.id).where(
            Elder.region_code == region_code, Elder.status == "active").order_by(Elder.id))).all())
    created = 0
    for _ in range(max(0, OPEN_ORDERS - open_now)):
        if not elders:
            break
        async with rt.database.unit_of_work() as session:
            await create_order(session, rt, SystemActor("demo"), Intake(
                elder_id=rng.choice(elders), service_code=rng.choice(SERVICES), window="asap",
                priority="normal", channel="hotline", notes="演示订单"))
        created += 1
    return created


async def keep_alive(rt: Runtime, region_code: str, stop: asyncio.Event, *, seed: int = 11) -> None:
    rng = random.Random(seed)
    try:
        activity = Activity(on_duty=await start_shift(rt, region_code, rng),
                            orders_created=await keep_orders_open(rt, region_code, rng))
        log.info("demo: %d caregivers on duty, %d orders opened", activity.on_duty, activity.orders_created)
    except Exception:
        log.exception("demo activity could not start")
        return
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), MOVE_EVERY_S)
        if stop.is_set():
            return
        try:
            on_duty = await live.on_duty_ids(rt)
            for cg in await _caregivers(rt, region_code):
                if cg.id in on_duty and cg.home_lat is not None and cg.home_lon is not None:
                    await live.set_position(rt, cg.id, *_near(rng, cg.home_lat, cg.home_lon, 1500), rt.clock.now())
        except Exception:
            log.exception("demo positions not updated")
