"""`vnh crypto rotate`: personal data re-encrypted under a new key (and cipher), resumable, audited."""

from __future__ import annotations

import base64
import os
from datetime import date

import httpx
from pydantic import SecretStr
from sqlalchemy import select

from dispatch.models import Caregiver
from dispatch.registry import ENCRYPTED_COLUMNS as CAREGIVER_COLUMNS
from kernel.audit import AuditEntry
from kernel.key_rotation import rotate
from kernel.personal_data import FieldCipher
from kernel.runtime import Runtime
from orders.elders import ENCRYPTED_COLUMNS as ELDER_COLUMNS
from orders.elders import ID_CONTEXT, PHONE_CONTEXT
from orders.home import coarse, open_home
from orders.models import Elder
from tests.factories import create_caregiver, create_elder, create_organization, resident_id

COLUMNS = (*ELDER_COLUMNS, *CAREGIVER_COLUMNS)


def _rotated_settings(rt: Runtime, key: bytes, *, keep_old: bool) -> FieldCipher:
    old = rt.settings.crypto.keys if keep_old else {}
    crypto = rt.settings.crypto.model_copy(update={
        "keys": {**old, "k-new": SecretStr(base64.b64encode(key).decode())}, "active_key": "k-new",
        "cipher": "sm4-gcm"})
    return FieldCipher.from_settings(rt.settings.model_copy(update={"crypto": crypto}))


async def test_rotation_rewrites_every_value_under_the_new_key_and_is_idempotent(runtime: Runtime) -> None:
    rt = runtime
    born = [date(1940 + i, 5, 6) for i in range(3)]
    numbers = [resident_id(born=b) for b in born]
    elders = [await create_elder(rt, id_number=n, birth_date=b, **({"phone": None} if i == 0 else {}))
              for i, (n, b) in enumerate(zip(numbers, born, strict=True))]
    await create_caregiver(rt, await create_organization(rt))
    key = os.urandom(32)
    cipher = _rotated_settings(rt, key, keep_old=True)

    report = await rotate(rt.database, rt.clock, cipher, COLUMNS, batch=2)
    assert report.complete and report.key == "k-new"
    assert report.rewritten == {"elders.id_number_enc": 3, "elders.phone_enc": 2, "elders.address_enc": 3,
                                "elders.emergency_contacts_enc": 3, "elders.home_enc": 3, "visits.check_in_enc": 0,
                                "visits.check_out_enc": 0, "caregivers.phone_enc": 1}
    again = await rotate(rt.database, rt.clock, cipher, COLUMNS)
    assert sum(again.rewritten.values()) == 0

    only_new = _rotated_settings(rt, key, keep_old=False)  # the old key can now be dropped
    async with rt.database.unit_of_work() as s:
        stored = {e.id: e for e in (await s.scalars(select(Elder))).all()}
        for elder, number in zip(elders, numbers, strict=True):
            row = stored[elder.id]
            assert row.id_number_enc.startswith("k-new:sm4-gcm:") and number not in row.id_number_enc
            assert only_new.decrypt(row.id_number_enc, context=ID_CONTEXT) == number
            assert row.id_number_bidx == elder.id_number_bidx  # blind indexes keep their own key
            # the sealed home too, and its clear cell is left as it was
            assert row.home_enc.startswith("k-new:sm4-gcm:")
            assert coarse(*open_home(only_new, row.home_enc)) == (row.coarse_lat, row.coarse_lon)
            if row.phone_enc is not None:
                assert only_new.decrypt(row.phone_enc, context=PHONE_CONTEXT).startswith("+861")
        caregiver = await s.scalar(select(Caregiver))
        assert caregiver is not None and caregiver.phone_enc.startswith("k-new:sm4-gcm:")
        audited = (await s.scalars(select(AuditEntry).where(AuditEntry.action == "crypto.rotate"))).all()
    assert sum(a.summary["rows"] for a in audited) == 15


async def test_the_command_rotates_a_committed_database_and_reports(committed_runtime: Runtime) -> None:
    import asyncio
    import json
    import sys

    from tests.conftest import settings_env

    rt = committed_runtime
    await create_elder(rt)
    env = settings_env(rt.settings)
    keys = json.loads(env["VNH_CRYPTO__KEYS"])
    env["VNH_CRYPTO__KEYS"] = json.dumps({**keys, "k9": base64.b64encode(os.urandom(32)).decode()})
    env["VNH_CRYPTO__ACTIVE_KEY"] = "k9"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "vnh.cli", "crypto", "rotate", "--batch", "10", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()
    assert "elders.id_number_enc: rewritten=1 remaining=0" in out.decode()
    assert "elders.home_enc: rewritten=1 remaining=0" in out.decode()
    assert "key=k9 complete=True" in out.decode()
    async with rt.database.unit_of_work() as s:
        assert all(v.startswith("k9:") for v in (await s.scalars(select(Elder.address_enc))).all())


async def test_sealed_telemetry_with_its_composite_key_is_rotated_too(runtime: Runtime,
                                                                    client: httpx.AsyncClient) -> None:
    from devices import health
    from devices.models import StoredEvent
    from devices.registry import ENCRYPTED_COLUMNS as DEVICE_COLUMNS
    from tests.factories import register_device

    rt = runtime
    elder = await create_elder(rt)
    device_id, token = await register_device(rt, elder, kind="wristband")
    for n in range(5):
        answer = await client.post(f"/v1/devices/{device_id}/events", headers={"Authorization": f"Bearer {token}"},
                                   json={"event_id": f"hr-{n}", "type": "heart_rate", "value": {"bpm": 70 + n},
                                         "ts": "2026-03-02T09:00:00+08:00"})
        assert answer.status_code == 202, answer.text
    key = os.urandom(32)
    report = await rotate(rt.database, rt.clock, _rotated_settings(rt, key, keep_old=True), DEVICE_COLUMNS, batch=2)
    assert report.rewritten["device_events.health_enc"] == 5 and report.complete
    only_new = _rotated_settings(rt, key, keep_old=False)
    async with rt.database.unit_of_work() as s:
        rows = (await s.scalars(select(StoredEvent).where(StoredEvent.device_id == device_id))).all()
    assert sorted(health.unseal(only_new, r.health_enc, None, None, None)[0]["bpm"] for r in rows  # type: ignore[index]
                  ) == [70, 71, 72, 73, 74]
