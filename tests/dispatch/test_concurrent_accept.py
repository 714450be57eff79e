"""Exactly one accept wins when several processes accept offers of one urgent order at the same instant."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from sqlalchemy import func, select

from dispatch.models import Offer
from kernel.audit import SystemActor
from kernel.runtime import Runtime
from orders.models import Visit
from orders.service import Intake, create_order
from tests.conftest import settings_env
from tests.factories import XINI_TOWN, create_caregiver, create_elder, create_organization, offset, on_duty
from tests.waiting import eventually

WORKER = Path(__file__).with_name("accept_worker.py")


async def test_one_of_several_processes_accepting_at_once_wins(committed_runtime: Runtime) -> None:
    rt = committed_runtime
    rt.settings.dispatch.urgent_k = 4
    org = await create_organization(rt)
    elder = await create_elder(rt, lat=XINI_TOWN[0], lon=XINI_TOWN[1], preferences={})
    caregivers = []
    for i in range(4):
        cg = await create_caregiver(rt, org, skills=["personal_care"])
        await on_duty(rt, cg, *offset(*XINI_TOWN, north_m=200 * (i + 1)))
        caregivers.append(cg)
    async with rt.database.unit_of_work() as s:
        order, _ = await create_order(s, rt, SystemActor("test"), Intake(
            elder_id=elder.id, service_code="daily_care", window="asap", priority="urgent", channel="hotline"))
    async with rt.database.unit_of_work() as s:
        offers = (await s.scalars(select(Offer).where(Offer.order_id == order.id))).all()
    assert len(offers) == 4
    by_caregiver = {cg.id: cg for cg in caregivers}
    race = f"test:accept-race:{order.id}"
    log, go = rt.redis_key(f"{race}:log"), rt.redis_key(f"{race}:go")
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, str(WORKER), json.dumps({
                "offer_id": str(o.id), "caregiver_id": str(o.caregiver_id),
                "organization_id": str(by_caregiver[o.caregiver_id].organization_id),
                "clock": rt.clock.now().isoformat(), "race": race}),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=settings_env(rt.settings))
        for o in offers
    ]

    async def all_at_the_start_line() -> bool:
        return int(await rt.redis.llen(log)) == len(procs)

    await eventually(all_at_the_start_line, timeout=120, what="every worker connected and at the barrier")
    await rt.redis.rpush(go, *["go"] * len(procs))  # one token each: released together
    results = []
    for proc in procs:
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, err.decode()[-3000:]
        results.append(json.loads(out.decode().strip().splitlines()[-1]))
    entries = [e.decode() for e in await rt.redis.lrange(log, 0, -1)]
    reached = {e.split()[1] for e in entries[:len(procs)] if e.startswith("reached ")}
    assert reached == {str(o.caregiver_id) for o in offers}, entries  # all reached the barrier before any accepted
    assert sorted(e.split()[0] for e in entries[len(procs):]) == ["accepting"] * len(procs), entries
    assert sum(r["ok"] for r in results) == 1, results
    assert sorted(r["code"] for r in results if not r["ok"]) == ["offer_not_pending"] * 3
    async with rt.database.unit_of_work() as s:
        accepted = await s.scalar(select(func.count()).select_from(Offer).where(
            Offer.order_id == order.id, Offer.status == "accepted"))
        live_visits = await s.scalar(select(func.count()).select_from(Visit).where(Visit.order_id == order.id))
    assert accepted == 1 and live_visits == 1
