"""Ingest: one handler for every uplink message, whether it came over MQTT (a batch) or HTTP (one).

`ingest_batch` validates each message against protocol v1, deduplicates by (device, event id, payload hash) in the
database, stores accepted events in the month-partitioned `device_events` table with multi-row inserts (unnest
arrays: one statement per batch), tracks each device's `seq` for gaps, applies the status topic, and hands the
new events to the reactions (alarms, orders, rules, command acks). Rejected messages become dead letters with
their reason. It only flushes: the caller commits, and only after the commit may it acknowledge the messages.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from prometheus_client import Counter, Histogram
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncSession

from devices import health, protocol
from devices.models import DeadLetter
from devices.protocol import DeviceEvent, Rejection, StatusReport
from kernel.personal_data import FieldCipher
from kernel.runtime import Runtime

log = logging.getLogger("vnh.devices.ingest")

EVENTS_STORED = Counter("vnh_device_events_total", "Device events stored", ["type", "channel"])
DUPLICATES = Counter("vnh_device_event_duplicates_total", "Device events received again and not stored")
DEAD_LETTERS = Counter("vnh_device_dead_letters_total", "Device messages rejected into the dead-letter table",
                       ["reason"])
SEQ_MISSED = Counter("vnh_device_seq_missed_total", "Events a device numbered but vnh never received (seq gaps)")
CLOCK_SKEW = Counter("vnh_device_clock_skew_total",
                     "Events stored with a device time further than devices.clock_skew_max from their receipt")
BATCH_SECONDS = Histogram("vnh_device_ingest_batch_seconds", "Time to validate and store one ingest batch",
                          buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))

DEAD_LETTER_PAYLOAD_CHARS = 4096
MAX_BIGINT = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Inbound:
    """One uplink message as a channel received it."""

    device_id: str  # from the topic (the broker's ACL binds it to the credentials) or the URL (token checked)
    kind: protocol.Channel  # events | telemetry | status
    payload: bytes
    received_at: datetime
    channel: Literal["mqtt", "http"] = "mqtt"
    topic: str | None = None
    rejection: Rejection | None = None  # refused before parsing (a topic outside the protocol)


@dataclass(frozen=True, slots=True)
class Accepted:
    event_id: str
    type: str
    duplicate: bool


@dataclass(slots=True)
class MessageOutcome:
    accepted: list[Accepted] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    status: StatusReport | None = None
    # the message's device went from offline to online (its status report, or an event over MQTT): what is queued
    # for it may go out now. A retained `{"online": true}` replayed for a device already online is no change.
    came_online: bool = False
    notes: list[str] = field(default_factory=list)  # per accepted event: its note (`clock_skew` …) or ""


@dataclass(slots=True)
class DeviceState:
    """A device of the batch, locked for the batch's transaction."""

    device_id: str
    elder_id: uuid.UUID
    region_code: str
    status: str
    online: bool
    last_seq: int | None
    seq_missed: int
    buttons: dict[str, str]
    # the elder's home cell (~1 km; the exact home is sealed, orders.home): where an alarm without a position of
    # its own is shown
    home: tuple[float, float]
    offline_alarm: bool = False  # an open device_offline alarm, which any event from the device resolves
    battery_out: bool = False  # its low-battery watch is in a low streak (a good reading must reset it)
    seen_at: datetime | None = None
    battery: tuple[datetime, int] | None = None  # (event ts, percent) of the newest event that carried one
    touched: bool = False
    came_online: bool = False  # an event over MQTT from a device vnh held offline: it is connected now
    gaps: list[tuple[int, int]] = field(default_factory=list)  # (seq, events missed before it) seen in this batch


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event stored for the first time, with what the reactions need."""

    device: DeviceState
    event: DeviceEvent
    received_at: datetime
    channel: str


def track_sequence(last_seq: int | None, missed: int, seq: int) -> tuple[int, int, int]:
    """(last_seq, missed, newly missed) after an event numbered `seq` arrives.

    A jump forward counts the numbers skipped; a late arrival of a number counted as missed takes one back; a
    number at or below 1 after higher ones is a device restart (its counter began again). The total saturates at
    the largest bigint (a device jumping to 2^63 - 1 twice must not overflow its own row)."""
    if last_seq is None or seq == last_seq + 1:
        return seq, missed, 0
    if seq > last_seq + 1:
        gap = seq - last_seq - 1
        return seq, min(missed + gap, MAX_BIGINT), gap
    if seq <= 1:
        return seq, missed, 0
    return last_seq, max(0, missed - 1), 0


# the batch statements are parsed once: `text()` scans its SQL for parameters on every construction
_LOCK_DEVICES = text(
    "SELECT d.device_id, d.elder_id, e.region_code, e.coarse_lat, e.coarse_lon, d.status, d.online, d.last_seq, "
    "d.seq_missed, "
    "d.buttons, "
    "EXISTS (SELECT 1 FROM alarms a WHERE a.type = 'device_offline' AND a.open_key = d.device_id "
    "AND a.status <> 'resolved') AS offline_alarm, "
    "EXISTS (SELECT 1 FROM device_rule_watch w WHERE w.elder_id = d.elder_id "
    "AND w.rule = left('battery:' || d.device_id, 80) AND (w.out_since IS NOT NULL OR w.alarmed)) AS battery_out "
    "FROM devices d JOIN elders e ON e.id = d.elder_id WHERE d.device_id = ANY(CAST(:ids AS varchar[])) "
    "ORDER BY d.device_id FOR UPDATE OF d")


async def _lock_devices(session: AsyncSession, device_ids: set[str]) -> dict[str, DeviceState]:
    if not device_ids:
        return {}
    rows = await session.execute(_LOCK_DEVICES, {"ids": sorted(device_ids)})
    return {r.device_id: DeviceState(device_id=r.device_id, elder_id=r.elder_id, region_code=r.region_code,
                                     status=r.status, online=r.online, last_seq=r.last_seq, seq_missed=r.seq_missed,
                                     buttons=dict(r.buttons or {}), home=(r.coarse_lat, r.coarse_lon),
                                     offline_alarm=r.offline_alarm, battery_out=r.battery_out)
            for r in rows}


_INSERT_KEYS = text(
    "WITH ins AS (INSERT INTO device_event_keys (device_id, event_id, payload_hash, received_at) "
    "SELECT * FROM unnest(CAST(:d AS varchar[]), CAST(:e AS varchar[]), CAST(:h AS varchar[]), "
    "CAST(:r AS timestamptz[])) ON CONFLICT DO NOTHING RETURNING device_id, event_id, payload_hash) "
    "SELECT ins.device_id, ins.event_id, ins.payload_hash, EXISTS (SELECT 1 FROM device_event_keys k "
    "WHERE k.device_id = ins.device_id AND k.event_id = ins.event_id AND k.payload_hash <> ins.payload_hash) "
    "FROM ins")


async def _insert_keys(session: AsyncSession, keys: list[tuple[str, str, str]], received: list[datetime]
                       ) -> tuple[set[tuple[str, str, str]], set[tuple[str, str]]]:
    """Insert the batch's keys; answers those that are new, and the (device, event id) among them already known
    with another payload (a device reused an event id) — one round trip."""
    if not keys:
        return set(), set()
    result = await session.execute(_INSERT_KEYS, {"d": [k[0] for k in keys], "e": [k[1] for k in keys],
                                                  "h": [k[2] for k in keys], "r": received})
    inserted, reused = set(), set()
    for device_id, event_id, payload_hash, other in result:
        inserted.add((device_id, event_id, payload_hash))
        if other:
            reused.add((device_id, event_id))
    return inserted, reused


EVENT_COLUMNS = ("received_at", "device_id", "elder_id", "event_id", "type", "ts", "battery", "seq", "health_enc",
                 "channel", "payload_hash", "note")


async def _store_events(session: AsyncSession, cipher: FieldCipher, events: list[NewEvent],
                        notes: dict[tuple[str, str], str]) -> None:
    """Binary COPY into the partitioned table, in the batch's transaction (the keys already made them unique).
    `value`, `lat` and `lon` go in sealed (`devices.health`); their plaintext columns stay NULL."""
    if not events:
        return
    records = [(item.received_at, item.device.device_id, item.device.elder_id, item.event.event_id, item.event.type,
                item.event.ts, item.event.battery, item.event.seq,
                health.seal(cipher, item.event.value, item.event.lat, item.event.lon),
                item.channel, item.event.payload_hash, notes.get((item.device.device_id, item.event.event_id)))
               for item in events]
    connection = await session.connection()
    raw = (await connection.get_raw_connection()).driver_connection
    assert raw is not None
    await raw.copy_records_to_table("device_events", records=records, columns=EVENT_COLUMNS)


_UPDATE_DEVICES = text(
    "UPDATE devices AS d SET last_seen_at = GREATEST(d.last_seen_at, u.seen), "
    "battery = COALESCE(u.battery, d.battery), last_seq = u.last_seq, seq_missed = u.missed, "
    "online = d.online OR u.came_online, status_at = CASE WHEN u.came_online AND NOT d.online THEN u.seen "
    "ELSE d.status_at END "
    "FROM unnest(CAST(:d AS varchar[]), CAST(:seen AS timestamptz[]), CAST(:b AS smallint[]), "
    "CAST(:s AS bigint[]), CAST(:m AS bigint[]), CAST(:o AS boolean[])) "
    "AS u(device_id, seen, battery, last_seq, missed, came_online) "
    "WHERE d.device_id = u.device_id")


async def _update_devices(session: AsyncSession, devices: list[DeviceState]) -> None:
    touched = [d for d in devices if d.touched]
    if not touched:
        return
    await session.execute(_UPDATE_DEVICES, {
        "d": [x.device_id for x in touched], "seen": [x.seen_at for x in touched],
        "b": [x.battery[1] if x.battery else None for x in touched], "s": [x.last_seq for x in touched],
        "m": [x.seq_missed for x in touched], "o": [x.came_online for x in touched]})


def _printable(text_: str | None, limit: int) -> str | None:
    """A claimed id or topic as it can be stored: control characters and lone surrogates replaced (PostgreSQL text
    takes no NUL, UTF-8 no surrogate)."""
    return None if not text_ else protocol.CONTROL_OR_SURROGATE.sub("\ufffd", text_[:limit])


def dead_letter_row(message: Inbound, rejection: Rejection, region_code: str | None) -> dict[str, object]:
    return {
        "received_at": message.received_at, "channel": message.channel,
        "topic": _printable(message.topic, 300),
        "device_id": _printable(message.device_id, 64), "region_code": region_code,
        "reason": rejection.reason, "detail": _printable(rejection.detail, 500) or "-",
        "payload": message.payload[:DEAD_LETTER_PAYLOAD_CHARS].decode("utf-8", errors="replace")
        .replace("\x00", "\ufffd"),
        "payload_size": len(message.payload),
    }


async def store_dead_letters(session: AsyncSession, rows: list[dict[str, object]]) -> None:
    if rows:
        await session.execute(insert(DeadLetter), rows)
        for row in rows:
            DEAD_LETTERS.labels(str(row["reason"])).inc()


async def ingest_batch(session: AsyncSession, rt: Runtime, messages: Sequence[Inbound], *,
                       give_way: Callable[[set[str]], Awaitable[None]] | None = None) -> list[MessageOutcome]:
    """Validate, deduplicate, store and react to a batch of uplink messages; one outcome per message.

    `give_way(device ids)` is awaited between phases (before the devices are locked, and before the reactions,
    when only this batch's device rows are locked): the gateway passes one to telemetry batches so that an SOS
    arriving meanwhile is stored first. Flushes only: the caller commits, then acknowledges."""
    from devices import reactions

    with BATCH_SECONDS.time():
        max_bytes = rt.settings.devices.max_payload_bytes
        parsed = [[m.rejection] if m.rejection else protocol.parse_message(m.kind, m.payload, max_bytes)
                  for m in messages]
        device_ids = {m.device_id for m in messages if m.rejection is None}
        if give_way is not None:
            await give_way(device_ids)
        devices = await _lock_devices(session, device_ids)
        outcomes = [MessageOutcome() for _ in messages]
        dead: list[dict[str, object]] = []
        candidates: list[tuple[int, DeviceState, DeviceEvent]] = []
        statuses: list[tuple[int, tuple[DeviceState, StatusReport, datetime]]] = []

        for index, (message, result) in enumerate(zip(messages, parsed, strict=True)):
            device = devices.get(message.device_id)
            outcome = outcomes[index]
            refusal = None
            if message.kind == "status" and not message.payload and message.rejection is None:
                continue  # a retained status being cleared: nothing was said
            if message.rejection is not None:
                refusal = message.rejection
            elif device is None:
                refusal = Rejection("unknown_device", f"no device {message.device_id!r} is registered")
            elif device.status != "active":
                refusal = Rejection("device_revoked", f"device {message.device_id!r} is revoked")
            if refusal is not None:
                outcome.rejected.append(refusal)
                dead.append(dead_letter_row(message, refusal, device.region_code if device else None))
                continue
            assert device is not None
            if isinstance(result, StatusReport):
                outcome.status = result
                statuses.append((index, (device, result, message.received_at)))
                continue
            for item in result:
                if isinstance(item, Rejection):
                    outcome.rejected.append(item)
                    dead.append(dead_letter_row(message, item, device.region_code))
                else:
                    candidates.append((index, device, item))

        # deduplicate inside the batch first (a redelivery may sit beside its original), then against the table
        first_seen: dict[tuple[str, str, str], int] = {}
        for position, (_index, device, event) in enumerate(candidates):
            first_seen.setdefault((device.device_id, event.event_id, event.payload_hash), position)
        unique_keys = list(first_seen)
        inserted, reused = await _insert_keys(
            session, unique_keys, [messages[candidates[first_seen[k]][0]].received_at for k in unique_keys])
        notes = {key: "event_id_reused" for key in reused}
        if reused:
            log.warning("devices reused event ids with other payloads: %s", sorted(reused)[:10])

        skew_limit = rt.settings.devices.clock_skew_max
        new_events: list[NewEvent] = []
        for position, (index, device, event) in enumerate(candidates):
            key = (device.device_id, event.event_id, event.payload_hash)
            duplicate = key not in inserted or first_seen[key] != position
            message = messages[index]
            note = ""
            if protocol.clock_skewed(event.ts, message.received_at, skew_limit):
                note = protocol.CLOCK_SKEW_NOTE
            outcomes[index].accepted.append(Accepted(event.event_id, event.type, duplicate))
            outcomes[index].notes.append(note)
            if duplicate:
                DUPLICATES.inc()
                continue
            if note:
                CLOCK_SKEW.inc()
                dedup_key = (device.device_id, event.event_id)
                notes[dedup_key] = ",".join(filter(None, (notes.get(dedup_key), note)))
            new_events.append(NewEvent(device, event, message.received_at, message.channel))
            device.touched = True
            device.seen_at = max(device.seen_at or message.received_at, message.received_at)
            if message.channel == "mqtt" and not device.online:
                # it published over its own MQTT connection: it is connected now, whether or not it ever reported
                # {"online": true} (devices behind a gateway never do)
                device.online = device.came_online = True
                outcomes[index].came_online = True
            if event.battery is not None and (device.battery is None or event.ts >= device.battery[0]):
                device.battery = (event.ts, event.battery)
            if event.seq is not None:
                device.last_seq, device.seq_missed, gap = track_sequence(device.last_seq, device.seq_missed,
                                                                         event.seq)
                if gap:
                    SEQ_MISSED.inc(gap)
                    device.gaps.append((event.seq, gap))
                    log.warning("device %s skipped %d event(s) before seq %d", device.device_id, gap, event.seq)

        await _store_events(session, rt.cipher, new_events, notes)
        await _update_devices(session, list(devices.values()))
        await store_dead_letters(session, dead)
        stored: dict[tuple[str, str], int] = {}
        for new in new_events:
            stored[(new.event.type, new.channel)] = stored.get((new.event.type, new.channel), 0) + 1
        for (kind, channel), number in stored.items():
            EVENTS_STORED.labels(kind, channel).inc(number)
        if give_way is not None:
            await give_way(device_ids)  # now, not later: after the reactions this batch may hold elders' rows
        for device in devices.values():
            if device.came_online:
                reactions.announce_online(session, rt, device)
        for index, (device, status, received_at) in statuses:
            if await reactions.apply_status(session, rt, device, status, received_at) and status.online:
                outcomes[index].came_online = True
        await reactions.react(session, rt, new_events)
    return outcomes
