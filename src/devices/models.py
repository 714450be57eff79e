"""Devices registered to elders (call buttons, wristbands, sensors). Ingest and alarms come with the devices issue."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, SmallInteger, String, func
from sqlalchemy.orm import Mapped, mapped_column

from kernel.db import Base

DEVICE_KINDS = ("call_button", "wristband", "bed_sensor", "smart_speaker", "gateway")


class Device(Base):
    __tablename__ = "devices"

    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    elder_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("elders.id"), index=True)
    # HMAC-SHA256 of the token (argon2 is for people: too slow for a reconnect storm); the plaintext is shown once
    token_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(10), default="active")
    revoked_at: Mapped[datetime | None]
    online: Mapped[bool] = mapped_column(default=False)
    last_seen_at: Mapped[datetime | None]
    battery: Mapped[int | None] = mapped_column(SmallInteger)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (
        CheckConstraint("device_id ~ '^[A-Za-z0-9_.:-]{3,64}$'", name="device_id_shape"),
        CheckConstraint("kind IN ('call_button','wristband','bed_sensor','smart_speaker','gateway')",
                        name="kind_known"),
        CheckConstraint("status IN ('active','revoked')", name="status_known"),
        CheckConstraint("(status = 'revoked') = (revoked_at IS NOT NULL)", name="revoked_has_time"),
        CheckConstraint("battery BETWEEN 0 AND 100", name="battery_range"),
    )
