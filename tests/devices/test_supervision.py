"""Heartbeat supervision, vital-sign and safe-zone rules, escalation of unacknowledged alarms — all on the
controllable clock (`ManualClock`), so offline detection and escalation timing are exact, not slept for."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select, text

from devices import rules
from devices.escalation import escalate_due
from devices.liveness import next_offline_due, raise_offline_alarms
from devices.models import Alarm, AlarmNotification, DeviceCommand
from devices.notifier import WebhookNotifier, send_pending
from kernel.clock import ManualClock
from kernel.runtime import Runtime
from orders.models import Elder
from tests.conftest import login_headers
from tests.factories import (
    HANGGIN,
    XINI_TOWN,
    create_caregiver,
    create_elder,
    create_organization,
    offset,
    on_duty,
    register_device,
)


def clock_of(rt: Runtime) -> ManualClock:
    assert isinstance(rt.clock, ManualClock)
    return rt.clock


class Wristband:
    def __init__(self, rt: Runtime, client: httpx.AsyncClient, elder: Elder, device_id: str, token: str) -> None:
        self.rt, self.client, self.elder, self.device_id, self.token = rt, client, elder, device_id, token
        self.n = 0

    async def send(self, kind: str, value: dict[str, Any] | None = None, *, at: datetime | None = None,
                   **fields: Any) -> None:
        self.n += 1
        body: dict[str, Any] = {"event_id": f"{kind}-{self.n}", "type": kind,
                                "ts": (at or self.rt.clock.now()).isoformat(), **fields}
        if value is not None:
            body["value"] = value
        response = await self.client.post(f"/v1/devices/{self.device_id}/events", json=body,
                                          headers={"Authorization": f"Bearer {self.token}"})
        assert response.status_code == 202, response.text

    async def alarms(self, **where: Any) -> list[Alarm]:
        async with self.rt.database.unit_of_work() as s:
            query = select(Alarm).where(Alarm.elder_id == self.elder.id).order_by(Alarm.raised_at)
            for name, value in where.items():
                query = query.where(getattr(Alarm, name) == value)
            return list((await s.scalars(query)).all())


@pytest.fixture
async def band(runtime: Runtime, client: httpx.AsyncClient) -> Wristband:
    elder = await create_elder(runtime, lat=XINI_TOWN[0], lon=XINI_TOWN[1])
    device_id, token = await register_device(runtime, elder, kind="wristband")
    return Wristband(runtime, client, elder, device_id, token)


async def monitor(client: httpx.AsyncClient, rt: Runtime, elder: Elder, body: dict[str, Any]) -> dict[str, Any]:
    dispatcher = await login_headers(rt, "dispatcher", region_code=HANGGIN)
    response = await client.put(f"/v1/elders/{elder.id}/monitoring", json=body, headers=dispatcher)
    assert response.status_code == 200, response.text
    return dict(response.json())


# --- heartbeat supervision -------------------------------------------------------------------------------------

async def test_a_silent_device_raises_one_offline_alarm_and_its_return_clears_it(band: Wristband) -> None:
    clock = clock_of(band.rt)
    await monitor(band.client, band.rt, band.elder, {"heartbeat_s": 60})
    await band.send("heartbeat")
    clock.advance(180)  # 3 intervals: not yet "longer than"
    assert await raise_offline_alarms(band.rt) == 0
    clock.advance(1)
    assert await raise_offline_alarms(band.rt) == 1
    for _ in range(5):  # later checks find the alarm open: still one
        clock.advance(60)
        assert await raise_offline_alarms(band.rt) == 0
    [alarm] = await band.alarms(type="device_offline")
    assert alarm.status == "open" and alarm.count == 1 and alarm.open_key == band.device_id
    assert alarm.details["interval_s"] == 60 and alarm.severity == "warning"
    await band.send("heartbeat")
    [cleared] = await band.alarms(type="device_offline")
    assert cleared.status == "resolved" and cleared.acknowledged_at is None and cleared.outcome == "other"


async def test_devices_never_seen_are_not_supervised(band: Wristband) -> None:
    clock_of(band.rt).advance(timedelta(days=3))
    assert await raise_offline_alarms(band.rt) == 0


async def test_the_default_interval_applies_without_monitoring_settings(band: Wristband) -> None:
    await band.send("heartbeat")
    default = band.rt.settings.devices.heartbeat_s * band.rt.settings.devices.offline_after_intervals
    clock_of(band.rt).advance(default - 1)
    assert await raise_offline_alarms(band.rt) == 0
    clock_of(band.rt).advance(2)
    assert await raise_offline_alarms(band.rt) == 1


def loss_runs(lost: list[bool]) -> list[int]:
    """Lengths of the runs of consecutive lost heartbeats."""
    runs, current = [], 0
    for gone in [*lost, False]:
        if gone:
            current += 1
        elif current:
            runs.append(current)
            current = 0
    return runs


async def test_two_lost_heartbeats_in_a_row_never_alarm_and_a_third_does_at_three_intervals(band: Wristband) -> None:
    clock = clock_of(band.rt)
    await monitor(band.client, band.rt, band.elder, {"heartbeat_s": 60})
    await band.send("heartbeat")
    last = clock.now()
    assert await next_offline_due(band.rt) == last + timedelta(seconds=180)  # when supervision wakes next
    for _ in range(30):  # two heartbeats lost (at 60 s and 120 s), checked every 2 s; the third arrives at 180 s
        clock.advance(6)
        assert await raise_offline_alarms(band.rt) == 0
    await band.send("heartbeat")
    last = clock.now()
    raised_at = None
    while raised_at is None:  # a real outage: nothing more comes
        clock.advance(1)
        if await raise_offline_alarms(band.rt):
            raised_at = clock.now()
    assert (raised_at - last) / timedelta(seconds=60) == pytest.approx(3.0, abs=0.02)


@pytest.mark.parametrize("seed", [13, 7])
async def test_twenty_percent_random_heartbeat_loss_alarms_only_for_runs_of_three(band: Wristband, seed: int) -> None:
    """Seeded loss of 20% of heartbeats, the checker every 0.1 interval (the longest period allowed; `supervise`
    wakes at each device's deadline instead): one alarm per run of ≥3 lost heartbeats, none for runs of 1 or 2, each
    within [2.7, 3.3] intervals of the last heartbeat heard."""
    clock = clock_of(band.rt)
    interval = 60
    await monitor(band.client, band.rt, band.elder, {"heartbeat_s": interval})
    rng = random.Random(seed)
    lost = [rng.random() < 0.2 for _ in range(200)]
    runs = loss_runs(lost)
    assert runs.count(2) >= 3, runs  # the seed gives pairs of lost heartbeats, the case that alarmed falsely
    await band.send("heartbeat")
    last_heard = clock.now()
    ratios: list[float] = []
    for gone in lost:
        for _step in range(10):
            clock.advance(interval / 10)
            if _step == 9 and not gone:
                await band.send("heartbeat")
                last_heard = clock.now()
            if await raise_offline_alarms(band.rt):
                ratios.append((clock.now() - last_heard) / timedelta(seconds=interval))
    expected = sum(1 for run in runs if run >= 3)
    assert len(ratios) == expected, (runs, ratios)
    assert all(2.7 <= r <= 3.3 for r in ratios), ratios
    alarms = await band.alarms(type="device_offline")
    assert len(alarms) == expected and all(a.status == "resolved" for a in alarms)  # each cleared by a heartbeat
    print(f"\nseed {seed}: {len(lost)} heartbeats, {sum(lost)} lost, runs {sorted(runs)}, alarms at {ratios}")


async def test_the_supervision_loop_wakes_for_the_next_deadline_and_raises_the_alarm(
        committed_runtime: Runtime) -> None:
    """`supervise` (what the workers run) raises the alarm once the clock passes 3 intervals; it sleeps at most
    `supervision_interval_s` (here short: the ManualClock moves by hand, not by itself)."""
    import asyncio

    from devices.ingest import Inbound, ingest_batch
    from devices.liveness import supervise
    from tests.devices.conftest import eventually

    rt = committed_runtime
    clock = clock_of(rt)
    elder = await create_elder(rt)
    device_id, _token = await register_device(rt, elder, kind="wristband")
    async with rt.database.unit_of_work() as s:
        await s.execute(text("update devices set heartbeat_s = 10 where device_id = :d"), {"d": device_id})
        body = json.dumps({"event_id": "hb", "type": "heartbeat", "ts": clock.now().isoformat()}).encode()
        await ingest_batch(s, rt, [Inbound(device_id, "events", body, clock.now(), channel="http")])
    assert await next_offline_due(rt) is not None
    rt.settings.devices.supervision_interval_s = 0.05
    stop = asyncio.Event()
    task = asyncio.create_task(supervise(rt, stop))

    async def raised() -> bool:
        async with rt.database.unit_of_work() as s:
            return bool(await s.scalar(text("select count(*) from alarms where type = 'device_offline' "
                                            "and open_key = :d"), {"d": device_id}))

    try:
        clock.advance(30.5)
        await eventually(raised, timeout=10, what="offline alarm from the supervision loop")
    finally:
        stop.set()
        await task


# --- vital signs, safe zone, battery -----------------------------------------------------------------------------

async def test_heart_rate_out_of_range_for_the_duration_raises_one_warning(band: Wristband) -> None:
    await monitor(band.client, band.rt, band.elder, {"heart_rate": {"min": 50, "max": 110, "for_s": 60}})
    start = band.rt.clock.now()
    await band.send("heart_rate", {"bpm": 130}, at=start)
    await band.send("heart_rate", {"bpm": 135}, at=start + timedelta(seconds=30))
    assert await band.alarms() == []
    await band.send("heart_rate", {"bpm": 128}, at=start + timedelta(seconds=61))
    await band.send("heart_rate", {"bpm": 140}, at=start + timedelta(seconds=90))  # same streak: no second alarm
    [alarm] = await band.alarms()
    assert alarm.type == "heart_rate" and alarm.severity == "warning" and alarm.count == 1
    assert alarm.details["bpm"] == 128 and alarm.details["max"] == 110 and alarm.order_id is None


async def test_a_reading_back_in_range_restarts_the_duration(band: Wristband) -> None:
    await monitor(band.client, band.rt, band.elder, {"spo2": {"min": 92, "for_s": 120}})
    start = band.rt.clock.now()
    await band.send("spo2", {"percent": 88}, at=start)
    await band.send("spo2", {"percent": 95}, at=start + timedelta(seconds=100))
    await band.send("spo2", {"percent": 89}, at=start + timedelta(seconds=130))
    await band.send("spo2", {"percent": 90}, at=start + timedelta(seconds=200))
    assert await band.alarms() == []
    await band.send("spo2", {"percent": 90}, at=start + timedelta(seconds=251))
    assert [a.type for a in await band.alarms()] == ["spo2"]


async def test_leaving_a_circular_safe_zone_raises_a_warning(band: Wristband) -> None:
    await monitor(band.client, band.rt, band.elder, {"safe_zone": {
        "type": "circle", "center": {"lat": XINI_TOWN[0], "lon": XINI_TOWN[1]}, "radius_m": 500}})
    inside = offset(*XINI_TOWN, north_m=300)
    outside = offset(*XINI_TOWN, north_m=800)
    await band.send("location", lat=inside[0], lon=inside[1])
    assert await band.alarms() == []
    await band.send("location", lat=outside[0], lon=outside[1])
    [alarm] = await band.alarms()
    assert alarm.type == "geofence" and alarm.severity == "warning"


async def test_a_polygon_safe_zone_and_gcj02_positions(band: Wristband) -> None:
    from kernel.geo import from_wgs84

    corners = [offset(*XINI_TOWN, north_m=n, east_m=e) for n, e in ((-400, -400), (-400, 400), (400, 400),
                                                                      (400, -400))]
    settings = await monitor(band.client, band.rt, band.elder, {"safe_zone": {
        "type": "polygon", "points": [{"lat": a, "lon": b} for a, b in corners]}})
    assert settings["safe_zone"]["type"] == "polygon" and len(settings["safe_zone"]["points"]) == 4
    lat, lon = from_wgs84(*offset(*XINI_TOWN, east_m=300), "gcj02")  # inside, as a Chinese map service gives it
    await band.send("location", lat=lat, lon=lon, crs="gcj02")
    assert await band.alarms() == []
    lat, lon = from_wgs84(*offset(*XINI_TOWN, east_m=600), "gcj02")
    await band.send("location", lat=lat, lon=lon, crs="gcj02")
    assert [a.type for a in await band.alarms()] == ["geofence"]


async def test_a_self_crossing_polygon_is_refused(band: Wristband) -> None:
    dispatcher = await login_headers(band.rt, "dispatcher", region_code=HANGGIN)
    bow_tie = [{"lat": 0, "lon": 0}, {"lat": 1, "lon": 1}, {"lat": 0, "lon": 1}, {"lat": 1, "lon": 0}]
    response = await band.client.put(f"/v1/elders/{band.elder.id}/monitoring", headers=dispatcher,
                                     json={"safe_zone": {"type": "polygon", "points": bow_tie}})
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_safe_zone"


async def test_low_battery_raises_an_info_alarm_that_does_not_escalate(band: Wristband) -> None:
    await band.send("heartbeat", battery=40)
    await band.send("heartbeat", battery=12)
    await band.send("heartbeat", battery=11)
    [alarm] = await band.alarms()
    assert alarm.type == "low_battery" and alarm.severity == "info" and alarm.next_escalation_at is None


async def test_a_good_battery_reading_ends_the_low_streak_and_the_next_low_one_alarms_again(band: Wristband) -> None:
    """Readings above the threshold skip the watch query unless the device is in a low streak: the first good one
    after a streak must still reset it, or the next low reading would be taken for the same streak."""

    async def watch() -> tuple[object, object]:
        async with band.rt.database.unit_of_work() as s:
            row = (await s.execute(text(
                "SELECT out_since, alarmed FROM device_rule_watch WHERE elder_id = :e AND rule = :r"),
                {"e": band.elder.id, "r": f"battery:{band.device_id}"})).first()
        return (row.out_since, row.alarmed) if row is not None else (None, None)

    await band.send("heartbeat", battery=80)
    assert await watch() == (None, None)  # nothing to remember about a good battery
    await band.send("heartbeat", battery=12)
    assert (await watch())[1] is True
    await band.send("heartbeat", battery=85)
    assert await watch() == (None, False)
    await band.send("heartbeat", battery=90)
    await band.send("heartbeat", battery=9)
    [alarm] = await band.alarms(type="low_battery")
    assert alarm.count == 2  # a second streak, folded into the alarm still open


async def test_monitoring_settings_reach_the_devices_as_a_config_command(band: Wristband) -> None:
    await monitor(band.client, band.rt, band.elder, {"heartbeat_s": 120})
    async with band.rt.database.unit_of_work() as s:
        command = await s.scalar(select(DeviceCommand).where(DeviceCommand.device_id == band.device_id))
    assert command is not None and command.type == "config" and command.body["heartbeat_s"] == 120


T0 = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)


@given(st.lists(st.tuples(st.integers(0, 600), st.booleans()), min_size=1, max_size=30),
       st.integers(0, 300))
def test_a_rule_fires_once_per_streak_exactly_when_the_duration_is_reached(readings: list[tuple[int, bool]],
                                                                             for_s: int) -> None:
    """Against a brute-force reference: replay in time order; a streak of out-readings fires at its first reading
    at least `for_s` after the streak's start, once."""
    ordered = sorted(readings, key=lambda r: r[0])
    watch = None
    fired = []
    for second, out in ordered:
        watch, fire = rules.step(watch, out, T0 + timedelta(seconds=second), for_s)
        fired.append(fire)
    expected = []
    start: int | None = None
    done = False
    for second, out in ordered:
        if not out:
            start, done = None, False
            expected.append(False)
            continue
        start = second if start is None else start
        hit = not done and second - start >= for_s
        done = done or hit
        expected.append(hit)
    assert fired == expected


# --- escalation ------------------------------------------------------------------------------------------------

class Webhook:
    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.fail_next = 0


@pytest.fixture
def webhook() -> Iterator[tuple[Webhook, str]]:
    """A real HTTP server on a free port standing in for an SMS gateway."""
    state = Webhook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if state.fail_next:
                state.fail_next -= 1
                self.send_response(503)
            else:
                state.received.append(json.loads(body))
                state.headers.append(dict(self.headers))
                self.send_response(204)
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state, f"http://127.0.0.1:{server.server_address[1]}/notices"
    server.shutdown()


async def test_an_unacknowledged_sos_escalates_every_minute_until_acknowledged(
        band: Wristband, webhook: tuple[Webhook, str]) -> None:
    state, url = webhook
    rt, clock = band.rt, clock_of(band.rt)
    organization = await create_organization(rt)
    for metres in (200, 400, 600, 800, 1000, 1200, 1400):
        await on_duty(rt, await create_caregiver(rt, organization), *offset(*XINI_TOWN, east_m=metres))
    await band.send("sos")
    [alarm] = await band.alarms()
    assert alarm.next_escalation_at == alarm.received_at + timedelta(seconds=60)
    clock.advance(59)
    assert await escalate_due(rt) == 0
    clock.advance(1)
    assert await escalate_due(rt) == 1
    async with rt.database.unit_of_work() as s:
        offers = await s.scalar(text("select count(*) from offers where order_id = :o"), {"o": alarm.order_id})
        notices = (await s.scalars(select(AlarmNotification))).all()
    assert offers == 6  # three more responders at the first level
    assert [(n.level, n.status) for n in notices] == [(1, "pending")]
    notifier = WebhookNotifier(url, secret="s3cret")
    state.fail_next = 1
    assert await send_pending(rt, notifier) == 0  # the gateway answered 503: retried later
    clock.advance(5)
    assert await send_pending(rt, notifier) == 1
    [notice] = state.received
    assert notice["alarm_id"] == str(alarm.id) and notice["level"] == 1
    assert notice["contacts"][0]["phone"].startswith("+86139") and "紧急呼叫" in notice["text"]
    assert state.headers[0]["X-VNH-Signature"].startswith("sha256=")
    clock.advance(60)
    assert await escalate_due(rt) == 1
    dispatcher = await login_headers(rt, "dispatcher", region_code=HANGGIN)
    assert (await band.client.post(f"/v1/alarms/{alarm.id}/ack", headers=dispatcher)).status_code == 200
    clock.advance(600)
    assert await escalate_due(rt) == 0
    [done] = await band.alarms()
    assert done.escalation_level == 2 and done.next_escalation_at is None
    await notifier.aclose()


async def test_escalation_stops_at_the_top_of_the_ladder(band: Wristband) -> None:
    rt, clock = band.rt, clock_of(band.rt)
    await band.send("fall")
    for _ in range(rt.settings.devices.escalation_max_level + 3):
        clock.advance(60)
        await escalate_due(rt)
    [alarm] = await band.alarms()
    assert alarm.escalation_level == rt.settings.devices.escalation_max_level and alarm.next_escalation_at is None


async def test_without_a_notifier_the_notice_is_marked_failed_not_lost(band: Wristband) -> None:
    await band.send("sos")
    clock_of(band.rt).advance(61)
    await escalate_due(band.rt)
    assert await send_pending(band.rt, None) == 0
    async with band.rt.database.unit_of_work() as s:
        [notice] = (await s.scalars(select(AlarmNotification))).all()
    assert notice.status == "failed" and "no notifier" in (notice.last_error or "")
