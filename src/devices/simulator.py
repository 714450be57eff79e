"""A device speaking protocol v1 over MQTT against any broker: the demo's and the benchmark's simulator, and the
tests' device. Threaded paho (a device is a small independent thing; the service's gateway is the asyncio one).

`vnh simulate devices --count N --rate R` runs N of them (`run_fleet`): each connects with its id and token and
a last will, reports `{"online": true}` retained, sends heartbeats and vital signs at R events/s in total, now and
then an SOS, acknowledges every command it gets and prints what it received.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from devices.protocol import topic_for
from kernel.mqtt_probe import MqttAddress

log = logging.getLogger("vnh.devices.simulator")


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class ConnectionRefused(ConnectionError):
    def __init__(self, reason: str) -> None:
        super().__init__(f"broker refused the device: {reason}")
        self.reason = reason


@dataclass
class DeviceClient:
    """One device. `connect()` raises `ConnectionRefused` when the broker refuses the credentials."""

    address: MqttAddress
    device_id: str
    token: str
    clean_session: bool = False
    on_command: Callable[[DeviceClient, dict[str, Any]], None] | None = None
    seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    commands: list[dict[str, Any]] = field(default_factory=list)
    client_id: str | None = None  # default: the device id (the protocol's rule)
    max_inflight: int = 100

    def __post_init__(self) -> None:
        self._connected = threading.Event()
        self._refused: str | None = None
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=self.client_id or self.device_id,
            protocol=MQTTProtocolVersion.MQTTv311, clean_session=self.clean_session)
        self._client.username_pw_set(self.device_id, self.token)
        context = self.address.ssl_context()
        if context is not None:  # mqtts://, as devices connect in deploy/ (port 8883)
            self._client.tls_set_context(context)
        self._client.will_set(topic_for(self.device_id, "status"), b'{"online": false}', qos=1, retain=True)
        self._client.max_inflight_messages_set(self.max_inflight)
        self._client.max_queued_messages_set(0)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.on_disconnect = self._on_disconnect

    # --- connection ----------------------------------------------------------------------------------------

    def connect(self, *, timeout: float = 10.0, report_online: bool = True) -> None:
        self._refused = None
        self._connected.clear()
        self._client.connect(self.address.host, self.address.port, keepalive=30)
        self._client.loop_start()
        deadline = time.monotonic() + timeout
        while not self._connected.is_set():
            if self._refused is not None:
                self._client.loop_stop()
                raise ConnectionRefused(self._refused)
            if time.monotonic() > deadline:
                self._client.loop_stop()
                raise TimeoutError(f"{self.device_id}: no CONNACK within {timeout} s")
            time.sleep(0.01)
        if report_online:
            self.publish(topic_for(self.device_id, "status"), {"online": True}, retain=True)

    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: ReasonCode,
                    _properties: Any) -> None:
        if reason.is_failure:
            self._refused = str(reason)
            client.disconnect()
            return
        client.subscribe(topic_for(self.device_id, "commands"), qos=1)
        self._connected.set()

    def _on_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: ReasonCode,
                       _properties: Any) -> None:
        self._connected.clear()
        if reason.is_failure and self._refused is None and reason.value in (4, 5, 134, 135):
            self._refused = str(reason)

    @property
    def is_connected(self) -> bool:
        return self._connected.is_set()

    def drop(self) -> None:
        """Lose the connection without DISCONNECT (battery out, out of range): the broker sends the last will."""
        sock = self._client.socket()
        self._client.loop_stop()
        if isinstance(sock, socket.socket):
            sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._connected.clear()

    def close(self, *, report_offline: bool = True) -> None:
        if self._connected.is_set():
            if report_offline:
                self.publish(topic_for(self.device_id, "status"), {"online": False}, retain=True)
            self._client.disconnect()
        self._client.loop_stop()

    def clear_retained_status(self) -> None:
        """An empty retained message removes the retained status (test and demo clean-up)."""
        self.publish(topic_for(self.device_id, "status"), b"", retain=True)

    # --- uplink --------------------------------------------------------------------------------------------

    def publish(self, topic: str, payload: dict[str, Any] | bytes, *, qos: int = 1, retain: bool = False,
                wait: bool = True, timeout: float = 10.0) -> mqtt.MQTTMessageInfo:
        body = payload if isinstance(payload, bytes) else json.dumps(payload, ensure_ascii=False).encode()
        info = self._client.publish(topic, body, qos=qos, retain=retain)
        if wait and qos > 0:
            info.wait_for_publish(timeout)
        return info

    def event(self, kind: str, value: dict[str, Any] | None = None, *, event_id: str | None = None,
              **fields: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"event_id": event_id or uuid.uuid4().hex[:16], "type": kind, "ts": now_rfc3339(),
                                "seq": next(self.seq), **fields}
        if value is not None:
            body["value"] = value
        return body

    def send(self, kind: str, value: dict[str, Any] | None = None, *, wait: bool = True, **fields: Any
             ) -> dict[str, Any]:
        body = self.event(kind, value, **fields)
        self.publish(topic_for(self.device_id, "events"), body, wait=wait)
        return body

    def send_telemetry(self, events: Iterable[dict[str, Any]]) -> None:
        self.publish(topic_for(self.device_id, "telemetry"), {"events": list(events)}, qos=0)

    # --- downlink ------------------------------------------------------------------------------------------

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            command = json.loads(message.payload)
        except ValueError:
            log.warning("%s: a command that is not JSON: %r", self.device_id, message.payload[:100])
            return
        if not isinstance(command, dict):
            return
        self.commands.append(command)
        if self.on_command is not None:
            self.on_command(self, command)


def acknowledge_commands(device: DeviceClient, command: dict[str, Any]) -> None:
    """What a well-behaved device does: execute and answer `command_ack`."""
    command_id = command.get("command_id")
    if isinstance(command_id, str):
        device.send("command_ack", {"command_id": command_id}, wait=False)


@dataclass
class FleetReport:
    devices: int
    sent: int
    refused: int
    commands: int
    seconds: float


def run_fleet(address: MqttAddress, credentials: list[tuple[str, str]], *, rate: float, duration: float | None,
              sos_every: int = 0, stop: threading.Event | None = None, seed: int = 2026,
              printer: Callable[[str], None] = print, clear_retained: bool = False) -> FleetReport:
    """Run devices until `duration` (or `stop`), sending `rate` events/s in total: heartbeats, heart rate and SpO2,
    positions, and an SOS every `sos_every` events (0: none). Prints each command a device receives."""
    rng = random.Random(seed)
    stop = stop or threading.Event()
    devices: list[DeviceClient] = []
    refused = 0

    def on_command(device: DeviceClient, command: dict[str, Any]) -> None:
        printer(f"{device.device_id} ← {command.get('type')}: {command.get('text') or command.get('alarm_id') or ''}")
        acknowledge_commands(device, command)

    for device_id, token in credentials:
        device = DeviceClient(address, device_id, token, on_command=on_command)
        try:
            device.connect()
        except (ConnectionError, TimeoutError, OSError) as exc:
            refused += 1
            printer(f"{device_id}: {exc}")
            continue
        devices.append(device)
    started = time.monotonic()
    sent = 0
    interval = 1.0 / rate if rate > 0 else 1.0
    next_at = time.monotonic()
    try:
        while devices and not stop.is_set() and (duration is None or time.monotonic() - started < duration):
            device = devices[sent % len(devices)]
            sent += 1
            if sos_every and sent % sos_every == 0:
                device.send("sos", wait=False)
                printer(f"{device.device_id} → sos")
            else:
                kind = rng.choice(("heartbeat", "heart_rate", "spo2", "location"))
                if kind == "heart_rate":
                    device.send(kind, {"bpm": rng.randint(55, 95)}, wait=False, battery=rng.randint(20, 100))
                elif kind == "spo2":
                    device.send(kind, {"percent": rng.randint(93, 99)}, wait=False)
                elif kind == "location":
                    device.send(kind, wait=False, lat=39.8584 + rng.uniform(-0.01, 0.01),
                                lon=108.7363 + rng.uniform(-0.01, 0.01))
                else:
                    device.send(kind, wait=False)
            next_at += interval
            pause = next_at - time.monotonic()
            if pause > 0:
                stop.wait(pause)
    finally:
        commands = sum(len(d.commands) for d in devices)
        for device in devices:
            if clear_retained:  # devices retired after the run leave no retained status behind
                device.clear_retained_status()
            device.close(report_offline=not clear_retained)
    return FleetReport(devices=len(devices), sent=sent, refused=refused, commands=commands,
                       seconds=time.monotonic() - started)
