"""`POST /v1/devices/{id}/events`: the HTTP alternative, with the same validation, deduplication and dead letters."""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from devices.models import DEAD_LETTER_REASONS
from kernel.runtime import Runtime
from tests.factories import create_elder, register_device

TS = "2026-03-02T09:00:00+08:00"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def scalar(rt: Runtime, sql: str, **params: Any) -> Any:
    async with rt.database.unit_of_work() as s:
        return await s.scalar(text(sql), params)


@pytest.fixture
async def device(runtime: Runtime) -> tuple[str, str]:
    elder = await create_elder(runtime)
    return await register_device(runtime, elder, kind="wristband")


async def test_an_event_is_stored_once_and_a_repeat_answers_duplicate(client: httpx.AsyncClient, runtime: Runtime,
                                                                      device: tuple[str, str]) -> None:
    device_id, token = device
    body = {"event_id": "hb-1", "type": "heartbeat", "ts": TS, "battery": 77, "seq": 1}
    first = await client.post(f"/v1/devices/{device_id}/events", json=body, headers=bearer(token))
    assert first.status_code == 202, first.text
    assert first.json() == {"event_id": "hb-1", "duplicate": False}
    again = await client.post(f"/v1/devices/{device_id}/events", json=body, headers=bearer(token))
    assert again.status_code == 202 and again.json() == {"event_id": "hb-1", "duplicate": True}
    assert await scalar(runtime, "select count(*) from device_events where device_id = :d", d=device_id) == 1
    row = await scalar(runtime, "select battery || '/' || coalesce(last_seq, -1) from devices where device_id = :d",
                       d=device_id)
    assert row == "77/1"


async def test_every_event_type_is_accepted_over_http(client: httpx.AsyncClient, runtime: Runtime,
                                                      device: tuple[str, str]) -> None:
    device_id, token = device
    bodies = [
        {"type": "heartbeat"}, {"type": "heart_rate", "value": {"bpm": 70}}, {"type": "spo2", "value": {"percent": 98}},
        {"type": "location", "lat": 39.86, "lon": 108.73}, {"type": "command_ack", "value": {"command_id": "c"}},
        {"type": "confirm"}, {"type": "call", "value": {"button": "1"}}, {"type": "fall"}, {"type": "sos"},
        {"type": "cancel", "value": {"event_id": "e-sos"}},
    ]
    for index, body in enumerate(bodies):
        response = await client.post(f"/v1/devices/{device_id}/events", headers=bearer(token),
                                     json={"event_id": f"e-{body['type']}", "ts": TS, "seq": index + 1, **body})
        assert response.status_code == 202, (body, response.text)
    stored = await scalar(runtime, "select count(distinct type) from device_events where device_id = :d", d=device_id)
    assert stored == len(bodies)


async def test_the_same_event_id_with_another_payload_is_a_new_event_and_noted(
        client: httpx.AsyncClient, runtime: Runtime, device: tuple[str, str]) -> None:
    device_id, token = device
    url = f"/v1/devices/{device_id}/events"
    first = {"event_id": "r-1", "type": "heart_rate", "ts": TS, "value": {"bpm": 70}}
    second = {**first, "value": {"bpm": 150}}
    assert (await client.post(url, json=first, headers=bearer(token))).json()["duplicate"] is False
    assert (await client.post(url, json=second, headers=bearer(token))).json()["duplicate"] is False
    assert (await client.post(url, json=second, headers=bearer(token))).json()["duplicate"] is True
    notes = await scalar(runtime, "select string_agg(coalesce(note, '-'), ',' order by id) from device_events "
                                  "where device_id = :d", d=device_id)
    assert notes == "-,event_id_reused"


