"""Device protocol v1 (shared/spec/device-protocol.md): topics and message validation. Pure: no I/O.

Every message either parses into `DeviceEvent`s (or a `StatusReport`) or is a `Rejection` whose `reason` is one of
the dead-letter reasons; nothing in here raises on bad input. Unknown optional fields are tolerated (the protocol
allows additions as new optional fields); unknown event types are not.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from kernel.geo import to_wgs84

TOPIC_PREFIX = "vnh/v1/devices/"
Channel = Literal["events", "telemetry", "status", "commands"]
UPLINK_CHANNELS: tuple[Channel, ...] = ("events", "telemetry", "status")
DEVICE_ID = re.compile(r"^[A-Za-z0-9_.:-]{3,64}$")
# RFC 3339 with a mandatory offset ("Z" or ±hh:mm); fractional seconds allowed
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")

# C0 and C1 control characters (NUL among them: PostgreSQL text cannot hold it) and lone UTF-16 surrogates (a JSON
# escape such as "\\ud800" decodes to one; no UTF-8 encoder takes it): never in an id vnh stores or looks up
CONTROL_OR_SURROGATE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")
CLOCK_SKEW_NOTE = "clock_skew"

EVENT_TYPES = frozenset({"sos", "fall", "call", "heart_rate", "spo2", "location", "heartbeat", "confirm", "cancel",
                         "command_ack"})
TELEMETRY_TYPES = frozenset({"heart_rate", "spo2", "location", "heartbeat"})
# handled at once, ahead of telemetry batching (decisions §5)
URGENT_TYPES = frozenset({"sos", "fall", "cancel", "call"})
MAX_TELEMETRY_BATCH = 1000


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    event_id: str
    type: str
    ts: datetime
    lat: float | None  # WGS-84, converted from `crs` when the device sent GCJ-02 or BD-09
    lon: float | None
    battery: int | None
    seq: int | None
    value: dict[str, Any] | None
    payload_hash: str  # of the event object as sent (canonical JSON): a repeat with another hash is a new event


@dataclass(frozen=True, slots=True)
class StatusReport:
    online: bool


def topic_for(device_id: str, channel: Channel) -> str:
    return f"{TOPIC_PREFIX}{device_id}/{channel}"


def parse_topic(topic: str) -> tuple[str, Channel] | Rejection:
    """`vnh/v1/devices/{device_id}/{events|telemetry|status}` → (device_id, channel)."""
    if not topic.startswith(TOPIC_PREFIX):
        return Rejection("unknown_topic", "not under vnh/v1/devices/")
    rest = topic[len(TOPIC_PREFIX):].split("/")
    if len(rest) != 2 or rest[1] not in UPLINK_CHANNELS:
        return Rejection("unknown_topic", "expected vnh/v1/devices/{device_id}/events|telemetry|status")
    if not DEVICE_ID.match(rest[0]):
        return Rejection("unknown_topic", "the device id in the topic is not a valid device id")
    return rest[0], rest[1]


def payload_hash(obj: dict[str, Any]) -> str:
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def decode_json(payload: bytes, max_bytes: int) -> Any | Rejection:
    if len(payload) > max_bytes:
        return Rejection("payload_too_large", f"{len(payload)} bytes; at most {max_bytes}")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection("not_utf8", f"not UTF-8 at byte {exc.start}")
    try:
        obj = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        return Rejection("invalid_json", str(exc)[:200])
    if ESCAPED_SURROGATE.search(text):  # an escaped surrogate pair is one character; a lone one is no text at all
        try:
            json.dumps(obj, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            return Rejection("invalid_json", "a \\u escape of a lone UTF-16 surrogate is not Unicode text")
    return obj


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _bad(field: str, why: str) -> Rejection:
    return Rejection("invalid_field", f"{field}: {why}")


def _value_of(kind: str, value: Any) -> dict[str, Any] | Rejection | None:
    """The type-specific `value`, checked; `None` where the type carries none."""
    if kind in ("sos", "heartbeat", "location"):
        if value is None or value == {}:
            return None
        if not isinstance(value, dict):
            return _bad("value", "must be an object")
        return value  # tolerated: additions are optional fields
    if kind in ("fall", "confirm") and value is None:
        return None
    if kind == "fall":
        if not isinstance(value, dict):
            return _bad("value", "must be an object")
        confidence = value.get("confidence")
        if confidence is not None and not (_is_number(confidence) and 0 <= confidence <= 1):
            return _bad("value.confidence", "a number from 0 to 1")
        return value
    if not isinstance(value, dict):
        return Rejection("missing_field", "value") if value is None else _bad("value", "must be an object")
    if kind == "call":
        return _string_field(value, "button", 32, required=True)
    if kind == "heart_rate":
        bpm = value.get("bpm")
        if bpm is None:
            return Rejection("missing_field", "value.bpm")
        if not (_is_int(bpm) and 0 <= bpm <= 300):
            return _bad("value.bpm", "an integer from 0 to 300")
        return value
    if kind == "spo2":
        percent = value.get("percent")
        if percent is None:
            return Rejection("missing_field", "value.percent")
        if not (_is_int(percent) and 0 <= percent <= 100):
            return _bad("value.percent", "an integer from 0 to 100")
        return value
    if kind == "confirm":
        return _string_field(value, "visit_id", 64, required=False)
    if kind == "cancel":
        return _string_field(value, "event_id", 64, required=True)
    if kind == "command_ack":
        return _string_field(value, "command_id", 64, required=True)
    raise AssertionError(kind)


def _string_field(value: dict[str, Any], name: str, max_len: int, *, required: bool) -> dict[str, Any] | Rejection:
    item = value.get(name)
    if item is None:
        return Rejection("missing_field", f"value.{name}") if required else value
    if not isinstance(item, str) or not 1 <= len(item) <= max_len:
        return _bad(f"value.{name}", f"a string of 1-{max_len} characters")
    if CONTROL_OR_SURROGATE.search(item):
        return _bad(f"value.{name}", "no control characters")
    return value


def parse_timestamp(value: Any) -> datetime | Rejection:
    """An RFC 3339 time with offset that PostgreSQL can store (in UTC within the years 1-9999: `0001-01-01T00:00
    +08:00` is in year 0 in UTC, which neither Python nor asyncpg represents). Anything else is `invalid_ts`."""
    if not isinstance(value, str) or not RFC3339.match(value):
        return Rejection("invalid_ts", "an RFC 3339 time with offset, e.g. 2026-03-02T09:00:00+08:00")
    try:
        parsed = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        return Rejection("invalid_ts", "not a valid date and time")
    if parsed.tzinfo is None:  # the pattern requires an offset; belt and braces
        return Rejection("invalid_ts", "needs a UTC offset")
    try:
        parsed.astimezone(UTC)
    except OverflowError:
        return Rejection("invalid_ts", "outside the years 1-9999 once taken to UTC")
    return parsed


def clock_skewed(ts: datetime, received_at: datetime, limit: timedelta) -> bool:
    """Whether the device's time is further than `limit` from when vnh received the event (either way): the event
    is stored, noted `clock_skew`; response times count from `received_at` anyway."""
    return abs(ts - received_at) > limit


def _event_id_problem(event_id: Any) -> str | None:
    if not isinstance(event_id, str) or not 1 <= len(event_id) <= 64:
        return "a string of 1-64 characters"
    if CONTROL_OR_SURROGATE.search(event_id):
        return "no control characters (NUL, newline …)"
    return None


def parse_event(obj: Any, *, telemetry_only: bool = False) -> DeviceEvent | Rejection:
    """One event object of protocol v1."""
    if not isinstance(obj, dict):
        return Rejection("not_an_object", f"expected a JSON object, got {type(obj).__name__}")
    for field in ("event_id", "type", "ts"):
        if field not in obj or obj[field] is None:
            return Rejection("missing_field", field)
    event_id = obj["event_id"]
    problem = _event_id_problem(event_id)
    if problem is not None:
        return Rejection("invalid_event_id", f"event_id: {problem}")
    kind = obj["type"]
    if not isinstance(kind, str):
        return _bad("type", "a string")
    if kind not in EVENT_TYPES:
        return Rejection("unknown_type", f"type {kind[:40]!r} is not in protocol v1")
    if telemetry_only and kind not in TELEMETRY_TYPES:
        return Rejection("type_not_allowed_here", f"{kind} is not telemetry; publish it on .../events")
    ts = parse_timestamp(obj["ts"])
    if isinstance(ts, Rejection):
        return ts
    position = _position(obj)
    if isinstance(position, Rejection):
        return position
    lat, lon = position
    if kind == "location" and lat is None:
        return Rejection("missing_field", "lat, lon")
    battery = obj.get("battery")
    if battery is not None and not (_is_int(battery) and 0 <= battery <= 100):
        return _bad("battery", "an integer from 0 to 100")
    seq = obj.get("seq")
    if seq is not None and not (_is_int(seq) and 0 <= seq < 2**63):
        return _bad("seq", "a non-negative integer")
    value = _value_of(kind, obj.get("value"))
    if isinstance(value, Rejection):
        return value
    return DeviceEvent(event_id=event_id, type=kind, ts=ts, lat=lat, lon=lon, battery=battery, seq=seq,
                       value=value, payload_hash=payload_hash(obj))


def _position(obj: dict[str, Any]) -> tuple[float | None, float | None] | Rejection:
    lat, lon, crs = obj.get("lat"), obj.get("lon"), obj.get("crs")
    if lat is None and lon is None:
        if crs is not None:
            return _bad("crs", "given without lat and lon")
        return None, None
    if lat is None or lon is None:
        return Rejection("missing_field", "lon" if lon is None else "lat")
    if not (_is_number(lat) and -90 <= lat <= 90):
        return _bad("lat", "a number from -90 to 90")
    if not (_is_number(lon) and -180 <= lon <= 180):
        return _bad("lon", "a number from -180 to 180")
    if crs is None or crs == "wgs84":
        return float(lat), float(lon)
    if crs not in ("gcj02", "bd09"):
        return _bad("crs", "wgs84, gcj02 or bd09")
    return to_wgs84(float(lat), float(lon), crs)


def parse_events_message(obj: Any) -> list[DeviceEvent | Rejection]:
    """A message on `.../events`: one event object."""
    return [parse_event(obj)]


def parse_telemetry_message(obj: Any) -> list[DeviceEvent | Rejection]:
    """A message on `.../telemetry`: `{"events": [...]}`, telemetry types only. Each bad item is rejected on its
    own; the good ones are kept."""
    if not isinstance(obj, dict):
        return [Rejection("not_an_object", f"expected a JSON object, got {type(obj).__name__}")]
    events = obj.get("events")
    if events is None:
        return [Rejection("missing_field", "events")]
    if not isinstance(events, list) or not events:
        return [_bad("events", "a non-empty array of events")]
    if len(events) > MAX_TELEMETRY_BATCH:
        return [_bad("events", f"at most {MAX_TELEMETRY_BATCH} events per message")]
    out: list[DeviceEvent | Rejection] = []
    for index, item in enumerate(events):
        parsed = parse_event(item, telemetry_only=True)
        out.append(Rejection(parsed.reason, f"events[{index}]: {parsed.detail}")
                   if isinstance(parsed, Rejection) else parsed)
    return out


def parse_status(obj: Any) -> StatusReport | Rejection:
    if not isinstance(obj, dict):
        return Rejection("not_an_object", f"expected a JSON object, got {type(obj).__name__}")
    online = obj.get("online")
    if online is None:
        return Rejection("missing_field", "online")
    if not isinstance(online, bool):
        return _bad("online", "true or false")
    return StatusReport(online=online)


def parse_message(channel: Channel, payload: bytes, max_bytes: int) -> list[DeviceEvent | Rejection] | StatusReport:
    """A whole uplink message: events (one or a telemetry batch), a status report, or rejections.

    An empty message on the status topic is how MQTT removes a retained message (a device decommissioned, a test
    cleaning up): it is nothing to store or reject."""
    if channel == "status" and not payload:
        return []
    obj = decode_json(payload, max_bytes)
    if isinstance(obj, Rejection):
        return [obj]
    if channel == "status":
        status = parse_status(obj)
        return [status] if isinstance(status, Rejection) else status
    if channel == "telemetry":
        return parse_telemetry_message(obj)
    return parse_events_message(obj)
