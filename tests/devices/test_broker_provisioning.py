"""A device registered while the service runs reaches a running Mosquitto without a re-export: the periodic pass
(`mosquitto_control.create_registered`) creates its dynamic-security role and client over
`$CONTROL/dynamic-security/v1`, and the device record notes it. Tested against a Mosquitto of the test's own with
vnh's configuration and dynsec, started with no device in its file."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import text

from devices import registry
from devices.mosquitto import dynsec_config
from devices.mosquitto_control import create_registered
from devices.simulator import DeviceClient
from kernel.mqtt_probe import parse_mqtt_url
from kernel.runtime import Runtime
from tests.conftest import admin_access, login_headers
from tests.devices.conftest import Broker, GatewayFactory, eventually
from tests.devices.mosquitto import dynsec_init, vnh_mosquitto
from tests.devices.test_broker_auth import count, refused, suback
from tests.factories import create_elder
from vnh.app import create_app

SERVICE_PASSWORD = "service-secret-for-tests"


@pytest.fixture
async def api(committed_runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(committed_runtime, background=False)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://vnh.test") as c:
        yield c


async def broker_columns(rt: Runtime, device_id: str) -> tuple[str | None, object]:
    async with rt.database.unit_of_work() as s:
        row = (await s.execute(text("select broker_secret, broker_created_at from devices where device_id = :d"),
                               {"d": device_id})).one()
    return row.broker_secret, row.broker_created_at


async def test_a_device_registered_while_mosquitto_runs_is_created_there_by_the_pass(
        committed_runtime: Runtime, api: httpx.AsyncClient, tmp_path: Path, gateways: GatewayFactory) -> None:
    rt = committed_runtime
    elder = await create_elder(rt)
    headers = await login_headers(rt, "admin")
    base = await asyncio.to_thread(dynsec_init, tmp_path / "base.json", "admin-secret")
    config, skipped = dynsec_config([], base=base, service_username="vnh-service", service_password=SERVICE_PASSWORD)
    assert skipped == []

    async def register(device_id: str) -> str:
        response = await api.post("/v1/devices", headers=headers, json={
            "device_id": device_id, "kind": "wristband", "elder_id": str(elder.id)})
        assert response.status_code == 201, response.text
        return str(response.json()["token"])

    # without a Mosquitto admin configured nothing of the token is kept
    plain = f"plain-{uuid.uuid4().hex[:8]}"
    await register(plain)
    assert await broker_columns(rt, plain) == (None, None)

    with vnh_mosquitto(config) as mosquitto:
        address = parse_mqtt_url(mosquitto.url)
        admin = rt.settings.devices.model_copy(
            update={"mosquitto_admin_username": "admin", "mosquitto_admin_password": SecretStr("admin-secret")})
        rt.settings = rt.settings.model_copy(update={"mqtt_url": mosquitto.url, "devices": admin})
        await gateways(Broker(mosquitto.url, shared=True), username="vnh-service", password=SERVICE_PASSWORD)

        device_id = f"new-{uuid.uuid4().hex[:8]}"
        token = await register(device_id)
        secret, created_at = await broker_columns(rt, device_id)
        assert secret is not None and token not in secret and created_at is None  # kept encrypted, pending
        assert await refused(address, device_id, token)  # the broker does not know it yet

        gone = f"gone-{uuid.uuid4().hex[:8]}"
        gone_token = await register(gone)
        async with rt.database.unit_of_work() as s:
            await registry.revoke_device(s, rt.clock, admin_access(), gone)  # revoked before the pass: never created

        assert await create_registered(rt) == 1
        secret, created_at = await broker_columns(rt, device_id)
        assert secret is None and created_at is not None
        assert await broker_columns(rt, gone) == (None, None)
        assert await create_registered(rt) == 0

        assert await refused(address, device_id, "wrong-token")
        assert await refused(address, device_id, token, client_id="not-it")  # bound to its client id
        assert await refused(address, gone, gone_token)
        assert await refused(address, plain, "anything")
        device = DeviceClient(address, device_id, token)
        await asyncio.to_thread(device.connect, report_online=False)
        try:
            sent = await asyncio.to_thread(device.send, "heart_rate", {"bpm": 71})
            stored = "select count(*) from device_events where device_id = :d and event_id = :e"

            async def arrived() -> bool:
                return await count(rt, stored, d=device_id, e=sent["event_id"]) == 1

            await eventually(arrived, what="the new device's event stored")
            # its role is the export's: its own commands, nobody else's topics
            assert await asyncio.to_thread(suback, address, device_id, token, f"vnh/v1/devices/{device_id}/commands"
                                           ) == [1]
            assert await asyncio.to_thread(suback, address, device_id, token, "vnh/v1/devices/+/events") == [128]
        finally:
            await asyncio.to_thread(device.close, report_offline=False)

        # a pass whose answer was lost does it again: "already exists" counts as created, the device still gets in
        async with rt.database.unit_of_work() as s:
            await s.execute(text("update devices set broker_secret = :s, broker_created_at = null "
                                 "where device_id = :d"),
                            {"s": rt.cipher.encrypt(token, context=registry.BROKER_SECRET_CONTEXT), "d": device_id})
        assert await create_registered(rt) == 1
        assert not await refused(address, device_id, token)
