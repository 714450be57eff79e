"""The catalogue of domain events: every event name (`domain.entity.verb`) with its payload schema.

Payloads carry ids and codes, never personal data in plaintext: they travel through Redis, MQTT and webhooks.
A package adds its events here, in one place, so consumers can see the whole vocabulary.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class EventPayload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UserCreated(EventPayload):
    user_id: str
    role: str


class OrganizationCreated(EventPayload):
    organization_id: str
    region_code: str


class CaregiverCreated(EventPayload):
    caregiver_id: str
    organization_id: str


class CaregiverUpdated(EventPayload):
    caregiver_id: str
    organization_id: str
    fields: list[str]


class ElderCreated(EventPayload):
    elder_id: str
    region_code: str


class ElderUpdated(EventPayload):
    elder_id: str
    region_code: str
    fields: list[str]


class DeviceRegistered(EventPayload):
    device_id: str
    elder_id: str
    kind: str


class DeviceRevoked(EventPayload):
    device_id: str
    elder_id: str


CATALOGUE: dict[str, type[EventPayload]] = {
    "kernel.user.created": UserCreated,
    "dispatch.organization.created": OrganizationCreated,
    "dispatch.caregiver.created": CaregiverCreated,
    "dispatch.caregiver.updated": CaregiverUpdated,
    "orders.elder.created": ElderCreated,
    "orders.elder.updated": ElderUpdated,
    "devices.device.registered": DeviceRegistered,
    "devices.device.revoked": DeviceRevoked,
}


def payload_schema(event_type: str) -> type[EventPayload]:
    try:
        return CATALOGUE[event_type]
    except KeyError:
        raise KeyError(f"event {event_type!r} is not in the catalogue (kernel/events.py)") from None
