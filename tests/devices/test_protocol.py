"""Protocol v1 validation (pure): every event type, and any bad message becomes a rejection with a known reason,
never an exception."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices import protocol
from devices.ingest import track_sequence
from devices.models import DEAD_LETTER_REASONS
from devices.protocol import DeviceEvent, Rejection, StatusReport

TS = "2026-03-02T09:00:00+08:00"

VALID: dict[str, dict[str, Any]] = {
    "sos": {},
    "fall": {"value": {"confidence": 0.93}},
    "call": {"value": {"button": "A"}},
    "heart_rate": {"value": {"bpm": 72}},
    "spo2": {"value": {"percent": 97}},
    "location": {"lat": 39.86, "lon": 108.74},
    "heartbeat": {},
    "confirm": {"value": {"visit_id": "v-1"}},
    "cancel": {"value": {"event_id": "e-sos"}},
    "command_ack": {"value": {"command_id": "c-1"}},
}


def event(kind: str, **extra: Any) -> dict[str, Any]:
    return {"event_id": f"e-{kind}", "type": kind, "ts": TS, **VALID[kind], **extra}


@pytest.mark.parametrize("kind", sorted(VALID))
def test_every_event_type_of_protocol_v1_parses(kind: str) -> None:
    parsed = protocol.parse_event(event(kind, battery=80, seq=7))
    assert isinstance(parsed, DeviceEvent), parsed
    assert parsed.type == kind and parsed.battery == 80 and parsed.seq == 7
    assert parsed.ts.utcoffset() is not None


def test_unknown_optional_fields_are_tolerated_and_change_the_hash() -> None:
    plain = protocol.parse_event(event("heartbeat"))
    extended = protocol.parse_event(event("heartbeat", firmware="1.2"))
    assert isinstance(plain, DeviceEvent) and isinstance(extended, DeviceEvent)
    assert plain.payload_hash != extended.payload_hash


def test_the_hash_does_not_depend_on_key_order() -> None:
    a = protocol.parse_event({"event_id": "x", "type": "sos", "ts": TS})
    b = protocol.parse_event({"ts": TS, "type": "sos", "event_id": "x"})
    assert isinstance(a, DeviceEvent) and isinstance(b, DeviceEvent) and a.payload_hash == b.payload_hash


def test_gcj02_positions_are_stored_as_wgs84() -> None:
    parsed = protocol.parse_event(event("location", lat=39.8584, lon=108.7363, crs="gcj02"))
    assert isinstance(parsed, DeviceEvent) and parsed.lat is not None and parsed.lon is not None
    assert parsed.lat != 39.8584 and abs(parsed.lat - 39.8584) < 0.01 and abs(parsed.lon - 108.7363) < 0.01


@pytest.mark.parametrize(("obj", "reason"), [
    ([], "not_an_object"),
    ("sos", "not_an_object"),
    ({"type": "sos", "ts": TS}, "missing_field"),
    ({"event_id": "x", "ts": TS}, "missing_field"),
    ({"event_id": "x", "type": "sos"}, "missing_field"),
    ({"event_id": "", "type": "sos", "ts": TS}, "invalid_event_id"),
    ({"event_id": "x" * 65, "type": "sos", "ts": TS}, "invalid_event_id"),
    ({"event_id": 7, "type": "sos", "ts": TS}, "invalid_event_id"),
    ({"event_id": "a\x00b", "type": "sos", "ts": TS}, "invalid_event_id"),
    ({"event_id": "a\nb", "type": "sos", "ts": TS}, "invalid_event_id"),
    ({"event_id": "a\x85b", "type": "sos", "ts": TS}, "invalid_event_id"),
    ({"event_id": "a\ud800", "type": "sos", "ts": TS}, "invalid_event_id"),
    ({"event_id": "x", "type": "sos", "ts": "0001-01-01T00:00:00+08:00"}, "invalid_ts"),
    ({"event_id": "x", "type": "sos", "ts": "9999-12-31T23:59:59-12:00"}, "invalid_ts"),
    ({"event_id": "x", "type": "cancel", "ts": TS, "value": {"event_id": "s\x00"}}, "invalid_field"),
    ({"event_id": "x", "type": "call", "ts": TS, "value": {"button": "1\x00"}}, "invalid_field"),
    ({"event_id": "x", "type": "explode", "ts": TS}, "unknown_type"),
    ({"event_id": "x", "type": "sos", "ts": "2026-03-02T09:00:00"}, "invalid_ts"),
    ({"event_id": "x", "type": "sos", "ts": 1772412000}, "invalid_ts"),
    ({"event_id": "x", "type": "sos", "ts": "2026-02-30T09:00:00Z"}, "invalid_ts"),
    ({"event_id": "x", "type": "sos", "ts": TS, "lat": 91, "lon": 0}, "invalid_field"),
    ({"event_id": "x", "type": "sos", "ts": TS, "lat": 39.0}, "missing_field"),
    ({"event_id": "x", "type": "sos", "ts": TS, "lat": True, "lon": 1}, "invalid_field"),
    ({"event_id": "x", "type": "sos", "ts": TS, "lat": 1, "lon": 1, "crs": "mars"}, "invalid_field"),
    ({"event_id": "x", "type": "sos", "ts": TS, "battery": 101}, "invalid_field"),
    ({"event_id": "x", "type": "sos", "ts": TS, "battery": 50.5}, "invalid_field"),
    ({"event_id": "x", "type": "sos", "ts": TS, "seq": -1}, "invalid_field"),
    ({"event_id": "x", "type": "location", "ts": TS}, "missing_field"),
    ({"event_id": "x", "type": "call", "ts": TS}, "missing_field"),
    ({"event_id": "x", "type": "call", "ts": TS, "value": {"button": ""}}, "invalid_field"),
    ({"event_id": "x", "type": "heart_rate", "ts": TS, "value": {"bpm": "72"}}, "invalid_field"),
    ({"event_id": "x", "type": "heart_rate", "ts": TS, "value": {}}, "missing_field"),
    ({"event_id": "x", "type": "spo2", "ts": TS, "value": {"percent": 101}}, "invalid_field"),
    ({"event_id": "x", "type": "fall", "ts": TS, "value": {"confidence": 2}}, "invalid_field"),
    ({"event_id": "x", "type": "cancel", "ts": TS, "value": {"event_id": 3}}, "invalid_field"),
    ({"event_id": "x", "type": "command_ack", "ts": TS, "value": []}, "invalid_field"),
])
def test_bad_events_are_rejected_with_a_reason(obj: Any, reason: str) -> None:
    parsed = protocol.parse_event(obj)
    assert isinstance(parsed, Rejection) and parsed.reason == reason, parsed


@pytest.mark.parametrize(("payload", "reason"), [
    (b"\xff\xfe{}", "not_utf8"),
    (b"{not json", "invalid_json"),
    (b'{"event_id": NaN}', "invalid_json"),
    (b"[" * 100_000, "payload_too_large"),
    (b"", "invalid_json"),
    (b'{"event_id": "x", "type": "sos", "ts": "2026-03-02T09:00:00Z", "note": "\\ud800"}', "invalid_json"),
])
def test_bad_payloads_are_rejected_with_a_reason(payload: bytes, reason: str) -> None:
    result = protocol.parse_message("events", payload, 65_536)
    assert isinstance(result, list) and isinstance(result[0], Rejection) and result[0].reason == reason


def test_the_telemetry_topic_takes_batches_of_telemetry_only_and_keeps_the_good_items() -> None:
    batch = {"events": [event("heart_rate"), event("sos"), {"event_id": "y"}, event("location")]}
    result = protocol.parse_message("telemetry", json.dumps(batch).encode(), 65_536)
    assert isinstance(result, list)
    kinds = [r.type if isinstance(r, DeviceEvent) else r.reason for r in result]
    assert kinds == ["heart_rate", "type_not_allowed_here", "missing_field", "location"]


def test_status_reports() -> None:
    assert protocol.parse_message("status", b'{"online": false}', 100) == StatusReport(online=False)
    result = protocol.parse_message("status", b'{"online": "yes"}', 100)
    assert isinstance(result, list) and isinstance(result[0], Rejection)


@pytest.mark.parametrize(("topic", "expected"), [
    ("vnh/v1/devices/btn-1/events", ("btn-1", "events")),
    ("vnh/v1/devices/btn-1/status", ("btn-1", "status")),
    ("vnh/v1/devices/btn-1/commands", "unknown_topic"),
    ("vnh/v1/devices/a/b/events", "unknown_topic"),
    ("other/btn-1/events", "unknown_topic"),
])
def test_topics(topic: str, expected: Any) -> None:
    parsed = protocol.parse_topic(topic)
    assert (parsed.reason if isinstance(parsed, Rejection) else parsed) == expected


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)
field_values = st.one_of(json_values, st.sampled_from([TS, "sos", "fall", "call", "heart_rate", 72, 39.8, -200]))
mangled_events = st.builds(
    lambda base, changes, drops: {**{k: v for k, v in base.items() if k not in drops}, **changes},
    st.sampled_from(sorted(VALID)).map(event),
    st.dictionaries(st.sampled_from(["event_id", "type", "ts", "lat", "lon", "crs", "battery", "seq", "value"]),
                    field_values, max_size=3),
    st.sets(st.sampled_from(["event_id", "type", "ts", "value", "lat", "lon"]), max_size=2),
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(json_values, mangled_events), st.sampled_from(["events", "telemetry", "status"]))
def test_any_message_either_parses_or_is_rejected_with_a_known_reason(obj: Any, channel: str) -> None:
    payload = json.dumps(obj).encode()
    result = protocol.parse_message(channel, payload, 65_536)  # type: ignore[arg-type]
    items = [result] if isinstance(result, StatusReport) else result
    for item in items:
        if isinstance(item, Rejection):
            assert item.reason in DEAD_LETTER_REASONS and item.detail
        elif isinstance(item, DeviceEvent):
            assert 1 <= len(item.event_id) <= 64 and item.type in protocol.EVENT_TYPES
            assert item.ts.utcoffset() is not None


@given(st.binary(max_size=200))
def test_any_bytes_either_parse_or_are_rejected(payload: bytes) -> None:
    result = protocol.parse_message("events", payload, 65_536)
    assert isinstance(result, list) and len(result) == 1


@given(st.lists(st.integers(min_value=2, max_value=60), min_size=1, max_size=40, unique=True))
def test_seq_tracking_counts_exactly_the_numbers_never_received(received: list[int]) -> None:
    """Events 1..max arrive in order except that some never come: the missed count is exactly those."""
    last, missed = None, 0
    for seq in [1, *sorted(received)]:
        last, missed, _gap = track_sequence(last, missed, seq)
    assert last == max(received)
    assert missed == max(received) - 1 - len(received)


def test_seq_tracking_late_arrival_and_restart() -> None:
    last, missed, gap = track_sequence(5, 0, 8)
    assert (last, missed, gap) == (8, 2, 2)
    assert track_sequence(8, 2, 6) == (8, 1, 0)  # one of the missing arrived late
    assert track_sequence(8, 1, 1) == (1, 1, 0)  # the device restarted its counter


# --- times and ids at the edge (issue 13): whatever a device sends, a parsed event is storable -------------------

rfc3339_times = st.builds(
    lambda y, mo, d, h, mi, s, sign, oh, om, frac: f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}{frac}"
                                                    f"{'Z' if sign == 'Z' else f'{sign}{oh:02d}:{om:02d}'}",
    st.sampled_from([1, 2, 1970, 2000, 2026, 9998, 9999]) | st.integers(0, 9999), st.integers(0, 13),
    st.integers(0, 32), st.integers(0, 24), st.integers(0, 60), st.integers(0, 60), st.sampled_from("+-Z"),
    st.integers(0, 99), st.integers(0, 99), st.sampled_from(["", ".5", ".123456789"]),
)
event_ids = st.one_of(
    st.text(min_size=0, max_size=70),
    st.text(alphabet=st.characters(codec=None, categories=("Cc", "Cs", "Zl", "Zs", "Lo")), max_size=70),
    st.builds(lambda a, c, b: a + c + b, st.text(max_size=30), st.sampled_from(["\x00", "\n", "\x7f", "\x9f",
                                                                                "\ud800", "\udfff"]),
              st.text(max_size=30)),
    st.integers(), st.none(),
)


@settings(max_examples=600, deadline=None)
@given(rfc3339_times, event_ids, st.sampled_from(["sos", "heartbeat", "cancel", "call"]), st.booleans())
def test_any_time_or_event_id_parses_into_a_storable_event_or_a_typed_rejection(
        ts: str, event_id: Any, kind: str, ascii_only: bool) -> None:
    obj = {**event(kind), "event_id": event_id, "ts": ts}
    payload = json.dumps(obj, ensure_ascii=ascii_only, allow_nan=False).encode("utf-8", "surrogatepass")
    [result] = protocol.parse_message("events", payload, 65_536)  # type: ignore[misc]
    if isinstance(result, Rejection):
        assert result.reason in DEAD_LETTER_REASONS and result.detail
        return
    assert isinstance(result, DeviceEvent)
    assert 1 <= len(result.event_id) <= 64 and protocol.CONTROL_OR_SURROGATE.search(result.event_id) is None
    result.event_id.encode("utf-8")  # what PostgreSQL receives
    assert 1 <= result.ts.astimezone(protocol.UTC).year <= 9999  # asyncpg converts to UTC before sending


def test_a_time_in_year_one_at_plus_eight_is_a_typed_rejection_not_an_overflow() -> None:
    parsed = protocol.parse_event(event("sos", ts="0001-01-01T00:00:00+08:00"))
    assert isinstance(parsed, Rejection) and parsed.reason == "invalid_ts"
    fine = protocol.parse_event(event("sos", ts="0001-01-01T00:00:00Z"))  # storable: kept, noted by the ingest
    assert isinstance(fine, DeviceEvent)


def test_clock_skew_is_measured_either_way() -> None:
    from datetime import UTC, datetime, timedelta

    received = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
    limit = timedelta(hours=1)
    assert not protocol.clock_skewed(received - timedelta(minutes=59), received, limit)
    assert protocol.clock_skewed(received - timedelta(minutes=61), received, limit)
    assert protocol.clock_skewed(received + timedelta(minutes=61), received, limit)
    assert protocol.clock_skewed(datetime(1, 1, 2, tzinfo=UTC), received, limit)
