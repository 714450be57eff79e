"""The MQTT gateway: paho-mqtt 2.x driven from asyncio, acknowledging each message only after its batch committed.

Shape (home-assistant's `mqtt/client.py` is the model): paho's socket callbacks register the socket with the
event loop (`add_reader`/`add_writer`), `loop_misc` runs every second for keep-alives, the blocking connect runs in
a thread, and every paho callback returns quickly and never raises. The gateway reconnects by itself and
subscribes again on every connect, whatever the broker says about the session (Mosquitto 2.0.11 does not restore a
persistent session's shared subscriptions after a broker restart; deploy/mosquitto/README.md).

Sessions: a stable client id per instance (`VNH_MQTT__CLIENT_ID`) with clean session off, and QoS 1, so messages
published while the service is down wait in the broker and arrive when it returns. Several instances split the
load through `$share/<VNH_MQTT__SHARE_GROUP>/vnh/v1/devices/+/events` (and `/telemetry`); the retained `status`
topic is subscribed plainly by every instance (retained messages are not delivered to shared subscriptions;
status handling is idempotent). The embedded amqtt broker has no shared subscriptions: there everything is
subscribed plainly, one instance. A graceful stop does not unsubscribe: the share stays queued for this client id.

Flow: `on_message` files each message into one of two queues — SOS, fall, cancel and call go to the urgent queue,
handled at once in small transactions ahead of telemetry (a telemetry batch does not start while an urgent one is
being stored, and one already under way waits for it between its phases: `give_way`); everything else to the bulk
queue, handled in batches of up to `devices.batch_size`. The socket is
read in bursts (paho's `loop_read` takes one packet), so batches fill and the event loop turns once per burst. A
batch is validated and stored by `devices.ingest.ingest_batch` in one transaction; after the commit every message of
the batch is acknowledged (PUBACK). If the database is unreachable the batch is retried, never acknowledged; if a
batch fails for another reason its messages are retried one by one, and one that still fails is dead-lettered
(`processing_failed`) and acknowledged, so one poison message cannot stall the queue. A message acknowledged is
therefore always committed; a crash before the acknowledgement means a redelivery, which the (device, event id) keys
turn into a duplicate, never a second row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import select
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from prometheus_client import Counter, Gauge
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from devices import membership, protocol
from devices.credentials import default_service_password
from devices.ingest import Inbound, dead_letter_row, ingest_batch, store_dead_letters
from devices.protocol import Rejection
from kernel.mqtt_probe import MqttAddress, parse_mqtt_url
from kernel.runtime import Runtime

log = logging.getLogger("vnh.devices.gateway")

MESSAGES = Counter("vnh_mqtt_messages_total", "MQTT messages received by the ingest", ["queue"])
ACKED = Counter("vnh_mqtt_acknowledged_total", "MQTT messages acknowledged after their batch committed")
RETRIES = Counter("vnh_mqtt_batch_retries_total", "Ingest batches retried", ["why"])
GAVE_WAY_TIMEOUTS = Counter("vnh_mqtt_give_way_timeouts_total",
                            "Telemetry batches that stopped waiting for an urgent batch after GIVE_WAY_MAX_S")
QUEUED = Gauge("vnh_mqtt_ingest_queued", "Messages received and not yet committed", ["client_id"])
CONNECTED = Gauge("vnh_mqtt_connected", "Whether the ingest is connected to the broker", ["client_id"])

URGENT_MARKERS = tuple(f'"{t}"'.encode() for t in protocol.URGENT_TYPES)
URGENT_BATCH = 50
READ_BURST = 200
GIVE_WAY_MAX_S = 0.25  # the longest a telemetry batch waits, mid-transaction, for an urgent one
TRANSIENT = (OperationalError, InterfaceError, ConnectionError, OSError, TimeoutError)


@dataclass(slots=True)
class Received:
    inbound: Inbound
    mid: int
    qos: int
    generation: int  # the connection it arrived on: an acknowledgement is only valid on that connection


def is_transient(exc: BaseException) -> bool:
    """A failure worth retrying the same batch for (the database or the network), not the messages' fault."""
    if isinstance(exc, TRANSIENT):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


