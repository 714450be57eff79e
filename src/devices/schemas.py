from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, model_validator

DeviceKind = Literal["call_button", "wristband", "bed_sensor", "smart_speaker", "gateway"]


class DeviceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    device_id: str = Field(pattern=r"^[A-Za-z0-9_.:-]{3,64}$",
                           description="client id and MQTT username; no '/', '+' or '#'")
    kind: DeviceKind
    elder_id: str


class DeviceRegistered(BaseModel):
    device_id: str
    kind: DeviceKind
    elder_id: str
    token: str = Field(description="shown once: the device's MQTT password and HTTP bearer token")


class Device(BaseModel):
    device_id: str
    kind: DeviceKind
    elder_id: str
    status: Literal["active", "revoked"]
    online: bool
    last_seen_at: datetime | None
    battery: int | None
    created_at: datetime
    last_seq: int | None = Field(None, description="the highest protocol `seq` received from the device")
    seq_missed: int = Field(0, description="events the device numbered (`seq`) that never reached vnh; each gap "
                                           "also raises a `data_lost` alarm. Always 0 for devices that send no seq")


class EventIn(BaseModel):
    """A protocol v1 event object (shared/spec/device-protocol.md), as devices post it. Documentation only: the
    service validates the raw body itself, so that every bad one becomes a dead letter with its reason."""

    event_id: str = Field(min_length=1, max_length=64)
    type: Literal["sos", "fall", "call", "heart_rate", "spo2", "location", "heartbeat", "confirm", "cancel",
                  "command_ack"]
    ts: datetime = Field(description="RFC 3339 with offset")
    lat: float | None = None
    lon: float | None = None
    crs: Literal["wgs84", "gcj02", "bd09"] | None = None
    battery: int | None = Field(default=None, ge=0, le=100)
    seq: int | None = Field(default=None, ge=0)
    value: dict[str, Any] | None = None


class EventAccepted(BaseModel):
    event_id: str
    duplicate: bool
    note: str | None = Field(None, description="present when the event was stored with a note: `clock_skew` (its "
                                               "`ts` is further than devices.clock_skew_max from its receipt)")


class StoredEvent(BaseModel):
    """An event as received, plus when it reached vnh and how."""

    event_id: str
    type: str
    ts: datetime
    received_at: datetime
    lat: float | None
    lon: float | None
    battery: int | None
    seq: int | None
    value: dict[str, Any] | None
    channel: str
    note: str | None
    redacted: bool = Field(False, description="vital signs and position (`value`, `lat`, `lon`) withheld: the "
                                              "caller's role does not hold `health.read`")


class DeadLetter(BaseModel):
    id: int
    received_at: datetime
    channel: str
    topic: str | None
    device_id: str | None
    reason: str
    detail: str
    payload: str | None = Field(description="the first bytes as received; null when `redacted`")
    payload_size: int
    redacted: bool = Field(False, description="the payload (which may carry vital signs or a position) withheld: "
                                              "the caller's role does not hold `health.read`")


class Page(BaseModel):
    items: list[Any]
    next_cursor: str | None = None


AlarmStatus = Literal["open", "acknowledged", "resolved"]
Outcome = Literal["false_alarm", "assisted", "hospital", "other"]


class Alarm(BaseModel):
    id: str
    elder_id: str
    device_id: str | None
    region_code: str
    type: str
    severity: Literal["critical", "warning", "info"]
    status: AlarmStatus
    source: str
    count: int
    raised_at: datetime
    received_at: datetime = Field(description="when the triggering message reached vnh: response times count from "
                                              "here")
    device_ts: datetime | None = Field(description="the device's own time of the event (its lag is received_at "
                                                   "- device_ts)")
    last_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    outcome: Outcome | None
    notes: str | None
    cancelled_by_elder_at: datetime | None
    order_id: str | None
    callback_order_id: str | None
    escalation_level: int
    lat: float | None = Field(None, description="WGS-84 position of the alarm: the triggering event's if it carried "
                                                "one, else the elder's home cell (~1 km, 0.01°)")
    lon: float | None = None
    details: dict[str, Any] | None = Field(None, description="what raised it: readings and ranges, position, "
                                                             "confidence, notes")
    redacted: bool = Field(False, description="`details`, `lat` and `lon` withheld: the caller's role does not "
                                              "hold `health.read`")


class AlarmResolve(BaseModel):
    model_config = ConfigDict(extra="forbid")
    outcome: Outcome
    notes: str | None = Field(default=None, max_length=1000)


class SosRequest(BaseModel):
    """An SOS from the elder or family app, or a hotline operator: the same as a device SOS."""

    model_config = ConfigDict(extra="forbid")
    notes: str | None = Field(default=None, max_length=500)


class ButtonMap(RootModel[dict[str, str]]):
    """`{"<button code>": "<service code>"}`: what a call button orders; unmapped buttons make a hotline call-back."""

    root: dict[str, str] = Field(max_length=20)


class HeartRateRange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min: int | None = Field(default=None, ge=20, le=250)
    max: int | None = Field(default=None, ge=20, le=250)
    for_s: int = Field(default=0, ge=0, le=3600, description="out of range this long before the alarm")

    @model_validator(mode="after")
    def _a_range(self) -> HeartRateRange:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min >= self.max:
            raise ValueError("min must be below max")
        return self


class Spo2Range(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min: int = Field(ge=50, le=100)
    for_s: int = Field(default=0, ge=0, le=3600)


class Point(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class CircleZone(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["circle"]
    center: Point
    radius_m: float = Field(ge=10, le=100_000)
    crs: Literal["wgs84", "gcj02", "bd09"] = "wgs84"
    for_s: int = Field(default=0, ge=0, le=3600, description="outside this long before the alarm (GPS jitter)")


class PolygonZone(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["polygon"]
    points: list[Point] = Field(min_length=3, max_length=500)
    crs: Literal["wgs84", "gcj02", "bd09"] = "wgs84"
    for_s: int = Field(default=0, ge=0, le=3600)


SafeZone = Annotated[CircleZone | PolygonZone, Field(discriminator="type")]


class Monitoring(BaseModel):
    """`PUT /v1/elders/{id}/monitoring`: replaces the elder's settings (a field left out is switched off)."""

    model_config = ConfigDict(extra="forbid")
    heart_rate: HeartRateRange | None = None
    spo2: Spo2Range | None = None
    safe_zone: SafeZone | None = None
    heartbeat_s: int | None = Field(default=None, ge=10, le=86400,
                                    description="supervision interval of the elder's devices")
