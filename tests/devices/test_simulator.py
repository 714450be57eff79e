"""`vnh simulate devices`: devices speaking protocol v1 against a broker, used by the demo and the benchmark."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

from sqlalchemy import text

from kernel.runtime import Runtime
from tests.conftest import settings_env
from tests.devices.conftest import Broker, GatewayFactory, eventually
from tests.factories import create_elder


async def test_simulated_devices_send_events_the_service_stores_then_retire(
        committed_runtime: Runtime, machine_mqtt: str, gateways: GatewayFactory) -> None:
    rt = committed_runtime
    for _ in range(2):
        await create_elder(rt)
    await gateways(Broker(machine_mqtt, shared=True))
    result = await asyncio.to_thread(subprocess.run, [
        sys.executable, "-m", "vnh.cli", "simulate", "devices", "--count", "3", "--rate", "40", "--duration", "2",
        "--sos-every", "25", "--broker", machine_mqtt], capture_output=True, text=True,
        env=settings_env(rt.settings), timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "sent " in result.stdout and "from 3 devices" in result.stdout, result.stdout

    async def figures() -> tuple[int, list[Any], int]:
        async with rt.database.unit_of_work() as s:
            stored = await s.scalar(text("select count(*) from device_events where device_id like 'sim-%'"))
            devices = (await s.execute(text("select status, count(*) from devices where device_id like 'sim-%' "
                                            "group by status"))).all()
            sos = await s.scalar(text("select count(*) from alarms where type = 'sos'"))
        return int(stored or 0), [tuple(row) for row in devices], int(sos or 0)

    async def all_in() -> tuple[int, list[Any], int] | None:
        # the running gateway commits the last events a moment after the simulator has sent them
        got = await figures()
        return got if got[0] >= 40 and got[2] >= 1 else None

    _stored, devices, _sos = await eventually(all_in, timeout=30, what="the simulated events and an SOS stored")
    assert devices == [("revoked", 3)]  # retired afterwards: their silence raises no offline alarm