@pytest.mark.parametrize(("body", "reason"), [
    (b"{not json", "invalid_json"),
    (b'["sos"]', "not_an_object"),
    (b'{"type": "sos", "ts": "2026-03-02T09:00:00Z"}', "missing_field"),
    (b'{"event_id": "x", "type": "teleport", "ts": "2026-03-02T09:00:00Z"}', "unknown_type"),
    (b'{"event_id": "x", "type": "sos", "ts": "yesterday"}', "invalid_ts"),
    (b'\xff\xfe', "not_utf8"),
])
async def test_invalid_events_answer_422_and_are_dead_lettered(client: httpx.AsyncClient, runtime: Runtime,
                                                               device: tuple[str, str], body: bytes,
                                                               reason: str) -> None:
    device_id, token = device
    response = await client.post(f"/v1/devices/{device_id}/events", content=body,
                                 headers={**bearer(token), "Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_event"
    assert response.json()["error"]["details"]["reason"] == reason
    stored = await scalar(runtime, "select reason from device_dead_letters where device_id = :d", d=device_id)
    assert stored == reason
    assert await scalar(runtime, "select count(*) from device_events where device_id = :d", d=device_id) == 0


async def test_another_devices_token_is_refused_and_dead_lettered(client: httpx.AsyncClient, runtime: Runtime,
                                                                  device: tuple[str, str]) -> None:
    victim, _victim_token = device
    elder = await create_elder(runtime)
    _intruder, intruder_token = await register_device(runtime, elder)
    response = await client.post(f"/v1/devices/{victim}/events", headers=bearer(intruder_token),
                                 json={"event_id": "x", "type": "sos", "ts": TS})
    assert response.status_code == 403 and response.json()["error"]["code"] == "device_mismatch"
    assert await scalar(runtime, "select reason from device_dead_letters where device_id = :d", d=victim) == \
        "topic_mismatch"
    assert await scalar(runtime, "select count(*) from device_events where device_id = :d", d=victim) == 0


async def test_wrong_missing_or_revoked_tokens_are_refused(client: httpx.AsyncClient, runtime: Runtime,
                                                           device: tuple[str, str],
                                                           admin_headers: dict[str, str]) -> None:
    device_id, token = device
    body = {"event_id": "x", "type": "heartbeat", "ts": TS}
    url = f"/v1/devices/{device_id}/events"
    assert (await client.post(url, json=body)).status_code == 401
    assert (await client.post(url, json=body, headers=bearer("not-the-token"))).status_code == 401
    assert (await client.post("/v1/devices/nobody-here/events", json=body, headers=bearer(token))).status_code == 403
    assert (await client.post(f"/v1/devices/{device_id}/revoke", headers=admin_headers)).status_code == 200
    refused = await client.post(url, json=body, headers=bearer(token))
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_device_token"


async def test_seq_gaps_are_counted_on_the_device(client: httpx.AsyncClient, runtime: Runtime,
                                                  device: tuple[str, str]) -> None:
    device_id, token = device
    for seq in (1, 2, 5, 6, 9):
        response = await client.post(f"/v1/devices/{device_id}/events", headers=bearer(token),
                                     json={"event_id": f"s{seq}", "type": "heartbeat", "ts": TS, "seq": seq})
        assert response.status_code == 202
    assert await scalar(runtime, "select seq_missed from devices where device_id = :d", d=device_id) == 4


async def test_seq_gaps_show_on_the_device_and_raise_one_data_lost_alarm(
        client: httpx.AsyncClient, runtime: Runtime, device: tuple[str, str], admin_headers: dict[str, str]) -> None:
    device_id, token = device
    for seq in (1, 2, 5, 6, 9):
        response = await client.post(f"/v1/devices/{device_id}/events", headers=bearer(token),
                                     json={"event_id": f"s{seq}", "type": "heartbeat", "ts": TS, "seq": seq})
        assert response.status_code == 202
    shown = (await client.get(f"/v1/devices/{device_id}", headers=admin_headers)).json()
    assert (shown["last_seq"], shown["seq_missed"]) == (9, 4)
    [alarm] = (await client.get("/v1/alarms", params={"type": "data_lost"}, headers=admin_headers)).json()["items"]
    assert (alarm["device_id"], alarm["count"], alarm["details"]["missed"]) == (device_id, 2, 4)


async def test_events_land_in_their_months_partition(client: httpx.AsyncClient, runtime: Runtime,
                                                     device: tuple[str, str]) -> None:
    from devices.partitions import ensure_partitions

    device_id, token = device
    async with runtime.database.unit_of_work() as s:
        created = await ensure_partitions(s, runtime.clock.now())
    assert "device_events_2026_03" in created or created == []
    response = await client.post(f"/v1/devices/{device_id}/events", headers=bearer(token),
                                 json={"event_id": "p1", "type": "heart_rate", "ts": TS, "value": {"bpm": 61}})
    assert response.status_code == 202
    table = await scalar(runtime, "select tableoid::regclass::text from device_events where device_id = :d",
                         d=device_id)
    assert table == "device_events_2026_03"


async def test_stored_events_and_dead_letters_are_listed_in_scope(client: httpx.AsyncClient, runtime: Runtime,
                                                                  device: tuple[str, str],
                                                                  admin_headers: dict[str, str]) -> None:
    from tests.conftest import login_headers
    from tests.factories import HANGGIN

    device_id, token = device
    for i in range(3):
        await client.post(f"/v1/devices/{device_id}/events", headers=bearer(token),
                          json={"event_id": f"l{i}", "type": "heart_rate", "ts": TS, "value": {"bpm": 60 + i}})
    await client.post(f"/v1/devices/{device_id}/events", headers=bearer(token), content=b"garbage")
    page = await client.get(f"/v1/devices/{device_id}/events?limit=2&type=heart_rate", headers=admin_headers)
    assert page.status_code == 200, page.text
    assert [e["event_id"] for e in page.json()["items"]] == ["l2", "l1"] and page.json()["next_cursor"]
    rest = await client.get(f"/v1/devices/{device_id}/events?limit=2&cursor={page.json()['next_cursor']}",
                            headers=admin_headers)
    assert [e["event_id"] for e in rest.json()["items"]] == ["l0"] and rest.json()["next_cursor"] is None
    dispatcher = await login_headers(runtime, "dispatcher", region_code=HANGGIN)
    letters = await client.get("/v1/dead-letters", headers=dispatcher)
    assert [d["reason"] for d in letters.json()["items"]] == ["invalid_json"]
    elsewhere = await login_headers(runtime, "dispatcher", region_code="654002")
    assert (await client.get("/v1/dead-letters", headers=elsewhere)).json()["items"] == []


# --- times and ids at the edge (issue 13) ------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "reason"), [
    ({"event_id": "t-1", "type": "sos", "ts": "0001-01-01T00:00:00+08:00"}, "invalid_ts"),
    ({"event_id": "t-2", "type": "heartbeat", "ts": "9999-12-31T23:59:59-12:00"}, "invalid_ts"),
    ({"event_id": "a\x00b", "type": "heartbeat", "ts": TS}, "invalid_event_id"),
    ({"event_id": "line\nbreak", "type": "heartbeat", "ts": TS}, "invalid_event_id"),
    ({"event_id": "x" * 65, "type": "heartbeat", "ts": TS}, "invalid_event_id"),
    ({"event_id": "c-1", "type": "cancel", "ts": TS, "value": {"event_id": "s\x00"}}, "invalid_field"),
])
async def test_times_and_ids_that_cannot_be_stored_are_dead_lettered_with_their_reason(
        client: httpx.AsyncClient, runtime: Runtime, device: tuple[str, str], body: dict[str, Any],
        reason: str) -> None:
    device_id, token = device
    response = await client.post(f"/v1/devices/{device_id}/events", json=body, headers=bearer(token))
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"]["reason"] == reason
    assert await scalar(runtime, "select reason from device_dead_letters where device_id = :d", d=device_id) == reason


