"""Brokers and devices for the MQTT tests.

- `machine_mqtt`: the broker of `MQTT_URL` (in CI the machine's Mosquitto, anonymous, default configuration), or
  without MQTT_URL a Mosquitto of the session's own with vnh's configuration minus authentication.
- `amqtt_broker`: the embedded broker (`vnh.embedded_broker`) in a child process on a free port.
- `vnh_mosquitto` (tests/devices/mosquitto.py): a Mosquitto of our own with deploy/mosquitto's configuration, for
  tests that need vnh's limits or its dynamic-security plugin; it fails rather than skips when CI=true and the
  binary is missing.
Tests use unique device ids, client ids and share groups, and end their persistent sessions afterwards, so
nothing lingers in a shared broker.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devices.gateway import MqttGateway, end_session
from kernel.mqtt_probe import MqttAddress, parse_mqtt_url
from kernel.runtime import Runtime
from tests.waiting import eventually
from vnh.embedded import LISTENING_LINE

__all__ = ["Broker", "GatewayFactory", "eventually", "free_port"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def broker_version(url: str, timeout: float = 5.0) -> str:
    """What the broker says it is (`$SYS/broker/version`, retained: "mosquitto version 2.0.11"); "" if it says
    nothing in time or refuses an anonymous client."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    address = parse_mqtt_url(url)
    answer: list[str] = []
    heard = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"vnh-version-{uuid.uuid4().hex[:8]}")
    client.on_connect = lambda c, *_args: c.subscribe("$SYS/broker/version")

    def on_message(_c: Any, _userdata: Any, message: Any) -> None:
        answer.append(message.payload.decode(errors="replace"))
        heard.set()

    client.on_message = on_message
    try:
        client.connect(address.host, address.port)
    except OSError:
        return ""
    client.loop_start()
    try:
        heard.wait(timeout)
    finally:
        client.disconnect()
        client.loop_stop()
    return answer[0] if answer else ""


@pytest.fixture(scope="session")
def machine_mqtt(server_urls: dict[str, str]) -> Iterator[str]:
    """A Mosquitto for the tests of Mosquitto's delivery (redelivery of unacknowledged QoS 1, retained status, shared
    subscriptions): the machine's one of MQTT_URL (CI) when it says it is Mosquitto, else one of our own with vnh's
    configuration (tests/devices/mosquitto.py `open_mosquitto`); skipped only where no Mosquitto is installed (and
    failed then when CI=true)."""
    if os.environ.get("MQTT_URL") and broker_version(server_urls["mqtt"]).startswith("mosquitto"):
        yield server_urls["mqtt"]
        return
    from tests.devices.mosquitto import open_mosquitto

    with open_mosquitto() as mosquitto:
        yield mosquitto.url


@pytest.fixture(scope="session")
def amqtt_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data = tmp_path_factory.mktemp("amqtt")
    port = free_port()
    log = data / "broker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "vnh.embedded_broker", "--host", "127.0.0.1", "--port",
                                 str(port), "--data-dir", str(data)], stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while LISTENING_LINE not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"amqtt broker did not start:\n{log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.05)
    yield f"mqtt://127.0.0.1:{port}"
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@dataclass(frozen=True)
class Broker:
    url: str
    shared: bool  # amqtt has no shared subscriptions

    @property
    def address(self) -> MqttAddress:
        return parse_mqtt_url(self.url)


@pytest.fixture(params=["mosquitto", "amqtt"])
def broker(request: pytest.FixtureRequest) -> Broker:
    """Each MQTT test once against the machine's Mosquitto and once against the embedded amqtt broker."""
    if request.param == "mosquitto":
        return Broker(str(request.getfixturevalue("machine_mqtt")), shared=True)
    return Broker(str(request.getfixturevalue("amqtt_broker")), shared=False)


GatewayFactory = Callable[..., Awaitable[MqttGateway]]


@pytest.fixture
async def gateways(committed_runtime: Runtime) -> AsyncIterator[GatewayFactory]:
    """Start gateways with a unique client id and share group per test; stop them and end their sessions after."""
    started: list[MqttGateway] = []
    group = f"t{uuid.uuid4().hex[:8]}"
    ids: set[tuple[str, str]] = set()

    async def start(broker: Broker, *, client_id: str | None = None, rt: Runtime | None = None, **kwargs: Any
                    ) -> MqttGateway:
        url = broker.url
        gateway = MqttGateway(rt or committed_runtime, url=url, client_id=client_id or f"vnh-{group}-0",
                              share_group=group, shared=broker.shared, **kwargs)
        await gateway.start()
        await gateway.wait_connected()
        started.append(gateway)
        ids.add((url, gateway.client_id))
        return gateway

    yield start
    for gateway in started:
        await gateway.stop(drain_timeout=1.0)
    for url, client_id in ids:
        with contextlib.suppress(OSError):  # a broker the test started may be gone already
            await end_session(parse_mqtt_url(url, committed_runtime.settings.tls), client_id,
                              *_service_login(committed_runtime, url))


def _service_login(rt: Runtime, url: str) -> tuple[str, str]:
    gateway = MqttGateway(rt, url=url)
    return gateway.username, gateway.password


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def data_file(name: str) -> Path:
    return Path(__file__).resolve().parents[2] / name
