"""Devices on a running Mosquitto, over the dynamic-security plugin's `$CONTROL/dynamic-security/v1`, as its admin:

- registration (`create_registered`): a device registered while the service runs gets its role (the ACL of
  `mosquitto.device_role`) and its client (username = client id = device id, the role) created, as the export
  writes them. dynsec's `createClient` takes only a plaintext password, so registration keeps the token encrypted
  (`devices.broker_secret`, personal-data cipher) until this pass has created the client, then clears it and sets
  `devices.broker_created_at`.
- revocation (`disable_revoked`): revoked devices are disabled (`disableClient`, which also disconnects them).

Periodic passes, not outbox consumers: the relay must not stall on an unreachable broker, and what could not reach
it is simply tried again on the next pass. Run only when `VNH_DEVICES__MOSQUITTO_ADMIN_USERNAME`/`_PASSWORD` are
configured.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import threading
import uuid
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from sqlalchemy import select

from devices.models import Device
from devices.mosquitto import device_role
from devices.registry import BROKER_SECRET_CONTEXT
from kernel.mqtt_probe import MqttAddress, parse_mqtt_url
from kernel.runtime import Runtime

log = logging.getLogger("vnh.devices.mosquitto_control")

CONTROL = "$CONTROL/dynamic-security/v1"


def dynsec_commands(address: MqttAddress, username: str, password: str, commands: list[dict[str, Any]],
                    timeout: float = 10.0) -> list[dict[str, Any]]:
    """Send dynsec commands and answer the broker's responses (blocking; run it in a thread)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"vnh-dynsec-{uuid.uuid4().hex[:8]}",
                         protocol=MQTTProtocolVersion.MQTTv311, clean_session=True)
    client.username_pw_set(username, password)
    context = address.ssl_context()
    if context is not None:
        client.tls_set_context(context)
    answers: queue.Queue[list[dict[str, Any]]] = queue.Queue()
    ready = threading.Event()
    refused: list[str] = []

    def on_connect(c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            refused.append(str(reason))
            ready.set()
            return
        c.subscribe(f"{CONTROL}/response", qos=1)

    client.on_connect = on_connect
    client.on_subscribe = lambda *_args: ready.set()
    client.on_message = lambda _c, _u, message: answers.put(json.loads(message.payload).get("responses", []))
    client.connect(address.host, address.port, 30)
    client.loop_start()
    try:
        if not ready.wait(timeout) or refused:
            raise ConnectionError(f"dynsec admin login refused or no answer: {refused or 'timeout'}")
        client.publish(CONTROL, json.dumps({"commands": commands}), qos=1).wait_for_publish(timeout)
        return answers.get(timeout=timeout)
    finally:
        client.disconnect()
        client.loop_stop()


async def disable_revoked(rt: Runtime, *, limit: int = 100) -> int:
    """One pass: disable every revoked device not yet disabled on the broker; answers how many were."""
    settings = rt.settings.devices
    if not (settings.mosquitto_admin_username and settings.mosquitto_admin_password and rt.settings.mqtt_url):
        return 0
    async with rt.database.unit_of_work() as session:
        devices = list((await session.scalars(select(Device).where(
            Device.status == "revoked", Device.broker_disabled_at.is_(None)).limit(limit)
            .with_for_update(skip_locked=True))).all())
        if not devices:
            return 0
        responses = await asyncio.to_thread(
            dynsec_commands, parse_mqtt_url(rt.settings.mqtt_url, rt.settings.tls), settings.mosquitto_admin_username,
            settings.mosquitto_admin_password.get_secret_value(),
            [{"command": "disableClient", "username": d.device_id} for d in devices])
        done = 0
        for device, response in zip(devices, responses, strict=False):
            error = response.get("error")
            if error and "not found" not in str(error).lower():
                log.error("Mosquitto did not disable %s: %s", device.device_id, error)
                continue
            device.broker_disabled_at = rt.clock.now()
            done += 1
    return done


def _already_exists(response: dict[str, Any]) -> bool:
    return "already exists" in str(response.get("error", "")).lower()


async def create_registered(rt: Runtime, *, limit: int = 100) -> int:
    """One pass: create on the broker every active device registered with a pending secret; answers how many.

    Per device: `createRole` (its own topics, as the export) and `createClient` bound to its client id with that
    role. Both are idempotent here: a role or client that already exists (an export loaded after registration, a
    pass whose answer was lost) counts as created — its password entry is the one derived at registration."""
    settings = rt.settings.devices
    if not (settings.mosquitto_admin_username and settings.mosquitto_admin_password and rt.settings.mqtt_url):
        return 0
    async with rt.database.unit_of_work() as session:
        devices = list((await session.scalars(select(Device).where(
            Device.status == "active", Device.broker_secret.is_not(None)).order_by(Device.created_at).limit(limit)
            .with_for_update(skip_locked=True))).all())
        if not devices:
            return 0
        commands: list[dict[str, Any]] = []
        for device in devices:
            assert device.broker_secret is not None
            role = device_role(device.device_id)
            commands.append({"command": "createRole", "rolename": role["rolename"], "textname": "vnh device",
                             "acls": role["acls"]})
            commands.append({"command": "createClient", "username": device.device_id,
                             "password": rt.cipher.decrypt(device.broker_secret, context=BROKER_SECRET_CONTEXT),
                             "clientid": device.device_id, "textname": "vnh device",
                             "roles": [{"rolename": role["rolename"]}]})
        responses = await asyncio.to_thread(
            dynsec_commands, parse_mqtt_url(rt.settings.mqtt_url, rt.settings.tls), settings.mosquitto_admin_username,
            settings.mosquitto_admin_password.get_secret_value(), commands)
        done = 0
        for index, device in enumerate(devices):
            pair = responses[2 * index:2 * index + 2]
            failed = [r for r in pair if r.get("error") and not _already_exists(r)]
            if len(pair) < 2 or failed:
                log.error("Mosquitto did not create %s: %s", device.device_id, failed or "no answer")
                continue
            device.broker_secret = None
            device.broker_created_at = rt.clock.now()
            done += 1
    return done