async def test_a_device_time_far_from_receipt_is_stored_and_noted_clock_skew(
        client: httpx.AsyncClient, runtime: Runtime, device: tuple[str, str]) -> None:
    device_id, token = device
    url = f"/v1/devices/{device_id}/events"
    for event_id, ts in (("old", "0001-01-01T00:00:00Z"), ("future", "2030-01-01T00:00:00+08:00"),
                         ("1970", "1970-01-01T00:00:00+00:00")):
        response = await client.post(url, json={"event_id": event_id, "type": "heartbeat", "ts": ts},
                                     headers=bearer(token))
        assert response.status_code == 202, response.text
        assert response.json() == {"event_id": event_id, "duplicate": False, "note": "clock_skew"}
    on_time = await client.post(url, json={"event_id": "now", "type": "heartbeat", "ts": TS}, headers=bearer(token))
    assert on_time.json() == {"event_id": "now", "duplicate": False}
    notes = await scalar(runtime, "select string_agg(event_id || '=' || coalesce(note, '-'), ',' order by id) "
                                  "from device_events where device_id = :d", d=device_id)
    assert notes == "old=clock_skew,future=clock_skew,1970=clock_skew,now=-"


async def test_ids_that_no_device_can_have_are_refused_not_crashed_on(
        client: httpx.AsyncClient, runtime: Runtime, device: tuple[str, str], admin_headers: dict[str, str]) -> None:
    device_id, token = device
    body = {"event_id": "x", "type": "heartbeat", "ts": TS}
    nul = await client.post("/v1/devices/a%00b/events", json=body, headers=bearer(token))
    assert nul.status_code == 422 and nul.json()["error"]["code"] == "invalid_text"  # refused up front (kernel.http)
    assert (await client.post("/v1/devices/a%01b/events", json=body, headers=bearer("nope"))).status_code == 401
    other = await client.post("/v1/devices/a%01b/events", json=body, headers=bearer(token))
    assert other.status_code == 403  # the token is a real device's: dead-lettered as a mismatch
    stored = await scalar(runtime, "select device_id from device_dead_letters where reason = 'topic_mismatch' "
                                   "order by id desc limit 1")
    assert stored == "a\ufffdb"
    assert (await client.get("/v1/devices/a%01b", headers=admin_headers)).status_code == 404
    assert (await client.get(f"/v1/devices/{'x' * 300}", headers=admin_headers)).status_code == 404
    for params in ({"from": "0001-01-01T00:00:00+08:00"}, {"to": "9999-12-31T23:59:59-12:00"},
                   {"from": "2026-03-02T09:00:00"}):
        answer = await client.get(f"/v1/devices/{device_id}/events", params=params, headers=admin_headers)
        assert answer.status_code == 422 and answer.json()["error"]["code"] == "invalid_time", (params, answer.text)
    bad_type = await client.get(f"/v1/devices/{device_id}/events", params={"type": "a\x01"}, headers=admin_headers)
    assert bad_type.status_code == 422
    assert (await client.get("/v1/alarms", params={"type": "a\x01"}, headers=admin_headers)).status_code == 422
    dead = await client.get("/v1/dead-letters", params={"from": "0001-01-01T00:00:00+08:00"}, headers=admin_headers)
    assert dead.status_code == 422


