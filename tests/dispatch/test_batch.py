"""Scheduled orders wait for the batch assigner, which offers them by a min-cost matching over home bases."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select

from dispatch.batch import assign_batch
from dispatch.models import Offer
from dispatch.offers import decline_offer
from kernel.audit import SystemActor
from kernel.authz import Principal, grant
from kernel.runtime import Runtime
from orders.models import Order
from orders.schemas import Window
from orders.service import Intake, create_order
from tests.factories import XINI_TOWN, create_caregiver, create_elder, create_organization, offset

WEEKDAYS = [{"weekday": d, "start": "08:00:00", "end": "18:00:00"} for d in range(1, 8)]


def _point(lat: float, lon: float) -> dict[str, float]:
    return {"lat": lat, "lon": lon}


async def _tomorrow_at(rt: Runtime, hour: int) -> datetime:
    local = (rt.clock.now() + timedelta(days=1)).astimezone(rt.settings.tz)
    return local.replace(hour=hour, minute=0, second=0, microsecond=0)


async def test_the_batch_prefers_the_assignment_with_less_total_travel(runtime: Runtime) -> None:
    """Two orders, two caregivers: first-come-nearest would send A's nearest to A and leave B a long trip;
    the min-cost matching crosses them over."""
    rt = runtime
    org = await create_organization(rt)
    home_a = XINI_TOWN
    home_b = offset(*XINI_TOWN, north_m=4000)
    elder_a = await create_elder(rt, lat=home_a[0], lon=home_a[1], preferences={})
    elder_b = await create_elder(rt, lat=home_b[0], lon=home_b[1], preferences={})
    near_both = await create_caregiver(rt, org, skills=["personal_care"], shifts=WEEKDAYS,
                                       home_base=_point(*offset(*XINI_TOWN, north_m=1500)))
    near_a_only = await create_caregiver(rt, org, skills=["personal_care"], shifts=WEEKDAYS,
                                         home_base=_point(*offset(*XINI_TOWN, north_m=-2000)))
    start = await _tomorrow_at(rt, 9)
    created = []
    for elder in (elder_a, elder_b):
        async with rt.database.unit_of_work() as s:
            order, _ = await create_order(s, rt, SystemActor("test"), Intake(
                elder_id=elder.id, service_code="daily_care", window=Window(start=start), priority="normal",
                channel="app"))
            created.append(order)
    assert {o.status for o in created} == {"created"}
    async with rt.database.unit_of_work() as s:
        report = await assign_batch(s, rt)
    assert report.offered == 2 and report.slots == 1
    pairs = dict(report.offers)
    assert pairs[created[0].id] == near_a_only.id
    assert pairs[created[1].id] == near_both.id


async def test_a_declined_batch_offer_waits_for_the_next_batch_without_that_caregiver(runtime: Runtime) -> None:
    rt = runtime
    org = await create_organization(rt)
    elder = await create_elder(rt, lat=XINI_TOWN[0], lon=XINI_TOWN[1], preferences={})
    first = await create_caregiver(rt, org, skills=["personal_care"], shifts=WEEKDAYS,
                                   home_base={"lat": XINI_TOWN[0], "lon": XINI_TOWN[1]})
    second = await create_caregiver(rt, org, skills=["personal_care"], shifts=WEEKDAYS,
                                    home_base=_point(*offset(*XINI_TOWN, east_m=3000)))
    async with rt.database.unit_of_work() as s:
        order, _ = await create_order(s, rt, SystemActor("test"), Intake(
            elder_id=elder.id, service_code="daily_care", window=Window(start=await _tomorrow_at(rt, 10)),
            priority="normal", channel="app"))
    async with rt.database.unit_of_work() as s:
        await assign_batch(s, rt)
        offer = await s.scalar(select(Offer).where(Offer.order_id == order.id))
    assert offer is not None and offer.caregiver_id == first.id and offer.kind == "batch"
    access = grant(Principal(user_id=str(first.id), username="cg", role="caregiver", caregiver_id=str(first.id)),
                   "offers.respond")
    async with rt.database.unit_of_work() as s:
        await decline_offer(s, rt, access, str(offer.id), "那天有事")
    async with rt.database.unit_of_work() as s:
        assert (await s.get(Order, order.id, populate_existing=True)).status == "created"  # type: ignore[union-attr]
        await assign_batch(s, rt)
        latest = (await s.scalars(select(Offer).where(Offer.order_id == order.id, Offer.status == "pending"))).all()
    assert [o.caregiver_id for o in latest] == [second.id]


async def test_caregivers_off_shift_are_not_offered(runtime: Runtime) -> None:
    rt = runtime
    org = await create_organization(rt)
    elder = await create_elder(rt, lat=XINI_TOWN[0], lon=XINI_TOWN[1], preferences={})
    await create_caregiver(rt, org, skills=["personal_care"], home_base={"lat": XINI_TOWN[0], "lon": XINI_TOWN[1]},
                           shifts=[{"weekday": d, "start": "13:00:00", "end": "17:00:00"} for d in range(1, 8)])
    async with rt.database.unit_of_work() as s:
        await create_order(s, rt, SystemActor("test"), Intake(
            elder_id=elder.id, service_code="daily_care", window=Window(start=await _tomorrow_at(rt, 9)),
            priority="normal", channel="app"))
        report = await assign_batch(s, rt)
    assert report.offered == 0 and report.without_candidate == 1
