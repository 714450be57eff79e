"""An order's reserved quota goes back to the elder's entitlement and the programme's budget when the order ends
without a visit: cancelled by a person, or lapsed by the system when its window passed unserved. Through the
orders interface with real billing (no stand-ins)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from billing.models import Entitlement, Program, Reservation
from kernel.clock import ManualClock
from orders.service import lapse_unserved_orders
from tests.billing.support import assert_ledger_sound, create_program
from tests.conftest import login_headers
from tests.factories import HANGGIN
from tests.world import World


async def held(world: World, order: dict[str, Any], program_id: uuid.UUID) -> tuple[str, int, int]:
    """(the order's reservation status, the entitlement's reserved fen, the programme's reserved fen)."""
    async with world.rt.database.unit_of_work() as s:
        reservation = await s.scalar(select(Reservation).where(Reservation.order_id == uuid.UUID(order["id"]))
                                     .execution_options(populate_existing=True))
        assert reservation is not None and reservation.program_id == program_id
        entitlement = await s.scalar(select(Entitlement).where(Entitlement.id == reservation.entitlement_id)
                                     .execution_options(populate_existing=True))
        program = await s.scalar(select(Program).where(Program.id == program_id)
                                 .execution_options(populate_existing=True))
        assert entitlement is not None and program is not None
        await assert_ledger_sound(s)
        return reservation.status, entitlement.reserved_fen, program.reserved_fen


async def test_a_cancelled_order_gives_its_reserved_quota_back(world: World) -> None:
    program = await create_program(world.rt)
    order = await world.order()
    assert (order["price_fen"], order["quota_fen"], order["copay_fen"]) == (4500, 4050, 450)
    assert await held(world, order, program.id) == ("reserved", 4050, 4050)
    cancelled = await world.client.post(f"/v1/orders/{order['id']}/cancel", json={"reason": "家属已安排"},
                                        headers=world.dispatcher)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert await held(world, order, program.id) == ("released", 0, 0)
    # what was given back can be drawn again by the elder's next order
    again = await world.order()
    assert again["quota_fen"] == 4050
    assert await held(world, again, program.id) == ("reserved", 4050, 4050)


async def test_a_lapsed_order_gives_its_reserved_quota_back(world: World) -> None:
    program = await create_program(world.rt)
    order = await world.order()
    assert await held(world, order, program.id) == ("reserved", 4050, 4050)
    assert isinstance(world.rt.clock, ManualClock)
    world.rt.clock.advance(timedelta(days=1))  # well past the ASAP window, nobody accepted
    assert await lapse_unserved_orders(world.rt) == 1
    dispatcher = await login_headers(world.rt, "dispatcher", region_code=HANGGIN)  # a day later: a fresh login
    final = (await world.client.get(f"/v1/orders/{order['id']}", headers=dispatcher)).json()
    assert final["status"] == "cancelled" and final["history"][-1]["reason"] == "window passed unserved"
    assert await held(world, order, program.id) == ("released", 0, 0)
