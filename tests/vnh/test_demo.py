"""The demo banner: a reproducible world seeded once through the real services."""

from __future__ import annotations

import math
from datetime import date

import pytest
from sqlalchemy import func, select

from devices.models import Device
from devices.registry import token_matches
from dispatch.models import Caregiver, Organization
from kernel.audit import SystemActor
from kernel.auth import User, authenticate, create_user
from kernel.resident_id import parse_resident_id
from kernel.runtime import Runtime
from orders.elders import ID_CONTEXT
from orders.models import Elder
from vnh.demo import DEMO_PASSWORD, DemoSeedInterrupted, demo_region_codes, load_region, plan_demo, seed_demo

TODAY = date(2026, 3, 2)


def _km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    dlat = math.radians(lat2 - lat1)
    dlon = math.radians(lon2 - lon1) * math.cos(math.radians((lat1 + lat2) / 2))
    return 6371.0 * math.hypot(dlat, dlon)


def test_the_plan_is_reproducible_for_a_seed() -> None:
    first = plan_demo("150625", seed=7, today=TODAY)
    assert first == plan_demo("150625", seed=7, today=TODAY)
    other = plan_demo("150625", seed=8, today=TODAY)
    assert [e.data.id_number for e in other.elders] != [e.data.id_number for e in first.elders]


@pytest.mark.parametrize("region_code", demo_region_codes())
def test_every_reference_region_plans_a_valid_world(region_code: str) -> None:
    plan = plan_demo(region_code, seed=7, today=TODAY)
    region = load_region(region_code)
    towns = {t.code: t for t in region.towns}
    assert len(plan.organisations) == 3
    caregivers = [c for o in plan.organisations for c in o.caregivers]
    assert 45 <= len(caregivers) <= 55
    assert len({c.phone for c in caregivers}) == len(caregivers)
    assert any(c.certificate_level == "medical" and "nursing" in c.skills for c in caregivers)
    ids = [e.data.id_number for e in plan.elders]
    assert len(set(ids)) == len(ids) == 300
    for elder in plan.elders:
        data = elder.data
        rid = parse_resident_id(data.id_number, today=TODAY)
        assert (rid.birth_date, rid.gender) == (data.birth_date, data.gender)
        assert rid.region_code in (region.code, *region.former_codes)
        assert data.town_code in towns
        town = towns[data.town_code]
        assert _km(town.lat, town.lon, data.lat, data.lon) < 6.0
        assert data.address.startswith(region.province)
        born = data.birth_date
        age = TODAY.year - born.year - ((TODAY.month, TODAY.day) < (born.month, born.day))
        assert 65 <= age <= 95
        assert ("gaoling" in data.categories) == (age >= 80)


def test_an_unknown_region_is_refused() -> None:
    with pytest.raises(ValueError, match="no demo places"):
        load_region("110101")


async def _counts(rt: Runtime) -> tuple[int, int, int, int]:
    async with rt.database.unit_of_work() as s:
        return (
            await s.scalar(select(func.count()).select_from(Organization)) or 0,
            await s.scalar(select(func.count()).select_from(Caregiver)) or 0,
            await s.scalar(select(func.count()).select_from(Elder)) or 0,
            await s.scalar(select(func.count()).select_from(Device)) or 0,
        )


async def test_seeding_builds_the_banner_once_through_the_services(committed_runtime: Runtime) -> None:
    rt = committed_runtime
    messages: list[str] = []
    summary = await seed_demo(rt, progress=messages.append)

    assert summary.created and summary.region_code == "150625" and summary.password == DEMO_PASSWORD
    assert messages
    counts = await _counts(rt)
    assert counts == (summary.organisations, summary.caregivers, summary.elders, summary.devices)
    organisations, caregivers, elders, devices = counts
    assert organisations == 3 and 45 <= caregivers <= 55 and 280 <= elders <= 320
    assert elders // 2 <= devices <= 2 * elders
    assert "device_tokens" not in repr(summary) and summary.device_tokens

    async with rt.database.unit_of_work() as s:
        rows = (await s.scalars(select(Elder))).all()
        numbers = set()
        for elder in rows:
            number = rt.cipher.decrypt(elder.id_number_enc, context=ID_CONTEXT)
            rid = parse_resident_id(number)
            assert (rid.birth_date, rid.gender) == (elder.birth_date, elder.gender)
            assert rid.region_code in ("150625", "152726")
            assert elder.town_code is not None and elder.town_code.startswith("150625")
            numbers.add(number)
        assert len(numbers) == len(rows)
        for device_id, token in summary.device_tokens.items():
            device = await s.get(Device, device_id)
            assert device is not None and token_matches(rt.cipher, device, token)
        usernames = set((await s.scalars(select(User.username))).all())
        assert set(summary.logins) <= usernames
        assert {"demo-admin", "demo-dispatcher", "demo-auditor", "demo-finance", "demo-family", "cg-001"} <= usernames

    again = await seed_demo(rt)
    assert not again.created
    assert (again.organisations, again.caregivers, again.elders, again.devices) == counts
    assert again.logins == summary.logins and not again.device_tokens
    assert await _counts(rt) == counts

    async with rt.database.unit_of_work() as s:
        for username in ("demo-admin", "demo-dispatcher", "demo-org-1", "demo-family", "cg-001"):
            user = await authenticate(s, rt.clock, username, DEMO_PASSWORD)
            assert user is not None, username
        dispatcher = await s.scalar(select(User).where(User.username == "demo-dispatcher"))
        assert dispatcher is not None and dispatcher.region_code == "150625"
        assert await authenticate(s, rt.clock, "cg-002", "not-the-password-1") is None


async def test_an_interrupted_seeding_is_reported_not_mixed_into(runtime: Runtime) -> None:
    async with runtime.database.unit_of_work() as s:
        await create_user(s, runtime.clock, SystemActor("test"), username="cg-001", password=DEMO_PASSWORD,
                          role="admin")
    with pytest.raises(DemoSeedInterrupted):
        await seed_demo(runtime)
    assert await _counts(runtime) == (0, 0, 0, 0)
