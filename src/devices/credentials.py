"""Device credentials as every entry point checks them: the HTTP ingest, the EMQX hook and the amqtt plugin.

The token issued at registration is the MQTT password and the HTTP bearer token; vnh keeps only its HMAC
(`registry.hash_token`), indexed, so "whose token is this?" is one index look-up — which is how a device using its
own token on another device's id is told apart from a wrong token.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from devices.models import Device
from devices.registry import hash_token
from kernel.personal_data import FieldCipher

SERVICE_USERNAME = "vnh-service"
SERVICE_PASSWORD_CONTEXT = "devices.mqtt.service"  # noqa: S105  (an HMAC context label, not a secret)

Verdict = Literal["ok", "unknown", "revoked", "wrong_token", "other_device"]


@dataclass(frozen=True)
class DeviceCheck:
    verdict: Verdict
    device_id: str | None = None  # the device the token belongs to, when it is not the one claimed
    elder_id: str | None = None


def default_service_password(cipher: FieldCipher) -> str:
    """The service's MQTT password when none is configured: derived from the blind-index key, so the embedded
    broker's plugin (which reads the same secrets) knows it without another secret to manage."""
    return cipher.blind_index(SERVICE_USERNAME, context=SERVICE_PASSWORD_CONTEXT)


async def check_device_token(session: AsyncSession, cipher: FieldCipher, device_id: str, token: str) -> DeviceCheck:
    hashed = hash_token(cipher, token)
    device = await session.get(Device, device_id) if device_id else None
    if device is not None and hmac.compare_digest(device.token_hash, hashed):
        if device.status != "active":
            return DeviceCheck("revoked", device.device_id)
        return DeviceCheck("ok", device.device_id, str(device.elder_id))
    owner = await session.scalar(select(Device).where(Device.token_hash == hashed, Device.status == "active"))
    if owner is not None:
        return DeviceCheck("other_device", owner.device_id, str(owner.elder_id))
    return DeviceCheck("unknown" if device is None else "wrong_token")


def service_credentials_match(username: str | None, password: str | None, configured_username: str | None,
                              configured_password: str | None, cipher: FieldCipher) -> bool:
    expected_user = configured_username or SERVICE_USERNAME
    expected_password = configured_password or default_service_password(cipher)
    return (username == expected_user and password is not None
            and hmac.compare_digest(password.encode(), expected_password.encode()))
