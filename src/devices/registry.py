"""Device registration and revocation. The token is shown once; only its HMAC is stored."""

from __future__ import annotations

import hmac
import secrets

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from devices import health, schemas
from devices.models import Device, StoredEvent
from devices.mosquitto import password_entry as mosquitto_password_entry
from devices.protocol import DEVICE_ID
from kernel.audit import record_audit
from kernel.authz import Access
from kernel.clock import Clock
from kernel.errors import Conflict, InvalidState, NotFound
from kernel.key_rotation import EncryptedColumn
from kernel.outbox import emit
from kernel.personal_data import FieldCipher
from orders.elders import load_elder
from orders.models import Elder

TOKEN_CONTEXT = "devices.token"  # noqa: S105  (an HMAC context label, not a secret)


def hash_token(cipher: FieldCipher, token: str) -> str:
    return cipher.blind_index(token, context=TOKEN_CONTEXT)


def token_matches(cipher: FieldCipher, device: Device, token: str) -> bool:
    return device.status == "active" and hmac.compare_digest(device.token_hash, hash_token(cipher, token))


BROKER_SECRET_CONTEXT = "devices.broker_secret"  # noqa: S105  (an encryption context label, not a secret)
# what `vnh crypto rotate` re-encrypts: tokens awaiting the broker, and the sealed vitals and positions of events
ENCRYPTED_COLUMNS = (
    EncryptedColumn(Device, "broker_secret", BROKER_SECRET_CONTEXT),
    EncryptedColumn(StoredEvent, "health_enc", health.CONTEXT),
)


async def register_device(session: AsyncSession, clock: Clock, cipher: FieldCipher, access: Access,
                          data: schemas.DeviceCreate, *, keep_for_broker: bool = False) -> tuple[Device, str]:
    """Register a device; answers it and its token (shown once). `keep_for_broker`: a Mosquitto admin is
    configured, so the token is also kept encrypted until `mosquitto_control.create_registered` has created the
    device's dynsec client on the running broker (its `createClient` takes only the plaintext)."""
    elder = await load_elder(session, access, data.elder_id)
    if elder.status != "active":
        raise InvalidState(f"elder is {elder.status}", code="invalid_state")
    if await session.get(Device, data.device_id) is not None:
        raise Conflict("device id is registered", code="device_exists")
    token = secrets.token_urlsafe(16)  # 128 random bits
    device = Device(device_id=data.device_id, kind=data.kind, elder_id=elder.id, token_hash=hash_token(cipher, token),
                    status="active")
    # what Mosquitto's dynamic-security plugin checks, derived while the plaintext is in hand (devices/mosquitto.py)
    device.broker_password = mosquitto_password_entry(token)
    if keep_for_broker:
        device.broker_secret = cipher.encrypt(token, context=BROKER_SECRET_CONTEXT)
    session.add(device)
    try:
        await session.flush()
    except IntegrityError as exc:
        raise Conflict("device id is registered", code="device_exists") from exc
    await record_audit(session, clock, access, "device.register", "device", device.device_id,
                       {"kind": device.kind, "elder_id": str(elder.id)})
    emit(session, clock, "devices.device.registered", device.device_id,
         {"device_id": device.device_id, "elder_id": str(elder.id), "kind": device.kind})
    return device, token


async def load_device(session: AsyncSession, access: Access, device_id: str, *, for_update: bool = False) -> Device:
    if not DEVICE_ID.match(device_id):  # no device has such an id (and a NUL would not even reach PostgreSQL)
        raise NotFound("device not found")
    query = select(Device, Elder.region_code).join(Elder, Elder.id == Device.elder_id).where(
        Device.device_id == device_id)
    if for_update:
        query = query.with_for_update(of=Device)
    row = (await session.execute(query)).first()
    if row is None:
        raise NotFound("device not found")
    device, region = row
    access.ensure(what="device", region_code=region, elder_id=device.elder_id)
    return device


async def revoke_device(session: AsyncSession, clock: Clock, access: Access, device_id: str) -> Device:
    device = await load_device(session, access, device_id, for_update=True)
    if device.status == "revoked":
        raise InvalidState("device is already revoked")
    device.status = "revoked"
    device.revoked_at = clock.now()
    device.online = False
    device.broker_secret = None  # not to be created on the broker any more
    await session.flush()
    await record_audit(session, clock, access, "device.revoke", "device", device.device_id,
                       {"elder_id": str(device.elder_id)})
    emit(session, clock, "devices.device.revoked", device.device_id,
         {"device_id": device.device_id, "elder_id": str(device.elder_id)})
    return device


def to_schema(device: Device) -> schemas.Device:
    return schemas.Device(
        device_id=device.device_id, kind=device.kind,
        elder_id=str(device.elder_id), status=device.status,
        online=device.online, last_seen_at=device.last_seen_at, battery=device.battery,
        created_at=device.created_at, last_seq=device.last_seq, seq_missed=device.seq_missed,
    )
