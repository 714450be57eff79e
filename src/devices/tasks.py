"""The devices package's background work, run by every instance beside HTTP (`vnh.workers.Workers`): the MQTT
gateway (ingest and downlink) and the periodic jobs of the package."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from pydantic import SecretStr

from devices.credentials import SERVICE_USERNAME, default_service_password
from devices.downlink import CommandSender, order_assigned_consumer
from devices.escalation import escalate_due
from devices.gateway import MqttGateway
from devices.liveness import supervise
from devices.mosquitto_control import create_registered, disable_revoked
from devices.notifier import WebhookNotifier, notifier_from_settings, send_pending
from devices.partitions import upkeep_once
from kernel.outbox import OutboxRelay, Publisher
from kernel.periodic import every
from kernel.runtime import Runtime

log = logging.getLogger("vnh.devices.tasks")


def use_embedded_service_login(runtime: Runtime) -> None:
    """On the embedded broker, its plugin admits the service with the password derived from the blind-index key;
    every MQTT client of this instance (the gateway, /readyz's probe) logs in with it."""
    settings = runtime.settings
    if runtime.embedded and "mqtt" in runtime.embedded and settings.mqtt.username is None:
        settings.mqtt.username = SERVICE_USERNAME
        settings.mqtt.password = SecretStr(default_service_password(runtime.cipher))


class DeviceWorkers:
    def __init__(self, runtime: Runtime, *, gateway: MqttGateway | None = None) -> None:
        self.rt = runtime
        settings = runtime.settings
        use_embedded_service_login(runtime)
        self.gateway = gateway or (MqttGateway(runtime) if settings.mqtt_url and settings.mqtt.ingest else None)
        self.sender = CommandSender(runtime, self.gateway) if self.gateway is not None else None
        if self.gateway is not None and self.sender is not None:
            self.gateway.on_online = self.sender.online
        self._tasks: list[asyncio.Task[None]] = []
        self.notifier: WebhookNotifier | None = None

    def publishers(self) -> Sequence[Publisher]:
        """Outbox consumers of this package (added to the relay): `notify` when an order is assigned."""
        return [order_assigned_consumer(self.rt, self.sender.wakeup if self.sender else None)]

    def start(self, stop: asyncio.Event, *, relay: OutboxRelay | None = None) -> None:
        rt = self.rt
        if relay is not None and self.gateway is not None:
            self.gateway.on_urgent_committed = relay.wakeup.set
        settings = rt.settings.devices
        self.notifier = notifier_from_settings(rt)
        jobs: list[tuple[str, float, Callable[[], Awaitable[object]]]] = [
            ("event partitions", 3600.0, lambda: upkeep_once(rt)),
            ("alarm escalation", 1.0, lambda: escalate_due(rt)),
            ("alarm notices", 2.0, lambda: send_pending(rt, self.notifier)),
        ]
        if settings.mosquitto_admin_username:
            jobs.append(("mosquitto revocations", 5.0, lambda: disable_revoked(rt)))
            jobs.append(("mosquitto registrations", 2.0, lambda: create_registered(rt)))
        self._tasks = [asyncio.create_task(every(name, interval, stop, step), name=name)
                       for name, interval, step in jobs]
        self._tasks.append(asyncio.create_task(supervise(rt, stop), name="device supervision"))
        if self.gateway is not None:
            self._tasks.append(asyncio.create_task(self.gateway.start(), name="mqtt-gateway-start"))
        if self.sender is not None:
            self._tasks.append(asyncio.create_task(self.sender.run(stop), name="device-commands"))

    async def close(self) -> None:
        if self.gateway is not None:
            try:
                await self.gateway.stop()
            except Exception:
                log.exception("the MQTT gateway did not stop cleanly")
        for task in self._tasks:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(task, 10)
        if self.notifier is not None:
            await self.notifier.aclose()
