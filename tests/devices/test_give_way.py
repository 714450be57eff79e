"""Telemetry batches give way to an urgent batch between their phases, but never to one of their own devices (it
may need the row they hold) and never for longer than GIVE_WAY_MAX_S."""

from __future__ import annotations

import asyncio
import time

import pytest

from devices import gateway as gateway_module
from devices.gateway import MqttGateway
from kernel.runtime import Runtime


@pytest.fixture
def idle_gateway(runtime: Runtime) -> MqttGateway:
    return MqttGateway(runtime, url="mqtt://127.0.0.1:1")  # never started: only its scheduling state is used


async def test_nothing_urgent_means_no_wait(idle_gateway: MqttGateway) -> None:
    await asyncio.wait_for(idle_gateway.give_way({"wb-1"}), 0.05)


async def test_a_telemetry_batch_waits_for_the_urgent_batch_of_other_devices(idle_gateway: MqttGateway) -> None:
    idle_gateway._urgent_idle.clear()
    idle_gateway._urgent_devices = frozenset({"btn-9"})
    waiting = asyncio.create_task(idle_gateway.give_way({"wb-1", "wb-2"}))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    idle_gateway._urgent_devices = frozenset()
    idle_gateway._urgent_idle.set()
    await asyncio.wait_for(waiting, 0.05)


async def test_it_never_waits_for_an_urgent_batch_of_its_own_devices(idle_gateway: MqttGateway) -> None:
    idle_gateway._urgent_idle.clear()
    idle_gateway._urgent_devices = frozenset({"wb-2"})  # an SOS of a wristband whose telemetry this batch holds
    await asyncio.wait_for(idle_gateway.give_way({"wb-1", "wb-2"}), 0.05)


async def test_it_stops_waiting_when_the_next_urgent_batch_is_of_its_own_devices(idle_gateway: MqttGateway) -> None:
    idle_gateway._urgent_idle.clear()
    idle_gateway._urgent_devices = frozenset({"btn-9"})
    waiting = asyncio.create_task(idle_gateway.give_way({"wb-1"}))
    await asyncio.sleep(0.03)
    idle_gateway._urgent_devices = frozenset({"wb-1"})
    await asyncio.wait_for(waiting, 0.1)


async def test_the_wait_is_bounded(idle_gateway: MqttGateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gateway_module, "GIVE_WAY_MAX_S", 0.1)
    before = gateway_module.GAVE_WAY_TIMEOUTS._value.get()
    idle_gateway._urgent_idle.clear()
    idle_gateway._urgent_devices = frozenset({"btn-9"})  # an urgent batch that never ends
    started = time.monotonic()
    await asyncio.wait_for(idle_gateway.give_way({"wb-1"}), 1.0)
    assert 0.09 <= time.monotonic() - started < 0.5
    assert gateway_module.GAVE_WAY_TIMEOUTS._value.get() == before + 1
