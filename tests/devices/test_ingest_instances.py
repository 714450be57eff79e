"""Two ingest instances in one share group, in their own OS processes (`vnh devices ingest`), on a Mosquitto of the
test's own with vnh's configuration: one is SIGKILLed mid-stream and restarted with the same client id. Every event
is stored exactly once and none is lost; while the instance is dead its share waits in the broker, and the member
list (Redis heartbeat → `/readyz`, `vnh_mqtt_ingest_member_missing`) says which member is missing.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from prometheus_client import REGISTRY
from sqlalchemy import text

from devices import membership
from devices.cli import export_mosquitto_acl
from devices.protocol import topic_for
from devices.simulator import DeviceClient
from kernel.mqtt_probe import parse_mqtt_url
from kernel.runtime import Runtime
from tests.conftest import settings_env
from tests.devices.conftest import Broker, GatewayFactory, eventually
from tests.devices.mosquitto import dynsec_init, vnh_mosquitto
from tests.factories import create_elder, register_device

SERVICE_PASSWORD = "service-secret-for-tests"
TOTAL = 2000
CONTROLS = 4
RATE = 400.0  # events/s: the stream lasts ~5 s, the kill lands after its first quarter


async def stored(rt: Runtime, device_ids: list[str]) -> tuple[int, int]:
    """(rows, distinct (device, event id)) of these devices' stored events."""
    async with rt.database.unit_of_work() as s:
        row = (await s.execute(text(
            "select count(*), count(distinct (device_id, event_id)) from device_events "
            "where device_id = any(:ids)"), {"ids": device_ids})).one()
    return int(row[0]), int(row[1])


def start_ingest(env: dict[str, str], client_id: str, group: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "vnh.cli", "devices", "ingest", "--client-id", client_id, "--share-group", group,
             "--heartbeat-s", "0.3", "--missing-after-s", "1.5"], env=env, stdout=out, stderr=subprocess.STDOUT)


def gauge(name: str, client_id: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"client_id": client_id})


async def member_view(rt: Runtime, group: str) -> dict[str, bool]:
    return {m.client_id: m.missing for m in await membership.members(rt, group, missing_after_s=1.5)}


