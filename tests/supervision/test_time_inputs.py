"""Supervision's time inputs at the edge: a time out of range or without an offset is 422 `invalid_time`, never a
500 from the database (the same field type as orders: kernel.fields.AwareTime)."""

from __future__ import annotations

from kernel.runtime import Runtime
from tests.conftest import login_headers
from tests.world import World

BAD_TIMES = ["0001-01-01T00:00:00+08:00", "9999-12-31T23:59:59-12:00", "2026-05-01T09:00:00"]
QUERIES = ["/v1/audit/log", "/v1/audit/visits", "/v1/audit/anomalies", "/v1/audit/alarms/response-times"]


async def test_audit_queries_refuse_times_out_of_range(world: World, runtime: Runtime) -> None:
    auditor = await login_headers(runtime, "auditor", region_code="150625")
    for path in QUERIES:
        for name in ("from", "to"):
            for value in BAD_TIMES:
                answer = await world.client.get(path, params={name: value}, headers=auditor)
                assert answer.status_code == 422, (path, name, value, answer.text)
                assert answer.json()["error"]["code"] == "invalid_time"
        fine = await world.client.get(path, params={"from": "2026-01-01T00:00:00+08:00"}, headers=auditor)
        assert fine.status_code == 200, (path, fine.text)


async def test_a_blacklist_period_out_of_range_is_invalid_time(world: World, runtime: Runtime) -> None:
    admin = await login_headers(runtime, "admin")
    for name in ("valid_from", "valid_to"):
        for value in BAD_TIMES:
            body = {"subject_kind": "caregiver", "subject_id": str(world.caregivers[0].id), "reason": "抽查不合格",
                    name: value}
            answer = await world.client.post("/v1/blacklist", json=body, headers=admin)
            assert answer.status_code == 422, (name, value, answer.text)
            assert answer.json()["error"]["code"] == "invalid_time"
