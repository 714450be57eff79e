"""Device ingest end to end, against the raw broker in the same run, and SOS latency under telemetry (issue 4).

    .venv/bin/python bench/devices_ingest.py [--events 30000] [--devices 40] [--telemetry-rate 500] [--sos 200]

Broker: a Mosquitto of the run's own with vnh's configuration (deploy/mosquitto/mosquitto.conf: queues of 100,000,
1,000 in flight, persistence, the dynamic-security plugin) on a free loopback port, its dynamic-security file made
by `vnh devices export-mosquitto-acl`'s code from the devices registered in a scratch database. Publishers: one
paho client per device (its own id and token), QoS 1, up to 1,000 in flight, spread over 4 threads; the same
~150-byte `heart_rate` events, each with its own `event_id` and `seq`, in both runs.

1. Raw baseline: paho → Mosquitto → one paho subscriber on a shared subscription, manual ack of each message at
   once (QoS 1, the broker's in-flight window of 1,000). Rate = events / (last acknowledged − first published).
2. vnh: the same events into vnh's MQTT gateway (in this process: paho driven from asyncio, manual ack after each
   batch commits, batches of up to 500 validated, deduplicated by (device, event id) and stored in the
   month-partitioned `device_events` with one multi-row insert). Rate = events / (last committed − first
   published); the database is then asked how many rows it holds. Ratio = vnh / raw.
3. SOS latency: telemetry flows at `--telemetry-rate` events/s while `--sos` elders press SOS, one every 100 ms.
   For each: publish → alarm, urgent emergency order and offers to the 3 nearest on-duty caregivers committed
   (and acknowledged), and publish → the first `dispatch.offer.created` read back from the Redis stream the console
   listens to (the outbox relay, woken by the urgent commit). 20 caregivers are on duty around 锡尼镇. Each SOS's
   time is also split into stages (publish → the gateway's paho callback → its transaction starts → its statements
   sent → committed), and full garbage collections during the phase are counted.

Everything shares this machine's cores: publishers, Mosquitto, the gateway, PostgreSQL and Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import multiprocessing
import os
import queue
import secrets
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import paho.mqtt.client as mqtt
from common import (
    GcPauses,
    Progress,
    bench_settings,
    drop_redis_keys,
    machine_note,
    scratch_database,
    summary_ms,
    table,
)
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from pydantic import SecretStr
from sqlalchemy import select, text

from devices.gateway import MqttGateway
from devices.ingest import Inbound, ingest_batch
from devices.models import Alarm
from devices.mosquitto import DeviceAccount, dynsec_config
from devices.protocol import topic_for
from devices.registry import register_device
from devices.schemas import DeviceCreate
from dispatch import live
from dispatch.registry import create_caregiver, create_organization
from dispatch.schemas import CaregiverCreate, OrganizationCreate
from kernel.authz import Access
from kernel.mqtt_probe import MqttAddress, parse_mqtt_url
from kernel.runtime import Runtime
from kernel.settings import MqttSettings
from orders.elders import create_elder
from orders.schemas import ElderCreate
from tests.devices.mosquitto import PLUGINS, vnh_mosquitto
from tests.factories import XINI_TOWN, caregiver_payload, elder_payload, offset
from vnh.workers import build_relay

SERVICE_PASSWORD = secrets.token_hex(16)
PUBLISH_THREADS = 4


# --- world ---------------------------------------------------------------------------------------------------

async def seed(rt: Runtime, devices: int, sos_elders: int, caregivers: int, progress: Progress
               ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Elders with a wristband each (telemetry) and with a call button each (SOS); caregivers on duty nearby."""
    access = Access.system("bench")
    telemetry: list[tuple[str, str]] = []
    sos: list[tuple[str, str]] = []
    async with rt.database.unit_of_work() as s:
        for index in range(devices + sos_elders):
            lat, lon = offset(*XINI_TOWN, north_m=(index % 20) * 150 - 1500, east_m=(index // 20) * 150 - 1500)
            elder = await create_elder(s, rt.clock, rt.cipher, access,
                                       ElderCreate.model_validate(elder_payload(
                                           lat=lat, lon=lon, birth_date=date(1940 + index // 400, 3, 2))))
            kind, prefix = ("wristband", "wb") if index < devices else ("call_button", "btn")
            device, token = await register_device(s, rt.clock, rt.cipher, access, DeviceCreate(
                device_id=f"bench-{prefix}-{index:05d}", kind=kind, elder_id=str(elder.id)))  # type: ignore[arg-type]
            (telemetry if index < devices else sos).append((device.device_id, token))
        org = await create_organization(s, rt.clock, access, OrganizationCreate(name="锡尼镇居家养老服务中心",
                                                                              region_code="150625"))
        staff = []
        for index in range(caregivers):
            caregiver, _user = await create_caregiver(s, rt.clock, rt.cipher, access, CaregiverCreate.model_validate(
                caregiver_payload(str(org.id), username=f"bench-cg-{index}")))
            caregiver.on_duty = True
            staff.append(caregiver.id)
    for index, caregiver_id in enumerate(staff):
        await live.set_duty(rt, caregiver_id, True)
        lat, lon = offset(*XINI_TOWN, north_m=(index % 5) * 600 - 1200, east_m=(index // 5) * 600 - 900)
        await live.set_position(rt, caregiver_id, lat, lon, datetime.now(UTC))
    progress(f"seeded {devices} wristbands, {sos_elders} call buttons, {caregivers} caregivers on duty")
    return telemetry, sos


async def dynsec_for(rt: Runtime) -> dict[str, Any]:
    from devices.models import Device

    async with rt.database.unit_of_work() as s:
        rows = (await s.execute(select(Device.device_id, Device.status, Device.broker_password))).all()
    config, skipped = dynsec_config([DeviceAccount(r.device_id, r.status == "active", r.broker_password) for r in rows],
                                    service_username="vnh-service", service_password=SERVICE_PASSWORD)
    assert not skipped
    return config


# --- publishers ------------------------------------------------------------------------------------------------

def event_payload(device_id: str, seq: int, kind: str = "heart_rate") -> bytes:
    body: dict[str, Any] = {"event_id": f"{device_id}-{seq}-{uuid.uuid4().hex[:6]}", "type": kind,
                            "ts": datetime.now(UTC).isoformat(timespec="milliseconds"), "seq": seq, "battery": 80}
    if kind == "heart_rate":
        body["value"] = {"bpm": 60 + seq % 30}
    return json.dumps(body, separators=(",", ":")).encode()


class Publisher:
    """One paho client per device (the broker's ACL binds each to its own topics), threaded loops."""

    def __init__(self, address: MqttAddress, credentials: Sequence[tuple[str, str]]) -> None:
        self.clients: dict[str, mqtt.Client] = {}
        for device_id, token in credentials:
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device_id, clean_session=True,
                                 protocol=MQTTProtocolVersion.MQTTv311)
            client.username_pw_set(device_id, token)
            client.max_inflight_messages_set(1000)
            client.max_queued_messages_set(0)
            connected = threading.Event()
            client.on_connect = lambda c, u, f, rc, p, done=connected: done.set()
            client.connect(address.host, address.port, 60)
            client.loop_start()
            if not connected.wait(10):
                raise RuntimeError(f"{device_id} could not connect")
            self.clients[device_id] = client

    def publish_all(self, messages: dict[str, list[bytes]]) -> float:
        """Publish every device's messages from PUBLISH_THREADS threads; answers the first publish time."""
        started: list[float] = []
        lock = threading.Lock()
        devices = list(messages)

        def worker(mine: list[str]) -> None:
            infos = []
            with lock:
                started.append(time.perf_counter())
            rounds = max(len(messages[d]) for d in mine)
            for i in range(rounds):
                for device_id in mine:
                    if i < len(messages[device_id]):
                        infos.append(self.clients[device_id].publish(topic_for(device_id, "events"),
                                                                     messages[device_id][i], qos=1))
            for info in infos[-2000:]:
                info.wait_for_publish(120)

        threads = [threading.Thread(target=worker, args=(devices[i::PUBLISH_THREADS],))
                   for i in range(PUBLISH_THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return min(started)

    def close(self) -> None:
        for client in self.clients.values():
            client.disconnect()
            client.loop_stop()


def plan(credentials: Sequence[tuple[str, str]], events: int, first_seq: int = 1) -> dict[str, list[bytes]]:
    per = events // len(credentials)
    return {device_id: [event_payload(device_id, seq) for seq in range(first_seq, first_seq + per)]
            for device_id, _ in credentials}


def device_process(url: str, credentials: list[tuple[str, str]], mode: str, arg: float, first_seq: int,
                   out: Any, stop: Any) -> None:
    """The devices, in a process of their own (their client threads must not share the service's interpreter):
    `burst` publishes `arg` events as fast as the window allows; `telemetry` publishes `arg` events/s until
    stopped; `sos` presses SOS on each device in turn every 100 ms and reports each publish time."""
    address = parse_mqtt_url(url)
    publisher = Publisher(address, credentials)
    out.put(("ready", time.perf_counter()))
    try:
        if mode == "burst":
            messages = plan(credentials, int(arg), first_seq)
            out.put(("first", publisher.publish_all(messages)))
        elif mode == "telemetry":
            interval, i = 1.0 / arg, 0
            seqs = dict.fromkeys(publisher.clients, first_seq)
            devices = list(publisher.clients)
            next_at = time.perf_counter()
            while not stop.is_set():
                device_id = devices[i % len(devices)]
                publisher.clients[device_id].publish(topic_for(device_id, "events"),
                                                     event_payload(device_id, seqs[device_id]), qos=1)
                seqs[device_id] += 1
                i += 1
                next_at += interval
                pause = next_at - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
            out.put(("sent", i))
        else:
            for index, device_id in enumerate(publisher.clients):
                event_id = f"sos-{index}-{uuid.uuid4().hex[:8]}"
                body = json.dumps({"event_id": event_id, "type": "sos", "ts": datetime.now(UTC).isoformat(),
                                   "seq": 1}).encode()
                at = time.perf_counter()  # CLOCK_MONOTONIC: comparable across processes on Linux
                publisher.clients[device_id].publish(topic_for(device_id, "events"), body, qos=1)
                out.put(("sos", event_id, at))
                time.sleep(0.1)
            out.put(("done", time.perf_counter()))
    finally:
        time.sleep(0.5)
        publisher.close()


class Devices:
    """`device_process` started with spawn; `get()` reads what it reports."""

    def __init__(self, url: str, credentials: Sequence[tuple[str, str]], mode: str, arg: float,
                 first_seq: int = 1) -> None:
        context = multiprocessing.get_context("spawn")
        self.out = context.Queue()
        self.stop = context.Event()
        self.process = context.Process(target=device_process, args=(url, list(credentials), mode, arg, first_seq,
                                                                    self.out, self.stop), daemon=True)
        self.process.start()

    async def get(self, timeout: float = 600.0) -> Any:  # noqa: ASYNC109
        return await asyncio.to_thread(self.out.get, True, timeout)

    async def finish(self) -> None:
        self.stop.set()
        await asyncio.to_thread(self.process.join, 60)


# --- 1. raw baseline ---------------------------------------------------------------------------------------------

async def raw_baseline(url: str, credentials: Sequence[tuple[str, str]], events: int) -> dict[str, float]:
    address = parse_mqtt_url(url)
    per = events // len(credentials)
    total = per * len(credentials)
    received = 0
    done = threading.Event()
    last = [0.0]
    subscriber = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-raw", clean_session=True,
                             protocol=MQTTProtocolVersion.MQTTv311, manual_ack=True)
    subscriber.username_pw_set("vnh-service", SERVICE_PASSWORD)
    subscribed = threading.Event()

    def on_message(client: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        nonlocal received
        client.ack(message.mid, message.qos)
        received += 1
        if received >= total:
            last[0] = time.perf_counter()
            done.set()

    subscriber.on_message = on_message
    subscriber.on_connect = lambda c, u, f, rc, p: c.subscribe("$share/benchraw/vnh/v1/devices/+/events", qos=1)
    subscriber.on_subscribe = lambda c, u, mid, codes, p: subscribed.set()
    subscriber.connect(address.host, address.port, 60)
    subscriber.loop_start()
    assert subscribed.wait(10)
    devices = Devices(url, credentials, "burst", total)
    try:
        assert (await devices.get())[0] == "ready"
        first = (await devices.get())[1]
        if not await asyncio.to_thread(done.wait, 300):
            raise RuntimeError(f"raw baseline: {received} of {total} received")
    finally:
        await devices.finish()
        subscriber.disconnect()
        subscriber.loop_stop()
    seconds = last[0] - first
    return {"events": total, "seconds": seconds, "rate": total / seconds}


# --- 2. vnh ingest -----------------------------------------------------------------------------------------------

class CountingGateway(MqttGateway):
    """The production gateway; it only also notes when each event's batch committed (bench instrumentation)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stored = 0
        self.target = 0
        self.reached = asyncio.Event()
        self.last_commit = 0.0
        self.committed_at: dict[str, float] = {}
        self.watch_prefix = "\x00"
        # where a watched event's time went: arrival from paho, start of its transaction, a bulk batch beside it
        self.arrived_at: dict[str, float] = {}
        self.stored_from: dict[str, float] = {}
        self.commit_from: dict[str, float] = {}
        self.beside_bulk: dict[str, bool] = {}

    def _file(self, message: Any) -> None:
        if self.watch_prefix.encode() in message.payload:
            with contextlib.suppress(ValueError, KeyError):
                self.arrived_at[json.loads(message.payload)["event_id"]] = time.perf_counter()
        super()._file(message)

    async def _store(self, inbounds: Sequence[Inbound], *, urgent: bool = False) -> None:
        started = time.perf_counter()
        bulk_busy = self._in_progress > len(inbounds)  # another batch is being stored in this process meanwhile
        async with self.rt.database.unit_of_work() as session:
            outcomes = await ingest_batch(session, self.rt, inbounds, give_way=None if urgent else self.give_way)
            committing = time.perf_counter()
        now = time.perf_counter()
        self.last_commit = now
        for outcome in outcomes:
            for accepted in outcome.accepted:
                if not accepted.duplicate:
                    self.stored += 1
                if accepted.event_id.startswith(self.watch_prefix):
                    self.committed_at[accepted.event_id] = now
                    self.stored_from[accepted.event_id] = started
                    self.commit_from[accepted.event_id] = committing
                    self.beside_bulk[accepted.event_id] = bulk_busy
        if self.target and self.stored >= self.target:
            self.reached.set()


async def vnh_ingest(gateway: CountingGateway, url: str, credentials: Sequence[tuple[str, str]],
                     events: int, rt: Runtime) -> dict[str, float]:
    per = events // len(credentials)
    total = per * len(credentials)
    gateway.stored, gateway.target = 0, total
    gateway.reached.clear()
    devices = Devices(url, credentials, "burst", total, first_seq=1)
    try:
        assert (await devices.get())[0] == "ready"
        first = (await devices.get())[1]
        await asyncio.wait_for(gateway.reached.wait(), 600)
    finally:
        await devices.finish()
    seconds = gateway.last_commit - first
    async with rt.database.unit_of_work() as s:
        rows = int(await s.scalar(text("SELECT count(*) FROM device_events WHERE type = 'heart_rate'")) or 0)
        keys = int(await s.scalar(text("SELECT count(*) FROM device_event_keys")) or 0)
    return {"events": total, "seconds": seconds, "rate": total / seconds, "rows": rows, "keys": keys}


# --- 3. SOS latency under telemetry ---------------------------------------------------------------------------------

async def sos_latency(gateway: CountingGateway, rt: Runtime, url: str, telemetry: Sequence[tuple[str, str]],
                      sos: Sequence[tuple[str, str]], rate: float) -> dict[str, Any]:
    relay = build_relay(rt)
    stop = asyncio.Event()
    relay_task = asyncio.create_task(relay.run(stop))
    gateway.on_urgent_committed = relay.wakeup.set
    gateway.watch_prefix = "sos-"
    offer_seen: dict[str, float] = {}
    stream = rt.redis_key(rt.settings.outbox.stream_key)

    async def read_stream() -> None:
        last_id = "$"
        while not stop.is_set():
            answer = await rt.redis.xread({stream: last_id}, block=500, count=1000)
            now = time.perf_counter()
            for _key, entries in answer or []:
                for entry_id, fields in entries:
                    last_id = entry_id
                    if fields[b"type"] == b"dispatch.offer.created":
                        order_id = json.loads(fields[b"payload"])["order_id"]
                        offer_seen.setdefault(order_id, now)

    reader = asyncio.create_task(read_stream())
    pauses = GcPauses()
    # the devices go on numbering where the burst stopped: no seq gap is reported
    background = Devices(url, telemetry, "telemetry", rate, first_seq=gateway.target // len(telemetry) + 1)
    published: dict[str, float] = {}
    sent_background = 0
    try:
        assert (await background.get())[0] == "ready"
        flowing_since = time.perf_counter()
        await asyncio.sleep(2.0)  # telemetry is flowing
        buttons = Devices(url, sos, "sos", 0)
        assert (await buttons.get())[0] == "ready"
        while True:
            item = await buttons.get()
            if item[0] == "done":
                break
            published[item[1]] = item[2]
        deadline = time.monotonic() + 30
        while (len(gateway.committed_at) < len(sos) or len(offer_seen) < len(sos)) and \
                time.monotonic() < deadline:  # noqa: ASYNC110  (two counters filled by other tasks)
            await asyncio.sleep(0.05)
        await buttons.finish()
    finally:
        await background.finish()
        with contextlib.suppress(queue.Empty):
            while True:
                item = background.out.get(timeout=5)
                if item[0] == "sent":
                    sent_background = item[1]
                    break
        window = time.perf_counter() - flowing_since
        stop.set()
        await relay_task
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        pauses.close()
    async with rt.database.unit_of_work() as s:
        alarms = {a.source_event_id: a for a in (await s.scalars(select(Alarm).where(Alarm.type == "sos"))).all()}
        offers = int(await s.scalar(text("SELECT count(*) FROM offers")) or 0)
    committed = [gateway.committed_at[e] - t for e, t in published.items() if e in gateway.committed_at]
    timed = [e for e in published if e in gateway.committed_at and e in gateway.arrived_at]
    stages = {
        "publish → the gateway's paho callback": [gateway.arrived_at[e] - published[e] for e in timed],
        "→ its transaction starts (urgent queue)": [gateway.stored_from[e] - gateway.arrived_at[e] for e in timed],
        "→ its statements sent (ingest_batch)": [gateway.commit_from[e] - gateway.stored_from[e] for e in timed],
        "→ committed (COMMIT, the WAL flushed)": [gateway.committed_at[e] - gateway.commit_from[e] for e in timed],
        "committed, a telemetry batch being stored beside": [gateway.committed_at[e] - published[e] for e in timed
                                                            if gateway.beside_bulk[e]],
        "committed, no telemetry batch beside": [gateway.committed_at[e] - published[e] for e in timed
                                                if not gateway.beside_bulk[e]],
    }
    first_offer = [offer_seen[str(alarms[e].order_id)] - t for e, t in published.items()
                   if e in alarms and alarms[e].order_id and str(alarms[e].order_id) in offer_seen]
    in_gc = [e for e in timed if any(a < gateway.committed_at[e] and b > gateway.stored_from[e]
                                     for a, b in pauses.gen2_spans)]
    gc_note = {"gen2_collections": len(pauses.gen2), "gen2_max_ms": max(pauses.gen2, default=0.0) * 1e3,
               "gc_total_ms": pauses.total * 1e3, "sos_during_gen2": len(in_gc),
               "sos_during_gen2_ms": sorted(round((gateway.committed_at[e] - published[e]) * 1e3, 1)
                                            for e in in_gc)}
    return {"sos": len(sos), "alarms": len(alarms), "gc": gc_note,
            "with_order": sum(1 for a in alarms.values() if a.order_id),
            "offers": offers, "committed": summary_ms(committed) if committed else None,
            "first_offer": summary_ms(first_offer) if first_offer else None,
            "stages": {name: summary_ms(values) for name, values in stages.items() if values},
            "telemetry_rate": sent_background / max(window, 1e-9)}


# --- run -------------------------------------------------------------------------------------------------------

def have_mosquitto() -> bool:
    binary = shutil.which("mosquitto") or os.path.exists("/usr/sbin/mosquitto")
    return bool(binary) and any(os.path.exists(p) for p in PLUGINS)


async def main(args: argparse.Namespace) -> int:
    if not have_mosquitto():
        print("mosquitto and its dynamic-security plugin are needed (Debian: apt-get install mosquitto)")
        return 2
    progress = Progress()
    print(machine_note(), flush=True)
    async with scratch_database("devices", progress) as database:
        data_dir = Path(tempfile.mkdtemp(prefix="vnh-bench-devices-"))
        settings = bench_settings(database, data_dir, mqtt=MqttSettings(
            username="vnh-service", password=SecretStr(SERVICE_PASSWORD), client_id="bench-vnh-0",
            share_group="benchvnh"))
        rt = Runtime.build(settings)
        try:
            telemetry, sos = await seed(rt, args.devices, args.sos, 20, progress)
            config = await dynsec_for(rt)
            with vnh_mosquitto(config, verbose=False) as broker:
                progress(f"Mosquitto with vnh's configuration on {broker.url}")
                raw = await raw_baseline(broker.url, telemetry, args.events)
                progress(f"raw: {raw['events']:.0f} events in {raw['seconds']:.2f} s = {raw['rate']:.0f}/s")
                # as `vnh serve` and `vnh devices ingest` do once started: start-up objects out of the full GC passes
                gc.collect()
                gc.freeze()
                gateway = CountingGateway(rt, url=broker.url, shared=True)
                await gateway.start()
                await gateway.wait_connected()
                try:
                    ingest = await vnh_ingest(gateway, broker.url, telemetry, args.events, rt)
                    progress(f"vnh: {ingest['events']:.0f} events in {ingest['seconds']:.2f} s = "
                             f"{ingest['rate']:.0f}/s; {ingest['rows']:.0f} rows stored")
                    latency = await sos_latency(gateway, rt, broker.url, telemetry, sos, args.telemetry_rate)
                finally:
                    await gateway.stop()
        finally:
            await rt.close()
            await drop_redis_keys(settings.redis_prefix)
            shutil.rmtree(data_dir, ignore_errors=True)
    ratio = ingest["rate"] / raw["rate"]
    print()
    print(table(["run", "events", "seconds", "events/s"], [
        ["raw paho → Mosquitto → paho (manual ack)", f"{raw['events']:.0f}", f"{raw['seconds']:.2f}",
         f"{raw['rate']:.0f}"],
        ["vnh: Mosquitto → gateway → PostgreSQL", f"{ingest['events']:.0f}", f"{ingest['seconds']:.2f}",
         f"{ingest['rate']:.0f}"],
    ]))
    print(f"\ningest / raw = {ratio:.0%} (goal ≥ 50%); rows stored {ingest['rows']:.0f} of {ingest['events']:.0f}, "
          f"dedup keys {ingest['keys']:.0f}")
    print(f"\nSOS under {latency['telemetry_rate']:.0f} telemetry events/s: {latency['sos']} SOS, "
          f"{latency['alarms']} alarms, {latency['with_order']} with an urgent order, {latency['offers']} offers")
    rows = []
    for name, key in (("publish → alarm + order + offers committed", "committed"),
                      ("publish → first offer on the console stream", "first_offer")):
        s = latency[key]
        if s:
            rows.append([name, str(s["n"]), f"{s['p50']:.1f}", f"{s['p90']:.1f}", f"{s['p99']:.1f}",
                         f"{s['max']:.1f}"])
    print(table(["SOS latency (ms)", "n", "p50", "p90", "p99", "max"], rows))
    g = latency["gc"]
    print(f"\ngarbage collector during the SOS phase: {g['gen2_collections']} full collections (max "
          f"{g['gen2_max_ms']:.1f} ms), {g['gc_total_ms']:.0f} ms in all; {g['sos_during_gen2']} SOS transactions "
          f"overlapped a full collection {g['sos_during_gen2_ms']}")
    print("\nwhere it went (ms)")
    print(table(["stage", "n", "p50", "p90", "p99", "max"], [
        [name, str(s["n"]), f"{s['p50']:.1f}", f"{s['p90']:.1f}", f"{s['p99']:.1f}", f"{s['max']:.1f}"]
        for name, s in latency["stages"].items()]))
    print("\n" + json.dumps({"raw_rate": round(raw["rate"]), "ingest_rate": round(ingest["rate"]),
                             "ratio": round(ratio, 3), "sos": latency}, default=str))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--devices", type=int, default=40)
    parser.add_argument("--telemetry-rate", type=float, default=500.0)
    parser.add_argument("--sos", type=int, default=200)
    raise SystemExit(asyncio.run(main(parser.parse_args())))