async def test_a_killed_ingest_instance_loses_nothing_and_stores_nothing_twice(
        committed_runtime: Runtime, tmp_path: Path) -> None:
    rt = committed_runtime
    elder = await create_elder(rt)
    credentials = [await register_device(rt, elder, kind="wristband") for _ in range(4)]
    device_ids = [d for d, _ in credentials]
    base = tmp_path / "base.json"
    await asyncio.to_thread(dynsec_init, base, "admin-secret")
    exported = tmp_path / "dynsec.json"
    assert await export_mosquitto_acl(rt, output=exported, merge=base, service_username="vnh-service",
                                      service_password=SERVICE_PASSWORD) == []
    group = f"t{uuid.uuid4().hex[:8]}"
    a_id, b_id = f"ingest-{group}-0", f"ingest-{group}-1"

    with vnh_mosquitto(json.loads(exported.read_text()), verbose=False, log_subscriptions=True) as mosquitto:
        address = parse_mqtt_url(mosquitto.url)
        env = {**settings_env(rt.settings), "MQTT_URL": mosquitto.url, "VNH_MQTT__USERNAME": "vnh-service",
               "VNH_MQTT__PASSWORD": SERVICE_PASSWORD, "VNH_MQTT__SHARED_SUBSCRIPTION": "true"}
        logs = {a_id: tmp_path / "a.log", b_id: tmp_path / "b.log"}
        procs = {cid: start_ingest(env, cid, group, logs[cid]) for cid in (a_id, b_id)}
        devices = [DeviceClient(address, d, token) for d, token in credentials]
        try:
            await eventually(lambda: _both_present(rt, group, a_id, b_id), timeout=60,
                             what="both ingest instances connected and reporting")
            # their SUBSCRIBEs are sent before the first heartbeat: wait until the broker has taken both

            async def both_subscribed() -> bool:
                taken = mosquitto.log()
                return all(f" {cid} 1 $share/{group}/" in taken for cid in (a_id, b_id))

            await eventually(both_subscribed, timeout=30, what="both shared subscriptions taken by the broker")
            for device in devices:
                await asyncio.to_thread(device.connect, report_online=False)

            published: list[tuple[str, str]] = []
            infos: list[mqtt.MQTTMessageInfo] = []
            done = threading.Event()

            def stream() -> None:
                start = time.monotonic()
                for i in range(TOTAL):
                    device = devices[i % len(devices)]
                    event_id = f"ev-{i:05d}"
                    body = device.event("heart_rate", {"bpm": 60 + i % 40}, event_id=event_id)
                    infos.append(device.publish(topic_for(device.device_id, "events"), body, wait=False))
                    published.append((device.device_id, event_id))
                    delay = start + (i + 1) / RATE - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                done.set()

            publisher = threading.Thread(target=stream, name="device-stream")
            publisher.start()
            # both instances take their share; B is killed while the stream still flows

            async def under_way() -> bool:
                return len(published) >= TOTAL // 4 and await _at_least(rt, device_ids, 100)

            await eventually(under_way, timeout=30, what="a quarter published and the first events stored")
            assert not done.is_set(), "the stream ended before the kill: not mid-stream"
            procs[b_id].send_signal(signal.SIGKILL)
            await asyncio.to_thread(procs[b_id].wait, 10)
            killed_at = len(published)
            await asyncio.to_thread(publisher.join, 60)
            for info in infos:
                await asyncio.to_thread(info.wait_for_publish, 10)  # the broker has every event (PUBACK)
            assert killed_at < TOTAL and len(published) == TOTAL

            # B's share of what came after the kill waits in the broker for B's session: not stored yet. Controls
            # sent after the stream are shared round robin too; once A has stored one, A has stored its whole share
            # of the stream before it (one connection, in order)
            controls = await send_controls(devices[0], "while-dead", published)
            await eventually(lambda: _any_stored(rt, devices[0].device_id, controls), timeout=30,
                             what="a control event stored by A")
            rows_while_dead, distinct_while_dead = await stored(rt, device_ids)
            assert rows_while_dead == distinct_while_dead
            assert rows_while_dead < len(published), "nothing waited for the dead member: the group was not split"
            # ... and the member list says which instance is missing (B), the live one (A) is not
            view = await eventually(lambda: _missing(rt, group, b_id), timeout=10, what="B reported missing")
            assert view == {a_id: False, b_id: True}
            assert gauge("vnh_mqtt_ingest_member_missing", b_id) == 1.0
            assert gauge("vnh_mqtt_ingest_member_missing", a_id) == 0.0
            assert (gauge("vnh_mqtt_ingest_member_age_seconds", b_id) or 0.0) > 1.5

            # B comes back with the same client id: its session's queue is delivered, redeliveries are duplicates
            procs[b_id] = start_ingest(env, b_id, group, logs[b_id])
            await eventually(lambda: _all_stored(rt, device_ids, len(published)), timeout=60,
                             what="every event stored")
            # anything still arriving would be a second row: controls shared round robin after B's queue (with its
            # redeliveries) reach both members after it; once all are stored, so would a duplicate be
            controls = await send_controls(devices[0], "after-restart", published)
            await eventually(lambda: _all_stored(rt, device_ids, len(published)), timeout=30,
                             what="the controls after the restart stored")
            rows, distinct = await stored(rt, device_ids)
            assert (rows, distinct) == (len(published), len(published))
            async with rt.database.unit_of_work() as s:
                ids = {(r.device_id, r.event_id) for r in (await s.execute(text(
                    "select device_id, event_id from device_events where device_id = any(:ids)"),
                    {"ids": device_ids})).all()}
                dead = await s.scalar(text("select count(*) from device_dead_letters where device_id = any(:ids)"),
                                      {"ids": device_ids})
            assert ids == set(published)
            assert dead == 0
            await eventually(lambda: _present(rt, group, b_id), timeout=10, what="B reported present again")
            print(f"\n{TOTAL} events, B killed after {killed_at} published; {rows_while_dead} stored while B was "
                  f"dead; all {rows} stored once after its restart")
        finally:
            for device in devices:
                await asyncio.to_thread(device.close, report_offline=False)
            for proc in procs.values():
                if proc.poll() is None:
                    proc.terminate()
            for proc in procs.values():
                try:
                    await asyncio.to_thread(proc.wait, 15)
                except subprocess.TimeoutExpired:
                    proc.kill()
            await membership.forget(rt, group, a_id)
            await membership.forget(rt, group, b_id)
        for cid in (a_id, b_id):
            text_log = logs[cid].read_text(errors="replace")
            assert "Traceback" not in text_log, text_log[-3000:]


