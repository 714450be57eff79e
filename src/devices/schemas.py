from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

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