class MqttGateway:
    def __init__(self, rt: Runtime, *, url: str | None = None, client_id: str | None = None,
                 share_group: str | None = None, shared: bool | None = None, batch_size: int | None = None,
                 batch_wait_s: float | None = None, username: str | None = None, password: str | None = None,
                 member_heartbeat_s: float = membership.HEARTBEAT_S,
                 member_missing_after_s: float = membership.MISSING_AFTER_S) -> None:
        settings = rt.settings
        target = url or settings.mqtt_url
        if target is None:
            raise RuntimeError("no MQTT_URL: the gateway needs a broker")
        self.rt = rt
        self.address = parse_mqtt_url(target, settings.tls)
        self.client_id = client_id or settings.mqtt.client_id
        self.share_group = share_group or settings.mqtt.share_group
        embedded = bool(rt.embedded and "mqtt" in rt.embedded)
        self.shared = (settings.mqtt.shared_subscription and not embedded) if shared is None else shared
        self.batch_size = batch_size or settings.devices.batch_size
        self.batch_wait_s = settings.devices.batch_wait_s if batch_wait_s is None else batch_wait_s
        self.username = username or self.address.username or settings.mqtt.username or "vnh-service"
        secret = settings.mqtt.password.get_secret_value() if settings.mqtt.password else None
        self.password = password or self.address.password or secret or default_service_password(rt.cipher)
        self.connected = asyncio.Event()
        self._disconnected = asyncio.Event()
        self._urgent_idle = asyncio.Event()
        self._urgent_idle.set()
        self._urgent_devices: frozenset[str] = frozenset()  # the devices of the urgent batch being stored
        self.generation = 0
        self._urgent: asyncio.Queue[Received] = asyncio.Queue()
        self._bulk: asyncio.Queue[Received] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: mqtt.Client | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._misc: asyncio.Task[None] | None = None
        self._stopping = False
        self._reconnecting: asyncio.Task[None] | None = None
        self._published: dict[int, asyncio.Future[None]] = {}
        self._subscribed: dict[int, asyncio.Future[list[ReasonCode]]] = {}
        self._loop_thread: threading.Thread | None = None
        self._in_progress = 0
        self.on_online: Callable[[list[str]], None] | None = None
        self.on_urgent_committed: Callable[[], None] | None = None
        # label children bound once: `labels()` per message is measurable at thousands of messages a second
        self._urgent_count, self._bulk_count = MESSAGES.labels("urgent"), MESSAGES.labels("bulk")
        self._queued_gauge = QUEUED.labels(self.client_id)
        # the share group's members as last read (devices/membership.py): a dead member's share waits in the broker
        self.member_heartbeat_s = member_heartbeat_s
        self.member_missing_after_s = member_missing_after_s
        self.members: list[membership.Member] = []
        self._beat_now = asyncio.Event()

    # --- topics --------------------------------------------------------------------------------------------

    def subscriptions(self) -> list[tuple[str, int]]:
        prefix = f"$share/{self.share_group}/" if self.shared else ""
        return [(f"{prefix}vnh/v1/devices/+/events", 1), (f"{prefix}vnh/v1/devices/+/telemetry", 1),
                ("vnh/v1/devices/+/status", 1)]

    # --- lifecycle -------------------------------------------------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        v5 = self.rt.settings.mqtt.protocol == "5"
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=self.client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if v5 else False, manual_ack=True, reconnect_on_failure=False,
        )
        client.username_pw_set(self.username, self.password)
        context = self.address.ssl_context()
        if context is not None:  # mqtts://: the broker's certificate and name verified (kernel/tls.py)
            client.tls_set_context(context)
        client.max_inflight_messages_set(1000)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_socket_register_write
        client.on_socket_unregister_write = self._on_socket_unregister_write
        return client

    async def start(self) -> None:
        """Start consuming and connecting; returns at once (the connection is made and kept in the background)."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.current_thread()
        self._client = self._make_client()
        self._stopping = False
        self._tasks = [asyncio.create_task(self._consume(self._urgent, URGENT_BATCH, 0.0, urgent=True),
                                           name="mqtt-urgent"),
                       asyncio.create_task(self._consume(self._bulk, self.batch_size, self.batch_wait_s),
                                           name="mqtt-bulk")]
        self._reconnecting = asyncio.create_task(self._connect_loop(), name="mqtt-connect")
        self._tasks.append(asyncio.create_task(self._membership_loop(), name="mqtt-membership"))
        self.rt.readiness["mqtt_ingest"] = self._readiness

    async def wait_connected(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        await asyncio.wait_for(self.connected.wait(), timeout)

    async def stop(self, *, drain_timeout: float = 5.0) -> None:
        """Finish the batches in hand (they are acknowledged), then disconnect. The session stays: whatever was
        not acknowledged is delivered again when this client id returns."""
        self._stopping = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
        if self.connected.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(self._urgent.join(), self._bulk.join()), drain_timeout)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        client = self._client
        if client is not None and self.connected.is_set():
            client.disconnect()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._disconnected.wait(), 2.0)
        if self._misc is not None:
            self._misc.cancel()
        self.connected.clear()
        CONNECTED.labels(self.client_id).set(0)
        self.rt.readiness.pop("mqtt_ingest", None)

    async def _readiness(self) -> dict[str, Any]:
        return {"ok": self.connected.is_set(), "url": self.address.display, "client_id": self.client_id,
                "shared": self.shared, "queued": self.pending, "share_group": self.share_group,
                "members": [m.client_id for m in self.members],
                "members_missing": [m.client_id for m in self.members if m.missing]}

    async def _membership_loop(self) -> None:
        """While connected, say so in the share group's member hash; read everyone's last report back (gauges,
        `/readyz`). A failure (Redis away) is logged and tried again on the next beat; ingest does not depend on it."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._beat_now.wait(), self.member_heartbeat_s)
            self._beat_now.clear()
            try:
                if self.connected.is_set():
                    await membership.beat(self.rt, self.share_group, self.client_id)
                self.members = await membership.members(self.rt, self.share_group,
                                                        missing_after_s=self.member_missing_after_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("ingest membership heartbeat failed: %s", exc)

    @property
    def pending(self) -> int:
        """Messages received and not yet committed."""
        return self._urgent.qsize() + self._bulk.qsize() + self._in_progress

    def _connect_first(self) -> None:
        assert self._client is not None
        keepalive = self.rt.settings.mqtt.keepalive_s
        if self.rt.settings.mqtt.protocol == "5":
            from paho.mqtt.packettypes import PacketTypes

            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = 7 * 24 * 3600  # as Mosquitto's persistent_client_expiration
            self._client.connect(self.address.host, self.address.port, keepalive, clean_start=False,
                                 properties=properties)
        else:
            self._client.connect(self.address.host, self.address.port, keepalive)

    async def _connect_loop(self) -> None:
        """Connect, and connect again after every loss, with backoff (1 s doubling to 30 s)."""
        assert self._client is not None and self._loop is not None
        delay = 1.0
        first = True
        while not self._stopping:
            if self.connected.is_set():
                await asyncio.sleep(0.2)
                continue
            try:
                if first:
                    await self._loop.run_in_executor(None, self._connect_first)
                    first = False
                else:
                    await self._loop.run_in_executor(None, self._client.reconnect)
                await asyncio.wait_for(self.connected.wait(), 10.0)
                delay = 1.0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("MQTT connect to %s failed (%s); again in %.0f s", self.address.display, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    # --- paho callbacks (event loop thread, except socket open during a threaded connect) ----------------------

    def _soon(self, callback: Any, *args: Any) -> None:
        assert self._loop is not None
        if threading.current_thread() is self._loop_thread:
            callback(*args)
        else:
            self._loop.call_soon_threadsafe(callback, *args)

    def _on_socket_open(self, client: mqtt.Client, _userdata: Any, sock: socket.socket | Any) -> None:
        self._soon(self._watch_socket, client, sock)

    def _watch_socket(self, client: mqtt.Client, sock: Any) -> None:
        assert self._loop is not None
        self._loop.add_reader(sock, self._read_burst, client, sock)
        if self._misc is None or self._misc.done():
            self._misc = self._loop.create_task(self._misc_loop(client), name="mqtt-misc")

    def _read_burst(self, client: mqtt.Client, sock: Any) -> None:
        """Read what the socket holds, up to READ_BURST packets (paho's `loop_read` takes one): one pass of the event
        loop per burst instead of per message, so batches fill and the loop stays responsive."""
        watched: list[Any] = [sock]
        for _ in range(READ_BURST):
            if client.loop_read() != mqtt.MQTT_ERR_SUCCESS or client.socket() is not watched[0]:
                return
            try:
                if not select.select(watched, [], [], 0)[0]:
                    return
            except (OSError, ValueError):  # closed meanwhile
                return

    def _on_socket_close(self, _client: mqtt.Client, _userdata: Any, sock: socket.socket | Any) -> None:
        self._soon(self._unwatch_socket, sock)

    def _unwatch_socket(self, sock: Any) -> None:
        assert self._loop is not None
        with contextlib.suppress(Exception):
            self._loop.remove_reader(sock)
            self._loop.remove_writer(sock)

    def _on_socket_register_write(self, client: mqtt.Client, _userdata: Any, sock: socket.socket | Any) -> None:
        assert self._loop is not None
        self._soon(self._loop.add_writer, sock, client.loop_write)

    def _on_socket_unregister_write(self, _client: mqtt.Client, _userdata: Any, sock: socket.socket | Any) -> None:
        assert self._loop is not None
        self._soon(self._loop.remove_writer, sock)

    async def _misc_loop(self, client: mqtt.Client) -> None:
        while client.loop_misc() == mqtt.MQTT_ERR_SUCCESS:  # noqa: ASYNC110  (a periodic tick, not a wait)
            await asyncio.sleep(1.0)

    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: ReasonCode,
                    _properties: Properties | None) -> None:
        if reason.is_failure:
            log.error("MQTT broker %s refused the ingest's connection: %s", self.address.display, reason)
            return
        # Messages of the previous connection still queued are processed (QoS 0 telemetry would not come back)
        # but not acknowledged: the broker delivers the QoS 1 ones again, and they are duplicates by then.
        self.generation += 1
        result, _mid = client.subscribe(self.subscriptions())
        if result != mqtt.MQTT_ERR_SUCCESS:
            log.error("MQTT subscribe failed: %s", result)
        self._disconnected.clear()
        self.connected.set()
        self._beat_now.set()
        CONNECTED.labels(self.client_id).set(1)
        log.info("MQTT ingest %s connected to %s (%s)", self.client_id, self.address.display,
                 "shared " + self.share_group if self.shared else "plain subscriptions")

    def _on_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: ReasonCode,
                       _properties: Properties | None) -> None:
        self.connected.clear()
        self._disconnected.set()
        CONNECTED.labels(self.client_id).set(0)
        for future in self._published.values():
            if not future.done():
                future.set_exception(ConnectionError("disconnected before the broker acknowledged"))
        self._published.clear()
        if not self._stopping:
            log.warning("MQTT ingest %s lost its connection (%s); reconnecting", self.client_id, reason)

    def _on_subscribe(self, _client: mqtt.Client, _userdata: Any, mid: int, reasons: list[ReasonCode],
                      _properties: Properties | None) -> None:
        refused = [r for r in reasons if r.is_failure]
        if refused:
            log.error("MQTT broker refused ingest subscriptions: %s", refused)
        future = self._subscribed.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(reasons)

    def _on_publish(self, _client: mqtt.Client, _userdata: Any, mid: int, _reason: ReasonCode,
                    _properties: Properties | None) -> None:
        future = self._published.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(None)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            self._file(message)
        except Exception:  # never raise into paho; the message stays unacknowledged and comes back on reconnect
            log.exception("could not file MQTT message on %r", message.topic)

    def _file(self, message: mqtt.MQTTMessage) -> None:
        received_at = self.rt.clock.now()
        topic = message.topic
        parsed = protocol.parse_topic(topic)
        if isinstance(parsed, Rejection):
            inbound = Inbound(device_id="", kind="events", payload=bytes(message.payload), received_at=received_at,
                              topic=topic[:300], rejection=parsed)
            urgent = False
        else:
            device_id, kind = parsed
            inbound = Inbound(device_id=device_id, kind=kind, payload=bytes(message.payload), received_at=received_at,
                              topic=topic)
            urgent = kind == "events" and any(marker in message.payload for marker in URGENT_MARKERS)
        item = Received(inbound, message.mid, message.qos, self.generation)
        (self._urgent if urgent else self._bulk).put_nowait(item)
        (self._urgent_count if urgent else self._bulk_count).inc()
        self._queued_gauge.inc()

    # --- consuming -------------------------------------------------------------------------------------------

    async def _consume(self, queue: asyncio.Queue[Received], limit: int, wait_s: float, *, urgent: bool = False
                       ) -> None:
        while True:
            first = await queue.get()
            batch = [first]
            deadline = time.monotonic() + wait_s
            while len(batch) < limit:
                try:
                    batch.append(queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(queue.get(), remaining))
                except TimeoutError:
                    break
            if urgent:
                self._urgent_idle.clear()
                self._urgent_devices = frozenset(item.inbound.device_id for item in batch)
            else:
                await self._urgent_idle.wait()  # SOS first: telemetry waits while an urgent batch is being stored
            self._in_progress += len(batch)
            try:
                await self._commit_batch(batch, urgent=urgent)
                if urgent and self.on_urgent_committed is not None:
                    self.on_urgent_committed()  # e.g. wake the outbox relay: the offers go out now, not at its poll
            finally:
                self._in_progress -= len(batch)
                if urgent:
                    self._urgent_devices = frozenset()
                if urgent and queue.empty():
                    self._urgent_idle.set()
                for _ in batch:
                    queue.task_done()

    async def give_way(self, devices: set[str]) -> None:
        """Called by a telemetry batch between its phases: while an urgent batch is being stored, wait for it, so an
        SOS does not share the interpreter with telemetry work that began before it arrived.

        Never waits for an urgent batch of one of its own devices (it may need the row this batch has locked), and
        never longer than GIVE_WAY_MAX_S (an unforeseen lock between the two then costs that long, not a deadlock)."""
        deadline = time.monotonic() + GIVE_WAY_MAX_S
        while not self._urgent_idle.is_set() and not self._urgent_devices & devices:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                GAVE_WAY_TIMEOUTS.inc()
                return
            with contextlib.suppress(TimeoutError):  # look again at the devices of the next urgent batch
                await asyncio.wait_for(self._urgent_idle.wait(), min(remaining, 0.01))

    async def _commit_batch(self, batch: list[Received], *, urgent: bool = False) -> None:
        delay = 0.2
        while True:
            try:
                await self._store([item.inbound for item in batch], urgent=urgent)
                self._ack(batch)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if is_transient(exc):
                    RETRIES.labels("transient").inc()
                    log.warning("ingest batch of %d not stored (%s); retrying in %.1f s", len(batch), exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10.0)
                    continue
                if len(batch) == 1:
                    await self._dead_letter_failure(batch[0], exc)
                    return
                RETRIES.labels("bisect").inc()
                log.exception("ingest batch of %d failed; retrying its messages one by one", len(batch))
                for item in batch:
                    await self._commit_batch([item], urgent=urgent)
                return

    async def _store(self, inbounds: Sequence[Inbound], *, urgent: bool = False) -> None:
        async with self.rt.database.unit_of_work() as session:
            outcomes = await ingest_batch(session, self.rt, inbounds, give_way=None if urgent else self.give_way)
        # devices that came online (a status report that changed the stored state, or an event over MQTT from a
        # device held offline); a retained status replayed on re-subscribe changes nothing and wakes nothing
        returned = sorted({m.device_id for m, o in zip(inbounds, outcomes, strict=True) if o.came_online})
        if returned and self.on_online is not None:
            self.on_online(returned)  # after the commit: their queued commands go out now

    async def _dead_letter_failure(self, item: Received, exc: BaseException) -> None:
        log.error("message on %s could not be processed: %r; dead-lettered", item.inbound.topic, exc)
        rejection = Rejection("processing_failed", f"{type(exc).__name__}: {exc}"[:500])
        while True:
            try:
                async with self.rt.database.unit_of_work() as session:
                    await store_dead_letters(session, [dead_letter_row(item.inbound, rejection, None)])
                break
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("could not store the dead letter; retrying")
                await asyncio.sleep(1.0)
        self._ack([item])

    def _ack(self, batch: Sequence[Received]) -> None:
        client = self._client
        assert client is not None
        self._queued_gauge.dec(len(batch))
        acked = 0
        for item in batch:
            if item.qos > 0 and item.generation == self.generation and self.connected.is_set():
                client.ack(item.mid, item.qos)
                acked += 1
        ACKED.inc(acked)

    # --- downlink --------------------------------------------------------------------------------------------

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Publish and wait for the broker's acknowledgement (QoS 1); raises ConnectionError when not connected."""
        client = self._client
        if client is None or not self.connected.is_set():
            raise ConnectionError("the MQTT gateway is not connected")
        assert self._loop is not None
        future: asyncio.Future[None] = self._loop.create_future()
        info = client.publish(topic, payload, qos=qos)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"publish failed: {mqtt.error_string(info.rc)}")
        if qos == 0 or info.is_published():
            return
        self._published[info.mid] = future
        await asyncio.wait_for(future, timeout)



async def end_session(address: MqttAddress, client_id: str, username: str | None, password: str | None) -> None:
    """End a client id's persistent session (and its share of a share group): connect once with a clean session.

    For retiring an instance id after scaling down (deploy/mosquitto/README.md) and for tests. Whatever was queued
    for that session is discarded."""

    def run() -> None:
        client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=MQTTProtocolVersion.MQTTv311, clean_session=True)
        if username:
            client.username_pw_set(username, password)
        context = address.ssl_context()
        if context is not None:
            client.tls_set_context(context)
        done = threading.Event()
        client.on_connect = lambda *_args: done.set()
        client.connect(address.host, address.port, 10)
        client.loop_start()
        done.wait(5.0)
        client.disconnect()
        client.loop_stop()

    await asyncio.get_running_loop().run_in_executor(None, run)