async def _both_present(rt: Runtime, group: str, a: str, b: str) -> bool:
    return await member_view(rt, group) == {a: False, b: False}


async def _present(rt: Runtime, group: str, member: str) -> bool:
    return (await member_view(rt, group)).get(member) is False


async def _missing(rt: Runtime, group: str, member: str) -> dict[str, bool] | None:
    view = await member_view(rt, group)
    return view if view.get(member) else None


async def _at_least(rt: Runtime, device_ids: list[str], n: int) -> bool:
    return (await stored(rt, device_ids))[0] >= n


async def _all_stored(rt: Runtime, device_ids: list[str], total: int) -> bool:
    return (await stored(rt, device_ids))[1] >= total


async def _any_stored(rt: Runtime, device_id: str, event_ids: list[str]) -> bool:
    async with rt.database.unit_of_work() as s:
        return bool(await s.scalar(text("select count(*) from device_events where device_id = :d "
                                        "and event_id = any(:e)"), {"d": device_id, "e": event_ids}))


async def send_controls(device: DeviceClient, tag: str, published: list[tuple[str, str]]) -> list[str]:
    """Four events after everything else (acknowledged by the broker): a round robin over two members gives each
    member some."""
    ids = [f"ctl-{tag}-{k}" for k in range(CONTROLS)]
    for event_id in ids:
        await asyncio.to_thread(device.send, "heart_rate", {"bpm": 70}, event_id=event_id)
        published.append((device.device_id, event_id))
    return ids


async def test_readiness_lists_a_member_of_the_share_group_that_went_quiet(
        committed_runtime: Runtime, machine_mqtt: str, gateways: GatewayFactory) -> None:
    """A gateway reports the members of its share group in `/readyz`; one whose last heartbeat is old is listed as
    missing (here a member that last reported a minute ago), the gateway itself is not."""
    rt = committed_runtime
    gateway = await gateways(Broker(machine_mqtt, shared=True))
    gateway.member_missing_after_s = 2.0
    quiet = f"{gateway.client_id}-quiet"
    await rt.redis.hset(membership.members_key(rt, gateway.share_group), quiet, f"{time.time() - 60:.3f}")
    try:
        gateway._beat_now.set()

        async def readiness() -> Any:
            answer = await rt.readiness["mqtt_ingest"]()
            return answer if quiet in answer["members"] else None

        answer = await eventually(readiness, timeout=10, what="the quiet member listed")
        assert answer["ok"] is True
        assert answer["members_missing"] == [quiet]
        assert set(answer["members"]) == {gateway.client_id, quiet}
        assert gauge("vnh_mqtt_ingest_member_missing", quiet) == 1.0
        assert gauge("vnh_mqtt_ingest_member_missing", gateway.client_id) == 0.0
    finally:
        await membership.forget(rt, gateway.share_group, quiet)
        await membership.forget(rt, gateway.share_group, gateway.client_id)
