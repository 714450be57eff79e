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


class DeviceStatusChanged(EventPayload):
    device_id: str
    elder_id: str
    region_code: str
    online: bool


class AlarmChanged(EventPayload):
    """devices.alarm.{raised,repeated,acknowledged,resolved,cancelled,escalated}: the console's alarm feed."""

    alarm_id: str
    elder_id: str
    region_code: str
    device_id: str | None
    type: str
    severity: str
    status: str
    count: int
    order_id: str | None = None
    escalation_level: int = 0
    lat: float | None = None  # WGS-84: the triggering event's position, else the elder's home (for the console map)
    lon: float | None = None


class DeviceCommandChanged(EventPayload):
    command_id: str
    device_id: str
    type: str
    status: str


class OrderChanged(EventPayload):
    order_id: str
    elder_id: str
    region_code: str
    status: str
    previous_status: str | None
    priority: str
    service_code: str
    caregiver_id: str | None = None


class OfferChanged(EventPayload):
    """dispatch.offer.*: `caregiver_id` is whom the offer was made to (the caregiver app's stream and push select
    by it); `reason` says why a withdrawn offer was withdrawn ("another caregiver accepted", "order cancelled")."""

    offer_id: str
    order_id: str
    caregiver_id: str
    status: str
    kind: str
    expires_at: str
    reason: str | None = None


class VisitChanged(EventPayload):
    visit_id: str
    order_id: str
    caregiver_id: str
    elder_id: str
    region_code: str
    status: str
    flags: list[str] = []


class ProgramCreated(EventPayload):
    program_id: str
    region_code: str


class ContractCreated(EventPayload):
    contract_id: str
    organization_id: str
    program_id: str | None


class ReservationCreated(EventPayload):
    order_id: str
    elder_id: str
    program_id: str | None
    entitlement_id: str | None


class ReservationReleased(EventPayload):
    order_id: str
    program_id: str | None


class VisitBilled(EventPayload):
    visit_id: str
    order_id: str
    program_id: str | None
    organization_id: str


class SettlementChanged(EventPayload):
    settlement_id: str
    program_id: str
    organization_id: str
    month: str


ORDER_STATUS_EVENTS = ("created", "dispatching", "offered", "assigned", "en_route", "in_service", "completed",
                       "confirmed", "cancelled", "unfulfilled")
OFFER_EVENTS = ("created", "accepted", "declined", "expired", "withdrawn")
VISIT_EVENTS = ("departed", "checked_in", "checked_out", "confirmed", "flagged", "flag_resolved", "withdrawn")

ALARM_EVENTS = ("raised", "repeated", "acknowledged", "resolved", "cancelled", "escalated")

CATALOGUE: dict[str, type[EventPayload]] = {
    **{f"orders.order.{status}": OrderChanged for status in ORDER_STATUS_EVENTS},
    **{f"dispatch.offer.{verb}": OfferChanged for verb in OFFER_EVENTS},
    **{f"orders.visit.{verb}": VisitChanged for verb in VISIT_EVENTS},
    "kernel.user.created": UserCreated,
    "dispatch.organization.created": OrganizationCreated,
    "dispatch.caregiver.created": CaregiverCreated,
    "dispatch.caregiver.updated": CaregiverUpdated,
    "orders.elder.created": ElderCreated,
    "orders.elder.updated": ElderUpdated,
    "devices.device.registered": DeviceRegistered,
    "devices.device.revoked": DeviceRevoked,
    "devices.device.online": DeviceStatusChanged,
    "devices.device.offline": DeviceStatusChanged,
    **{f"devices.alarm.{verb}": AlarmChanged for verb in ALARM_EVENTS},
    **{f"devices.command.{verb}": DeviceCommandChanged for verb in ("queued", "acknowledged", "expired")},
    "billing.program.created": ProgramCreated,
    "billing.contract.created": ContractCreated,
    "billing.reservation.created": ReservationCreated,
    "billing.reservation.released": ReservationReleased,
    "billing.visit.captured": VisitBilled,
    "billing.visit.excluded": VisitBilled,
    "billing.settlement.drafted": SettlementChanged,
    "billing.settlement.approved": SettlementChanged,
}


def payload_schema(event_type: str) -> type[EventPayload]:
    try:
        return CATALOGUE[event_type]
    except KeyError:
        raise KeyError(f"event {event_type!r} is not in the catalogue (kernel/events.py)") from None
