from __future__ import annotations

import httpx

from kernel.runtime import Runtime
from tests.conftest import TEST_PASSWORD, login_headers
from tests.factories import HANGGIN, caregiver_payload, create_organization


async def test_admin_creates_an_organisation_and_a_dispatcher_may_not(client: httpx.AsyncClient, runtime: Runtime,
                                                                     admin_headers: dict[str, str]) -> None:
    body = {"name": "杭锦旗锡尼镇居家养老服务中心", "region_code": HANGGIN}
    created = await client.post("/v1/organizations", json=body, headers=admin_headers)
    assert created.status_code == 201, created.text
    assert created.json()["region_code"] == HANGGIN
    dispatcher = await login_headers(runtime, "dispatcher", region_code=HANGGIN)
    refused = await client.post("/v1/organizations", json=body, headers=dispatcher)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "forbidden"


async def test_unknown_programmes_are_refused_until_billing_has_them(client: httpx.AsyncClient,
                                                                     admin_headers: dict[str, str]) -> None:
    body = {"name": "某服务中心", "region_code": HANGGIN, "contracted_programs": ["p-1"]}
    response = await client.post("/v1/organizations", json=body, headers=admin_headers)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "unknown_program"


async def test_an_org_admin_registers_caregivers_in_its_own_organisation_only(client: httpx.AsyncClient,
                                                                            runtime: Runtime) -> None:
    own = await create_organization(runtime)
    other = await create_organization(runtime, name="东胜区幸福里养老服务站", region_code="150602")
    headers = await login_headers(runtime, "org_admin", organization_id=own.id)
    created = await client.post("/v1/caregivers", json=caregiver_payload(str(own.id)), headers=headers)
    assert created.status_code == 201, created.text
    assert created.json()["phone"].count("*") == 4
    elsewhere = await client.post("/v1/caregivers", json=caregiver_payload(str(other.id)), headers=headers)
    assert elsewhere.status_code == 404


async def test_a_new_caregiver_can_log_in_with_its_app_account(client: httpx.AsyncClient, runtime: Runtime,
                                                                admin_headers: dict[str, str]) -> None:
    org = await create_organization(runtime)
    payload = caregiver_payload(str(org.id))
    created = await client.post("/v1/caregivers", json=payload, headers=admin_headers)
    assert created.status_code == 201, created.text
    token = await client.post("/v1/auth/token", json={"username": payload["username"], "password": TEST_PASSWORD})
    assert token.status_code == 200
    assert token.json()["role"] == "caregiver"
    me = await client.get("/v1/auth/me", headers={"Authorization": f"Bearer {token.json()['access_token']}"})
    assert me.json()["caregiver_id"] == created.json()["id"]
    # every read of the caregiver names its login, as creating it did
    login = me.json()["id"]
    assert created.json()["user_id"] == login
    path = f"/v1/caregivers/{created.json()['id']}"
    assert (await client.get(path, headers=admin_headers)).json()["user_id"] == login
    listed = (await client.get(f"/v1/caregivers?organization_id={org.id}", headers=admin_headers)).json()["items"]
    assert [c["user_id"] for c in listed] == [login]
    patched = await client.patch(path, json={"name": "王秀兰"}, headers=admin_headers)
    assert patched.status_code == 200, patched.text
    assert patched.json()["user_id"] == login


async def test_caregiver_input_errors(client: httpx.AsyncClient, runtime: Runtime,
                                      admin_headers: dict[str, str]) -> None:
    org = await create_organization(runtime)
    first = caregiver_payload(str(org.id))
    assert (await client.post("/v1/caregivers", json=first, headers=admin_headers)).status_code == 201
    same_phone = caregiver_payload(str(org.id), phone=first["phone"])
    duplicate = await client.post("/v1/caregivers", json=same_phone, headers=admin_headers)
    assert duplicate.status_code == 409 and duplicate.json()["error"]["code"] == "phone_taken"
    unknown_skill = await client.post("/v1/caregivers", json=caregiver_payload(str(org.id), skills=["flying"]),
                                      headers=admin_headers)
    assert unknown_skill.status_code == 422
    weak = await client.post("/v1/caregivers", json=caregiver_payload(str(org.id), password="short"),
                             headers=admin_headers)
    assert weak.status_code == 422 and weak.json()["error"]["code"] == "weak_password"
    taken = await client.post("/v1/caregivers", json=caregiver_payload(str(org.id), username=first["username"]),
                              headers=admin_headers)
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "username_taken"


async def test_caregiver_sees_itself_and_not_colleagues(client: httpx.AsyncClient, runtime: Runtime,
                                                        admin_headers: dict[str, str]) -> None:
    org = await create_organization(runtime)
    me_payload = caregiver_payload(str(org.id))
    me = (await client.post("/v1/caregivers", json=me_payload, headers=admin_headers)).json()
    colleague = (await client.post("/v1/caregivers", json=caregiver_payload(str(org.id)),
                                   headers=admin_headers)).json()
    token = (await client.post("/v1/auth/token", json={"username": me_payload["username"],
                                                       "password": TEST_PASSWORD})).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert (await client.get(f"/v1/caregivers/{me['id']}", headers=headers)).status_code == 200
    assert (await client.get(f"/v1/caregivers/{colleague['id']}", headers=headers)).status_code == 404
