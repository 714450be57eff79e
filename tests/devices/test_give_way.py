"""Telemetry batches give way to an urgent batch between their phases, but never to one of their own devices (it
may need the row they hold) and never for longer than GIVE_WAY_MAX_S."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

from devices import gateway as gateway_module
from devices.gateway import MqttGateway
from kernel.runtime import Runtime


@pytest.fixture
def idle_gateway(runtime: Runtime) -> MqttGateway:
    return MqttGateway(runtime, url="mqtt://127.0.0.1:1")  # never started: only its scheduling state is used


def timeouts() -> float:
    return float(gateway_module.GAVE_WAY_TIMEOUTS._value.get())


def returns_without_suspending(coro: Coroutine[Any, Any, None]) -> bool:
    """Step the coroutine once: True if it finished without ever waiting (no clock involved)."""
    try:
        coro.send(None)
    except StopIteration:
        return True
    coro.close()
    return False


async def started(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    """The coroutine as a task that has run up to its first wait."""
    task = asyncio.create_task(coro)
    await asyncio.sleep(0)  # one turn of the loop: the task runs until it suspends (not a timing window)
    return task


async def test_nothing_urgent_means_no_wait(idle_gateway: MqttGateway) -> None:
    assert returns_without_suspending(idle_gateway.give_way({"wb-1"}))


async def test_a_telemetry_batch_waits_for_the_urgent_batch_of_other_devices(
        idle_gateway: MqttGateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gateway_module, "GIVE_WAY_MAX_S", 60.0)
    before = timeouts()
    idle_gateway._urgent_idle.clear()
    idle_gateway._urgent_devices = frozenset({"btn-9"})
    assert not returns_without_suspending(idle_gateway.give_way({"wb-1", "wb-2"}))
    waiting = await started(idle_gateway.give_way({"wb-1", "wb-2"}))
    assert not waiting.done()
    idle_gateway._urgent_devices = frozenset()
    idle_gateway._urgent_idle.set()
    await asyncio.wait_for(waiting, 10)  # a deadline only: the bound (60 s) would fail it
    assert timeouts() == before  # released by the urgent batch's end, not by the bound


async def test_it_never_waits_for_an_urgent_batch_of_its_own_devices(idle_gateway: MqttGateway) -> None:
    idle_gateway._urgent_idle.clear()
    idle_gateway._urgent_devices = frozenset({"wb-2"})  # an SOS of a wristband whose telemetry this batch holds
    assert returns_without_suspending(idle_gateway.give_way({"wb-1", "wb-2"}))


async def test_it_stops_waiting_when_the_next_urgent_batch_is_of_its_own_devices(
        idle_gateway: MqttGateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gateway_module, "GIVE_WAY_MAX_S", 60.0)
    before = timeouts()
    idle_gateway._urgent_idle.clear()
    idle_gateway._urgent_devices = frozenset({"btn-9"})
    waiting = await started(idle_gateway.give_way({"wb-1"}))
    assert not waiting.done()
    idle_gateway._urgent_devices = frozenset({"wb-1"})  # the urgent batch never ends: only this can release it
    await asyncio.wait_for(waiting, 10)
    assert timeouts() == before


async def test_the_wait_is_bounded(idle_gateway: MqttGateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gateway_module, "GIVE_WAY_MAX_S", 0.1)
    before = timeouts()
    idle_gateway._urgent_idle.clear()
    idle_gateway._urgent_devices = frozenset({"btn-9"})  # an urgent batch that never ends
    waiting = await started(idle_gateway.give_way({"wb-1"}))
    assert not waiting.done()
    await asyncio.wait_for(waiting, 10)  # nothing but the bound can end this wait
    assert timeouts() == before + 1
