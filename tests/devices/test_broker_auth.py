"""Broker-side enforcement: a device connects only with its own id and token and publishes/subscribes only under its
own topics — on a real Mosquitto with vnh's configuration and the exported dynamic-security file, on the embedded
amqtt broker with vnh's plugin, and through the EMQX HTTP hooks. Wrong credentials and cross-device publishing are
refused; revoking a device cuts it off."""

from __future__ import annotations

import asyncio
import base64
import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import SecretStr
from sqlalchemy import text

from devices import registry
from devices.amqtt_auth import PLUGIN_PATH
from devices.gateway import MqttGateway
from devices.mosquitto_control import disable_revoked
from devices.protocol import topic_for
from devices.simulator import ConnectionRefused, DeviceClient
from kernel.mqtt_probe import MqttAddress, parse_mqtt_url
from kernel.runtime import Runtime
from tests.conftest import admin_access, settings_env
from tests.devices.conftest import Broker, GatewayFactory, eventually, free_port
from tests.devices.mosquitto import dynsec_init, vnh_mosquitto
from tests.factories import create_elder, register_device
from vnh.embedded import LISTENING_LINE

SERVICE_PASSWORD = "service-secret-for-tests"


def suback(address: MqttAddress, device_id: str, token: str, topic: str) -> list[int]:
    """The reason codes a device gets when subscribing `topic` (128 = refused)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device_id, clean_session=True)
    client.username_pw_set(device_id, token)
    answers: queue.Queue[list[int]] = queue.Queue()
    connected = threading.Event()
    client.on_connect = lambda c, u, f, rc, p: connected.set()
    client.on_subscribe = lambda c, u, mid, codes, p: answers.put([code.value for code in codes])
    client.connect(address.host, address.port)
    client.loop_start()
    try:
        assert connected.wait(5)
        client.subscribe(topic, qos=1)
        return answers.get(timeout=5)
    finally:
        client.disconnect()
        client.loop_stop()


async def count(rt: Runtime, sql: str, **params: Any) -> int:
    async with rt.database.unit_of_work() as s:
        return int(await s.scalar(text(sql), params) or 0)


async def refused(address: MqttAddress, device_id: str, token: str, client_id: str | None = None) -> bool:
    device = DeviceClient(address, device_id, token, client_id=client_id, clean_session=True)
    try:
        await asyncio.to_thread(device.connect, timeout=5)
    except (ConnectionRefused, ConnectionError, TimeoutError):
        return True
    await asyncio.to_thread(device.close)
    return False


# --- Mosquitto ---------------------------------------------------------------------------------------------------

async def test_the_exported_dynamic_security_file_lets_each_device_in_with_its_own_token_only(
        committed_runtime: Runtime, tmp_path: Path, gateways: GatewayFactory) -> None:
    rt = committed_runtime
    elder = await create_elder(rt)
    (a, token_a), (b, token_b), (gone, token_gone) = [await register_device(rt, elder) for _ in range(3)]
    async with rt.database.unit_of_work() as s:
        await registry.revoke_device(s, rt.clock, admin_access(), gone)
    base_file = tmp_path / "base.json"
    await asyncio.to_thread(dynsec_init, base_file, "admin-secret")
    exported = tmp_path / "exported.json"
    result = await asyncio.to_thread(subprocess.run, [
        sys.executable, "-m", "vnh.cli", "devices", "export-mosquitto-acl", "--merge", str(base_file),
        "--output", str(exported), "--service-password-stdin"], input=SERVICE_PASSWORD, text=True,
        capture_output=True, env=settings_env(rt.settings), timeout=120)
    assert result.returncode == 0, result.stderr
    config = json.loads(exported.read_text())
    assert {c["username"] for c in config["clients"]} >= {"admin", "vnh-service", a, b, gone}
    assert exported.stat().st_mode & 0o077 == 0

    with vnh_mosquitto(config) as mosquitto:
        url = mosquitto.url
        address = parse_mqtt_url(url)
        broker = Broker(url, shared=True)
        await gateways(broker, username="vnh-service", password=SERVICE_PASSWORD)
        assert await refused(address, a, "wrong-token")
        assert await refused(address, a, token_a, client_id="not-a")  # the account is bound to its client id
        assert await refused(address, gone, token_gone)  # revoked: exported disabled
        assert await refused(address, b, token_a)
        device = DeviceClient(address, a, token_a)
        await asyncio.to_thread(device.connect)
        try:
            own = await asyncio.to_thread(device.send, "heartbeat")
            # on another device's topic: Mosquitto drops it (vnh never sees it; the broker logs it)
            forged = device.event("sos")
            await asyncio.to_thread(device.publish, topic_for(b, "events"), forged)
            stored = "select count(*) from device_events where event_id = :e"
            await eventually(lambda: _is(rt, stored, 1, e=own["event_id"]), what="own event stored")
            # a control published after the forged one on the same connection: once it is stored, the forged one
            # would have been delivered before it
            control = await asyncio.to_thread(device.send, "heartbeat")
            await eventually(lambda: _is(rt, stored, 1, e=control["event_id"]), what="the control event stored")
            assert await count(rt, stored, e=forged["event_id"]) == 0
            assert await asyncio.to_thread(suback, address, b, token_b, topic_for(a, "commands")) == [128]
            assert await asyncio.to_thread(suback, address, b, token_b, topic_for(b, "commands")) == [1]
            assert await asyncio.to_thread(suback, address, b, token_b, "vnh/v1/devices/+/events") == [128]
        finally:
            await asyncio.to_thread(device.clear_retained_status)
            await asyncio.to_thread(device.close, report_offline=False)
        assert f"Denied PUBLISH from {a}" in mosquitto.log()

        # revocation on a running broker: the dynsec admin disables the account, which also disconnects it
        connected = DeviceClient(address, b, token_b)
        await asyncio.to_thread(connected.connect)
        async with rt.database.unit_of_work() as s:
            await registry.revoke_device(s, rt.clock, admin_access(), b)
        rt.settings = rt.settings.model_copy(update={"mqtt_url": url, "devices": rt.settings.devices.model_copy(
            update={"mosquitto_admin_username": "admin", "mosquitto_admin_password": SecretStr("admin-secret")})})
        # b, and `gone` (already disabled in the file: nothing to undo). A pass skips a device row the ingest holds
        # locked (b's own "online" status may be being stored right now): the next pass takes it
        disabled = [0]

        async def both_disabled() -> bool:
            disabled[0] += await disable_revoked(rt)
            return disabled[0] >= 2

        await eventually(both_disabled, what="both revoked devices disabled on the broker")
        assert disabled[0] == 2
        await eventually(lambda: _disconnected(connected), what="the revoked device disconnected")
        assert await refused(address, b, token_b)
        assert await disable_revoked(rt) == 0
        await asyncio.to_thread(connected.close, report_offline=False)


async def _is(rt: Runtime, sql: str, expected: int, **params: Any) -> bool:
    return await count(rt, sql, **params) == expected


# --- amqtt (embedded) ---------------------------------------------------------------------------------------------

@pytest.fixture
def secured_amqtt(committed_runtime: Runtime, tmp_path: Path) -> Iterator[str]:
    """The embedded broker with vnh's device plugin, on the test's database."""
    settings = committed_runtime.settings
    assert settings.crypto.blind_index_key is not None
    config = {PLUGIN_PATH: {"database_url": settings.app_url,
                            "blind_index_key": settings.crypto.blind_index_key.get_secret_value(),
                            "service_username": "vnh-service", "service_password": SERVICE_PASSWORD,
                            "sweep_interval_s": 0.3}}
    port = free_port()
    log = tmp_path / "amqtt.log"
    script = ("import asyncio, json, logging, sys; logging.basicConfig(level=logging.INFO); "
              "from vnh.embedded_broker import serve; "
              "asyncio.run(serve('127.0.0.1', int(sys.argv[1]), json.loads(sys.argv[2])))")
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", script, str(port), json.dumps(config)], stdout=out,
                                stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while LISTENING_LINE not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(log.read_text(errors="replace")[-3000:])
        time.sleep(0.05)
    yield f"mqtt://127.0.0.1:{port}"
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


async def test_the_embedded_broker_refuses_wrong_credentials_before_touching_the_session(
        committed_runtime: Runtime, secured_amqtt: str, gateways: GatewayFactory) -> None:
    rt = committed_runtime
    address = parse_mqtt_url(secured_amqtt)
    elder = await create_elder(rt)
    (a, token_a), (b, token_b) = [await register_device(rt, elder) for _ in range(2)]
    await gateways(Broker(secured_amqtt, shared=False), username="vnh-service", password=SERVICE_PASSWORD)
    assert await refused(address, a, "wrong-token")
    assert await refused(address, a, token_a, client_id="not-a")
    assert await refused(address, "", "")
    with pytest.raises(ConnectionRefused):
        await asyncio.to_thread(DeviceClient(address, "vnh-service", "guess", client_id="x").connect)
    device = DeviceClient(address, a, token_a)
    await asyncio.to_thread(device.connect)
    try:
        # someone with A's id and a wrong password: refused, and A keeps its connection and session
        assert await refused(address, a, "wrong-token")
        assert device.is_connected
        own = await asyncio.to_thread(device.send, "heartbeat")
        stored = "select count(*) from device_events where event_id = :e"
        await eventually(lambda: _is(rt, stored, 1, e=own["event_id"]), what="A still delivers")
        await asyncio.to_thread(device.publish, topic_for(b, "events"), device.event("sos"))
        dead = "select count(*) from device_dead_letters where reason = 'topic_mismatch' and device_id = :d"
        await eventually(lambda: _is(rt, dead, 1, d=b), what="the forged publish dead-lettered")
        assert await count(rt, "select count(*) from device_events where device_id = :d", d=b) == 0
        assert await asyncio.to_thread(suback, address, b, token_b, topic_for(a, "commands")) == [128]
        async with rt.database.unit_of_work() as s:
            await registry.revoke_device(s, rt.clock, admin_access(), a)
        await eventually(lambda: _disconnected(device), what="revoked device cut off", timeout=10)
        assert await refused(address, a, token_a)
    finally:
        await asyncio.to_thread(device.close, report_offline=False)


async def _disconnected(device: DeviceClient) -> bool:
    return not device.is_connected


async def test_the_embedded_broker_of_a_vnh_data_directory_uses_its_secrets(
        committed_runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`vnh serve`'s embedded broker: the plugin reads the data directory (settings, secrets, servers.json)."""
    from devices.amqtt_auth import DeviceAuthPlugin

    monkeypatch.delenv("DATABASE_URL", raising=False)  # as in `vnh serve` with the embedded database
    rt = committed_runtime
    settings = rt.settings
    assert settings.crypto.blind_index_key and settings.auth.jwt_secret and settings.audit.key
    data = tmp_path / "vnh"
    (data / "run").mkdir(parents=True)
    (data / "run" / "servers.json").write_text(json.dumps({"database": {"url": settings.app_url}}))
    plugin = DeviceAuthPlugin.__new__(DeviceAuthPlugin)
    plugin.config = DeviceAuthPlugin.Config(data_dir=str(data))
    plugin._backend, plugin._resolved, plugin._lock, plugin._admitted = None, False, asyncio.Lock(), {}
    assert await plugin.backend() is None  # not initialised by vnh: open, and looked at again
    (data / "secrets.json").write_text(json.dumps({
        "jwt_secret": settings.auth.jwt_secret.get_secret_value(),
        "crypto_keys": {k: v.get_secret_value() for k, v in settings.crypto.keys.items()}, "active_key": "k1",
        "blind_index_key": settings.crypto.blind_index_key.get_secret_value(),
        "audit_key": settings.audit.key.get_secret_value()}))
    backend = await plugin.backend()
    assert backend is not None
    elder = await create_elder(rt)
    device_id, token = await register_device(rt, elder)

    class Session:
        client_id, username, password = device_id, device_id, token

    try:
        assert await plugin.identify(Session()) is not None  # type: ignore[arg-type]
        Session.password = base64.b64encode(b"nope").decode()
        plugin._admitted.clear()
        assert await plugin.identify(Session()) is None  # type: ignore[arg-type]
    finally:
        await backend.database.dispose()


