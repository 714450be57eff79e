"""Small async factories with sensible defaults; they go through the real services."""

from __future__ import annotations

import itertools
import random
from datetime import date
from typing import Any

from stdnum.cn import ric

from devices import registry as device_registry
from devices.schemas import DeviceCreate
from dispatch import registry
from dispatch.models import Caregiver, Organization
from dispatch.schemas import CaregiverCreate, OrganizationCreate
from kernel.runtime import Runtime
from orders import elders
from orders.models import Elder
from orders.schemas import ElderCreate
from tests.conftest import TEST_PASSWORD, admin_access

HANGGIN = "150625"  # 杭锦旗
XINI_TOWN = (39.8584, 108.7363)  # 锡尼镇, WGS-84
_rng = random.Random(2026)


_serial = itertools.count(_rng.randrange(0, 400))


def resident_id(region: str = HANGGIN, born: date = date(1944, 3, 2), gender: str = "male") -> str:
    """A valid, unique-per-run number: region, birth date, a 3-digit serial whose last digit carries the sex."""
    serial = next(_serial) % 500
    seq = serial * 2 + (1 if gender == "male" else 0)  # odd male, even female
    body = f"{region}{born:%Y%m%d}{seq:03d}"
    return body + ric.calc_check_digit(body + "0")  # stdnum wants a placeholder check digit


def mobile() -> str:
    return f"139{_rng.randrange(10_000_000, 99_999_999)}"


def elder_payload(**overrides: Any) -> dict[str, Any]:
    born = overrides.pop("birth_date", date(1944, 3, 2))
    gender = overrides.pop("gender", "male")
    payload: dict[str, Any] = {
        "name": "王宝音",
        "id_number": resident_id(overrides.pop("id_region", HANGGIN), born, gender),
        "phone": mobile(),
        "gender": gender,
        "birth_date": born.isoformat(),
        "address": "内蒙古自治区鄂尔多斯市杭锦旗锡尼镇巴音乌素社区12号",
        "lat": XINI_TOWN[0] + _rng.uniform(-0.02, 0.02),
        "lon": XINI_TOWN[1] + _rng.uniform(-0.02, 0.02),
        "region_code": HANGGIN,
        "categories": ["gaoling", "dibao"],
        "assessment_level": 2,
        "languages": ["zh", "mn"],
        "emergency_contacts": [{"name": "王军", "relation": "儿子", "phone": mobile()}],
    }
    payload.update(overrides)
    return payload


async def create_elder(rt: Runtime, **overrides: Any) -> Elder:
    async with rt.database.unit_of_work() as s:
        return await elders.create_elder(s, rt.clock, rt.cipher, admin_access(),
                                         ElderCreate.model_validate(elder_payload(**overrides)))


async def create_organization(rt: Runtime, region_code: str = HANGGIN, name: str = "杭锦旗锡尼镇居家养老服务中心"
                              ) -> Organization:
    async with rt.database.unit_of_work() as s:
        return await registry.create_organization(
            s, rt.clock, admin_access(), OrganizationCreate(name=name, region_code=region_code))


def caregiver_payload(organization_id: str, **overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "organization_id": organization_id,
        "name": "李娜",
        "phone": mobile(),
        "gender": "female",
        "languages": ["zh"],
        "skills": ["personal_care", "cleaning"],
        "certificate_level": "junior",
        "home_base": {"lat": XINI_TOWN[0], "lon": XINI_TOWN[1]},
        "username": f"cg-{_rng.randrange(10**8)}",
        "password": TEST_PASSWORD,
    }
    payload.update(overrides)
    return payload


async def create_caregiver(rt: Runtime, organization: Organization, **overrides: Any) -> Caregiver:
    async with rt.database.unit_of_work() as s:
        caregiver, _user = await registry.create_caregiver(
            s, rt.clock, rt.cipher, admin_access(),
            CaregiverCreate.model_validate(caregiver_payload(str(organization.id), **overrides)))
        return caregiver


async def register_device(rt: Runtime, elder: Elder, device_id: str | None = None, kind: str = "call_button"
                          ) -> tuple[str, str]:
    device_id = device_id or f"btn-{_rng.randrange(10**9):09d}"
    async with rt.database.unit_of_work() as s:
        device, token = await device_registry.register_device(
            s, rt.clock, rt.cipher, admin_access(),
            DeviceCreate(device_id=device_id, kind=kind, elder_id=str(elder.id)))  # type: ignore[arg-type]
        return device.device_id, token


async def on_duty(rt: Runtime, caregiver: Caregiver, lat: float, lon: float) -> None:
    """Put a caregiver on duty at a position (as the app's duty and location calls do)."""
    from dispatch import live

    async with rt.database.unit_of_work() as s:
        row = await s.get(Caregiver, caregiver.id)
        assert row is not None
        row.on_duty = True
    await live.set_duty(rt, caregiver.id, True)
    await live.set_position(rt, caregiver.id, lat, lon, rt.clock.now())


async def caregiver_headers(rt: Runtime, caregiver: Caregiver) -> dict[str, str]:
    """A token of the caregiver's own login (every request checks that the login still exists and is active)."""
    from sqlalchemy import select

    from kernel.auth import User

    async with rt.database.unit_of_work() as s:
        user = await s.scalar(select(User).where(User.caregiver_id == caregiver.id))
        assert user is not None, "create caregivers with tests.factories.create_caregiver (it makes the login)"
        principal, generation = user.principal(), user.token_generation
    return {"Authorization": f"Bearer {rt.tokens.issue(principal, generation=generation)}"}


def offset(lat: float, lon: float, north_m: float = 0, east_m: float = 0) -> tuple[float, float]:
    """A point so many metres north/east of another (small distances)."""
    import math

    return lat + north_m / 111_320, lon + east_m / (111_320 * math.cos(math.radians(lat)))
