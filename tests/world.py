"""A small dispatch world as a fixture (`world`): an elder at 锡尼镇, three qualified caregivers on duty 300 m, 1 km
and 3 km away, a dispatcher of the banner and the elder's family login. Registered in tests/conftest.py."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from kernel.runtime import Runtime
from orders.models import Elder
from tests.conftest import login_headers
from tests.factories import (
    XINI_TOWN,
    caregiver_headers,
    create_caregiver,
    create_elder,
    create_organization,
    offset,
    on_duty,
)


class World:
    def __init__(self, rt: Runtime, client: httpx.AsyncClient, elder: Elder, caregivers: list[Any],
                 dispatcher: dict[str, str], family: dict[str, str]) -> None:
        self.rt, self.client, self.elder, self.caregivers = rt, client, elder, caregivers
        self.dispatcher, self.family = dispatcher, family
        self.home = XINI_TOWN  # the elder's exact home (sealed in the database: orders.home)

    async def order(self, headers: dict[str, str] | None = None, **body: Any) -> dict[str, Any]:
        payload = {"elder_id": str(self.elder.id), "service_code": "daily_care", "channel": "app", **body}
        response = await self.client.post("/v1/orders", json=payload, headers=headers or self.dispatcher)
        assert response.status_code in (200, 201), response.text
        return dict(response.json())

    async def offers_of(self, index: int) -> list[dict[str, Any]]:
        response = await self.client.get("/v1/caregivers/me/offers",
                                         headers=await caregiver_headers(self.rt, self.caregivers[index]))
        return list(response.json()["items"])

    async def as_cg(self, index: int) -> dict[str, str]:
        return await caregiver_headers(self.rt, self.caregivers[index])

    @property
    def at_home(self) -> dict[str, float]:
        """A position at the elder's door, as a caregiver's app reports it."""
        return {"lat": self.home[0], "lon": self.home[1]}

    async def checked_in(self, index: int = 0) -> tuple[str, dict[str, str]]:
        """Caregiver `index` accepts its first offer, departs and checks in at the door: (visit id, its headers)."""
        offer = (await self.offers_of(index))[0]
        cg = await self.as_cg(index)
        visit_id = str((await self.client.post(f"/v1/offers/{offer['id']}/accept", headers=cg)).json()["visit_id"])
        assert (await self.client.post(f"/v1/visits/{visit_id}/depart", headers=cg)).status_code == 200
        checked_in = await self.client.post(f"/v1/visits/{visit_id}/check-in", json=self.at_home, headers=cg)
        assert checked_in.status_code == 200, checked_in.text
        return visit_id, cg


@pytest.fixture
async def world(runtime: Runtime, client: httpx.AsyncClient) -> World:
    """An elder at 锡尼镇 and three qualified caregivers on duty 300 m, 1 km and 3 km away."""
    org = await create_organization(runtime)
    elder = await create_elder(runtime, lat=XINI_TOWN[0], lon=XINI_TOWN[1], preferences={})
    caregivers = []
    for metres in (300, 1000, 3000):
        cg = await create_caregiver(runtime, org, skills=["personal_care"], certificate_level="junior")
        await on_duty(runtime, cg, *offset(*XINI_TOWN, north_m=metres))
        caregivers.append(cg)
    dispatcher = await login_headers(runtime, "dispatcher", region_code="150625")
    family = await login_headers(runtime, "elder", elder_ids=[elder.id])
    return World(runtime, client, elder, caregivers, dispatcher, family)


