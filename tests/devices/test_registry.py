from __future__ import annotations

import httpx
from sqlalchemy import text

from kernel.runtime import Runtime
from tests.conftest import login_headers
from tests.factories import HANGGIN, create_elder


async def test_a_device_token_is_shown_once_and_stored_only_as_a_hash(client: httpx.AsyncClient, runtime: Runtime,
                                                                     admin_headers: dict[str, str]) -> None:
    elder = await create_elder(runtime)
    created = await client.post("/v1/devices", json={"device_id": "btn-000001", "kind": "call_button",
                                                     "elder_id": str(elder.id)}, headers=admin_headers)
    assert created.status_code == 201, created.text
    token = created.json()["token"]
    assert len(token) >= 22
    shown = await client.get("/v1/devices/btn-000001", headers=admin_headers)
    assert shown.status_code == 200 and "token" not in shown.json()
    async with runtime.database.unit_of_work() as s:
        stored = await s.scalar(text("select token_hash from devices where device_id = 'btn-000001'"))
    assert stored != token and len(stored) == 64


async def test_device_ids_must_be_safe_in_mqtt_topics(client: httpx.AsyncClient, runtime: Runtime,
                                                      admin_headers: dict[str, str]) -> None:
    elder = await create_elder(runtime)
    for bad in ("a/b", "dev+1", "x#", "ab"):
        response = await client.post("/v1/devices", json={"device_id": bad, "kind": "wristband",
                                                          "elder_id": str(elder.id)}, headers=admin_headers)
        assert response.status_code == 422, bad


async def test_registering_the_same_device_twice_conflicts(client: httpx.AsyncClient, runtime: Runtime,
                                                           admin_headers: dict[str, str]) -> None:
    elder = await create_elder(runtime)
    body = {"device_id": "wb-1", "kind": "wristband", "elder_id": str(elder.id)}
    assert (await client.post("/v1/devices", json=body, headers=admin_headers)).status_code == 201
    again = await client.post("/v1/devices", json=body, headers=admin_headers)
    assert again.status_code == 409 and again.json()["error"]["code"] == "device_exists"


async def test_a_dispatcher_revokes_devices_of_its_region_once(client: httpx.AsyncClient, runtime: Runtime,
                                                              admin_headers: dict[str, str]) -> None:
    elder = await create_elder(runtime)
    far = await create_elder(runtime, region_code="654002")  # 伊宁市
    for device_id, owner in (("btn-near", elder), ("btn-far", far)):
        await client.post("/v1/devices", json={"device_id": device_id, "kind": "call_button",
                                               "elder_id": str(owner.id)}, headers=admin_headers)
    dispatcher = await login_headers(runtime, "dispatcher", region_code=HANGGIN)
    revoked = await client.post("/v1/devices/btn-near/revoke", headers=dispatcher)
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    twice = await client.post("/v1/devices/btn-near/revoke", headers=dispatcher)
    assert twice.status_code == 409 and twice.json()["error"]["code"] == "invalid_state"
    assert (await client.post("/v1/devices/btn-far/revoke", headers=dispatcher)).status_code == 404
    elder_login = await login_headers(runtime, "elder", elder_ids=[elder.id])
    assert (await client.post("/v1/devices/btn-near/revoke", headers=elder_login)).status_code == 403
    assert (await client.get("/v1/devices/btn-near", headers=elder_login)).status_code == 200
