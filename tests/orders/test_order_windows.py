"""Every branch of `invalid_window` through `POST /v1/orders` (issue 14 item 3), each beside the boundary that is
still accepted, and what a refused window does to billing: nothing (no order, no reservation, the entitlement and
the budget untouched). The rules live in `orders.service._window`: an end needs a start; a start at most 10 minutes
in the past and at most 90 days ahead; an end after the start; at most 12 hours long."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select

from billing.models import Reservation
from tests.billing.funded import RESERVED, Funded, funded
from tests.world import World

Window = Callable[[datetime], dict[str, str]]
SECOND, MINUTE, HOUR, DAY = timedelta(seconds=1), timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)


def iso(at: datetime) -> str:
    return at.isoformat()


REFUSED: dict[str, Window] = {
    "an end without a start": lambda now: {"end": iso(now + HOUR)},
    "a start more than 10 minutes past": lambda now: {"start": iso(now - 10 * MINUTE - SECOND)},
    "a start more than 90 days ahead": lambda now: {"start": iso(now + 90 * DAY + SECOND)},
    "an end at the start": lambda now: {"start": iso(now + HOUR), "end": iso(now + HOUR)},
    "an end before the start": lambda now: {"start": iso(now + 2 * HOUR), "end": iso(now + HOUR)},
    "longer than 12 hours": lambda now: {"start": iso(now + HOUR), "end": iso(now + 13 * HOUR + SECOND)},
}

ACCEPTED: dict[str, Window] = {
    "a start exactly 10 minutes past": lambda now: {"start": iso(now - 10 * MINUTE)},
    "a start exactly 90 days ahead": lambda now: {"start": iso(now + 90 * DAY)},
    "an end a second after the start": lambda now: {"start": iso(now + HOUR), "end": iso(now + HOUR + SECOND)},
    "exactly 12 hours": lambda now: {"start": iso(now + HOUR), "end": iso(now + 13 * HOUR)},
    "a start without an end": lambda now: {"start": iso(now + HOUR)},
}


@pytest.fixture
async def money(world: World, admin_headers: dict[str, str]) -> Funded:
    return await funded(world, admin_headers)


async def reservations(money: Funded) -> int:
    async with money.world.rt.database.unit_of_work() as s:
        return int(await s.scalar(select(func.count()).select_from(Reservation)
                                  .where(Reservation.elder_id == money.world.elder.id)) or 0)


@pytest.mark.parametrize("window", REFUSED.values(), ids=REFUSED.keys())
async def test_an_invalid_window_is_refused_and_reserves_nothing(money: Funded, window: Window) -> None:
    world = money.world
    body = {"elder_id": str(world.elder.id), "service_code": "daily_care", "window": window(world.rt.clock.now())}
    refused = await world.client.post("/v1/orders", json=body, headers=world.dispatcher)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["code"] == "invalid_window"
    listed = await world.client.get("/v1/orders", params={"elder_id": str(world.elder.id)}, headers=world.dispatcher)
    assert listed.json()["items"] == []
    assert await reservations(money) == 0
    assert await money.figures() == (0, 0, 0, 0)


@pytest.mark.parametrize("window", ACCEPTED.values(), ids=ACCEPTED.keys())
async def test_a_window_at_the_boundary_is_accepted_and_reserves_its_quota(money: Funded, window: Window) -> None:
    world = money.world
    sent = window(world.rt.clock.now())
    order = await world.order(window=sent)
    assert order["window"]["start"] == sent["start"].replace("+00:00", "Z")
    assert (order["quota_fen"], order["program_id"]) == (RESERVED, money.program_id)
    assert await reservations(money) == 1