times = st.one_of(
    st.datetimes(timezones=st.timezones() | st.just(UTC), allow_imaginary=False).map(lambda d: d.isoformat()),
    st.builds(lambda y, h: f"{y:04d}-01-01T00:00:00{'+' if h >= 0 else '-'}{abs(h):02d}:00",
              st.sampled_from([1, 2, 9998, 9999]), st.integers(-23, 23)),
    st.text(max_size=30),
)
ids = st.one_of(st.text(max_size=70), st.builds(lambda a, b: f"{a}\x00{b}", st.text(max_size=5), st.text(max_size=5)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ts=times, event_id=ids)
async def test_any_time_or_event_id_over_http_answers_202_or_a_typed_422_never_500(
        client: httpx.AsyncClient, device: tuple[str, str], ts: str, event_id: str) -> None:
    device_id, token = device
    body = json.dumps({"event_id": event_id, "type": "heartbeat", "ts": ts}, ensure_ascii=True)
    response = await client.post(f"/v1/devices/{device_id}/events", content=body,
                                 headers={**bearer(token), "Content-Type": "application/json"})
    assert response.status_code in (202, 422), response.text
    if response.status_code == 422:
        assert response.json()["error"]["details"]["reason"] in DEAD_LETTER_REASONS


async def test_seq_jumps_to_the_largest_number_never_overflow_the_counters(
        client: httpx.AsyncClient, runtime: Runtime, device: tuple[str, str]) -> None:
    device_id, token = device
    top = 2**63 - 1
    for n, seq in enumerate((1, top, 1, top, 0, top)):  # jumps, restarts of the counter, jumps again
        response = await client.post(f"/v1/devices/{device_id}/events", headers=bearer(token),
                                     json={"event_id": f"j{n}", "type": "heartbeat", "ts": TS, "seq": seq})
        assert response.status_code == 202, response.text
    assert await scalar(runtime, "select seq_missed from devices where device_id = :d", d=device_id) == top
    missed = await scalar(runtime, "select details->>'missed' from alarms where device_id = :d "
                                   "and type = 'data_lost'", d=device_id)
    assert int(missed) == 3 * (top - 2) + 1