# --- EMQX HTTP hooks ---------------------------------------------------------------------------------------------

async def test_the_emqx_hooks_authenticate_and_authorize_devices(runtime: Runtime,
                                                                 client: httpx.AsyncClient) -> None:
    runtime.settings = runtime.settings.model_copy(update={"devices": runtime.settings.devices.model_copy(
        update={"broker_hook_secret": SecretStr("hook-secret")})})
    hook = {"Authorization": "Bearer hook-secret"}
    elder = await create_elder(runtime)
    (a, token_a), (b, _token_b) = [await register_device(runtime, elder) for _ in range(2)]

    async def authn(body: dict[str, Any], headers: dict[str, str] = hook) -> Any:
        response = await client.post("/v1/broker/emqx/authenticate", json=body, headers=headers)
        return response.json()["result"] if response.status_code == 200 else response.status_code

    async def authz(username: str, topic: str, action: str) -> str:
        response = await client.post("/v1/broker/emqx/authorize", headers=hook, json={
            "username": username, "clientid": username, "topic": topic, "action": action})
        assert response.status_code == 200, response.text
        return str(response.json()["result"])

    assert await authn({"username": a, "password": token_a, "clientid": a}) == "allow"
    assert await authn({"username": a, "password": "wrong", "clientid": a}) == "deny"
    assert await authn({"username": a, "password": token_a, "clientid": "other"}) == "deny"
    assert await authn({"username": a, "password": token_a, "clientid": a}, {"Authorization": "Bearer x"}) == 403
    service = MqttGateway(runtime, url="mqtt://127.0.0.1:1")
    assert await authn({"username": "vnh-service", "password": service.password, "clientid": "vnh-3"}) == "allow"
    assert await authz(a, topic_for(a, "events"), "publish") == "allow"
    assert await authz(a, topic_for(a, "commands"), "subscribe") == "allow"
    assert await authz(a, topic_for(b, "events"), "publish") == "deny"
    assert await authz(a, "vnh/v1/devices/+/events", "subscribe") == "deny"
    assert await authz("vnh-service", "$share/vnh/vnh/v1/devices/+/events", "subscribe") == "allow"
    assert await authz("vnh-service", topic_for(b, "commands"), "publish") == "allow"
    assert await authz("vnh-service", topic_for(b, "events"), "publish") == "deny"
    async with runtime.database.unit_of_work() as s:
        assert await s.scalar(text("select reason from device_dead_letters where device_id = :d"), {"d": b}) == \
            "topic_mismatch"
        await registry.revoke_device(s, runtime.clock, admin_access(), a)
    assert await authn({"username": a, "password": token_a, "clientid": a}) == "deny"
    assert await authz(a, topic_for(a, "events"), "publish") == "deny"
