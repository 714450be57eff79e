"""Health data (vital signs, positions) is shown only to roles holding `health.read` (admin, dispatcher, elder):
an auditor, who may read devices and alarms, gets the same items with those fields null and `redacted: true`. Stored
events keep them encrypted (devices/health.py)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import text

from kernel.personal_data import UndecryptableValue
from kernel.runtime import Runtime
from tests.conftest import login_headers
from tests.factories import HANGGIN, XINI_TOWN, create_elder, register_device

TS = "2026-03-02T09:00:00+08:00"


@pytest.fixture
async def device(runtime: Runtime) -> tuple[str, str]:
    elder = await create_elder(runtime, lat=XINI_TOWN[0], lon=XINI_TOWN[1])
    return await register_device(runtime, elder, kind="wristband")


async def post(client: httpx.AsyncClient, device: tuple[str, str], body: dict[str, Any]) -> None:
    device_id, token = device
    response = await client.post(f"/v1/devices/{device_id}/events", json={"ts": TS, **body},
                                 headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 202, response.text


async def test_stored_vitals_and_positions_are_withheld_from_an_auditor(
        client: httpx.AsyncClient, runtime: Runtime, device: tuple[str, str]) -> None:
    await post(client, device, {"event_id": "hr-1", "type": "heart_rate", "value": {"bpm": 131}, "battery": 80})
    await post(client, device, {"event_id": "loc-1", "type": "location", "lat": 39.85, "lon": 108.73})
    url = f"/v1/devices/{device[0]}/events"

    dispatcher = await login_headers(runtime, "dispatcher", region_code=HANGGIN)
    seen = {e["event_id"]: e for e in (await client.get(url, headers=dispatcher)).json()["items"]}
    assert seen["hr-1"]["value"] == {"bpm": 131} and seen["hr-1"]["redacted"] is False
    assert (seen["loc-1"]["lat"], seen["loc-1"]["lon"]) == (39.85, 108.73)

    auditor = await login_headers(runtime, "auditor", region_code=HANGGIN)
    response = await client.get(url, headers=auditor)
    assert response.status_code == 200, response.text
    withheld = {e["event_id"]: e for e in response.json()["items"]}
    assert set(withheld) == {"hr-1", "loc-1"}  # the events are listed, their health fields are not
    for event in withheld.values():
        assert (event["value"], event["lat"], event["lon"], event["redacted"]) == (None, None, None, True)
    assert withheld["hr-1"]["type"] == "heart_rate" and withheld["hr-1"]["battery"] == 80
    assert "bpm" not in response.text and "108.73" not in response.text  # (digits alone occur in timestamps)


async def test_alarm_details_and_position_are_withheld_from_an_auditor(
        client: httpx.AsyncClient, runtime: Runtime, device: tuple[str, str]) -> None:
    await post(client, device, {"event_id": "fall-1", "type": "fall", "value": {"confidence": 0.93},
                                "lat": 39.851, "lon": 108.731})
    dispatcher = await login_headers(runtime, "dispatcher", region_code=HANGGIN)
    listed = (await client.get("/v1/alarms", headers=dispatcher)).json()["items"]
    [alarm] = [a for a in listed if a["device_id"] == device[0]]
    assert alarm["details"]["confidence"] == 0.93 and alarm["redacted"] is False
    assert (alarm["lat"], alarm["lon"]) == (39.851, 108.731)

    auditor = await login_headers(runtime, "auditor", region_code=HANGGIN)
    for response in (await client.get("/v1/alarms", headers=auditor),
                     await client.get(f"/v1/alarms/{alarm['id']}", headers=auditor)):
        assert response.status_code == 200, response.text
        body = response.json()
        item = body["items"][0] if "items" in body else body
        assert item["id"] == alarm["id"] and item["type"] == "fall" and item["status"] == "open"
        assert (item["details"], item["lat"], item["lon"], item["redacted"]) == (None, None, None, True)
        assert "confidence" not in response.text and "108.731" not in response.text

    # the dispatcher's answers to acknowledge and resolve keep them
    acked = await client.post(f"/v1/alarms/{alarm['id']}/ack", headers=dispatcher)
    assert acked.status_code == 200, acked.text
    assert acked.json()["redacted"] is False and acked.json()["details"]["confidence"] == 0.93


async def test_dead_letter_payloads_are_withheld_from_an_auditor(
        client: httpx.AsyncClient, runtime: Runtime, device: tuple[str, str]) -> None:
    """A rejected message can still carry a reading or a position (here a heart rate with a bad timestamp)."""
    device_id, token = device
    response = await client.post(f"/v1/devices/{device_id}/events", headers={"Authorization": f"Bearer {token}"},
                                 json={"event_id": "bad-1", "type": "heart_rate", "ts": "yesterday",
                                       "value": {"bpm": 142}, "lat": 39.86, "lon": 108.74})
    assert response.status_code == 422, response.text
    dispatcher = await login_headers(runtime, "dispatcher", region_code=HANGGIN)
    [letter] = (await client.get("/v1/dead-letters", headers=dispatcher)).json()["items"]
    assert "142" in letter["payload"] and letter["redacted"] is False
    auditor = await login_headers(runtime, "auditor", region_code=HANGGIN)
    answer = await client.get("/v1/dead-letters", headers=auditor)
    [withheld] = answer.json()["items"]
    assert withheld["id"] == letter["id"] and withheld["reason"] == letter["reason"]
    assert (withheld["payload"], withheld["redacted"]) == (None, True)
    assert "bpm" not in answer.text and "108.74" not in answer.text


async def test_stored_vitals_and_positions_are_encrypted_at_rest(
        client: httpx.AsyncClient, runtime: Runtime, device: tuple[str, str]) -> None:
    """The columns hold ciphertext under the configured key (no reading or coordinate in plaintext anywhere in the
    row), the API decrypts it for a dispatcher, and a row stored before encryption is still read as it is."""
    from devices import health

    device_id = device[0]
    await post(client, device, {"event_id": "hr-9", "type": "heart_rate", "value": {"bpm": 137}})
    await post(client, device, {"event_id": "loc-9", "type": "location", "lat": 39.8577, "lon": 108.7391})
    await post(client, device, {"event_id": "hb-9", "type": "heartbeat", "battery": 55})
    async with runtime.database.unit_of_work() as s:
        rows = {r.event_id: r for r in (await s.execute(text(
            "select event_id, value, lat, lon, health_enc, e::text as whole from device_events e "
            "where device_id = :d"), {"d": device_id})).all()}
        # an event stored before migration 0007: plaintext columns, no health_enc
        await s.execute(text(
            "insert into device_events (received_at, device_id, elder_id, event_id, type, ts, value, lat, lon, "
            "channel, payload_hash) select received_at, device_id, elder_id, 'old-1', 'heart_rate', ts, "
            "'{\"bpm\": 88}'::jsonb, 39.1, 108.1, channel, payload_hash from device_events where event_id = 'hr-9'"))
    for event_id in ("hr-9", "loc-9"):
        row = rows[event_id]
        assert (row.value, row.lat, row.lon) == (None, None, None)
        assert row.health_enc.startswith(runtime.cipher.current_prefix)
        # the reading is looked for as the JSON it would be stored as: bare digits like "137" also turn up in the
        # row's random ids and hashes (a UUID held "…b31374…" once)
        assert '"bpm"' not in row.whole and "39.8577" not in row.whole and "108.7391" not in row.whole
    assert health.unseal(runtime.cipher, rows["hr-9"].health_enc, None, None, None) == ({"bpm": 137}, None, None)
    assert health.unseal(runtime.cipher, rows["loc-9"].health_enc, None, None, None) == (None, 39.8577, 108.7391)
    assert rows["hb-9"].health_enc is None  # nothing to protect
    with pytest.raises(UndecryptableValue):  # bound to its column: not readable under another context
        runtime.cipher.decrypt(rows["hr-9"].health_enc, context="orders.elder.phone")

    dispatcher = await login_headers(runtime, "dispatcher", region_code=HANGGIN)
    seen = {e["event_id"]: e for e in (await client.get(f"/v1/devices/{device_id}/events",
                                                        headers=dispatcher)).json()["items"]}
    assert seen["hr-9"]["value"] == {"bpm": 137}
    assert (seen["loc-9"]["lat"], seen["loc-9"]["lon"]) == (39.8577, 108.7391)
    assert (seen["old-1"]["value"], seen["old-1"]["lat"]) == ({"bpm": 88}, 39.1)
    assert seen["hb-9"]["battery"] == 55 and seen["hb-9"]["value"] is None


async def test_staff_reads_of_vital_signs_are_audited(client: httpx.AsyncClient, runtime: Runtime,
                                                      device: tuple[str, str]) -> None:
    from sqlalchemy import select

    from kernel.audit import AuditEntry

    await post(client, device, {"event_id": "hr-9", "type": "heart_rate", "value": {"bpm": 88}})
    url = f"/v1/devices/{device[0]}/events"
    auditor = await login_headers(runtime, "auditor", region_code=HANGGIN)
    assert (await client.get(url, headers=auditor)).status_code == 200  # withheld: nothing personal was read
    dispatcher = await login_headers(runtime, "dispatcher", region_code=HANGGIN)
    assert (await client.get(url, headers=dispatcher)).status_code == 200
    async with runtime.database.unit_of_work() as s:
        reads = (await s.scalars(select(AuditEntry).where(AuditEntry.action == "device.events.read"))).all()
    assert [(r.actor_role, r.entity_id, r.summary["events_with_health_data"], r.region_code) for r in reads] == [
        ("dispatcher", device[0], 1, HANGGIN)]
