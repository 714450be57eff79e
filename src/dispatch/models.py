"""Organisations and caregivers (the supply side of dispatch)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ARRAY, BigInteger, CheckConstraint, Float, ForeignKey, Identity, Index, String, Uuid, func, text
from sqlalchemy.orm import Mapped, mapped_column

from kernel.db import Base, new_id

CERTIFICATE_LEVELS = ("none", "junior", "intermediate", "senior", "medical")


class Organization(Base):
    __tablename__ = "organizations"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    region_code: Mapped[str] = mapped_column(String(6), index=True)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (CheckConstraint("region_code ~ '^[0-9]{6}$'", name="region_code_shape"),)


class Caregiver(Base):
    __tablename__ = "caregivers"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    organization_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    phone_enc: Mapped[str] = mapped_column(String(300))
    phone_bidx: Mapped[str] = mapped_column(String(64), unique=True)
    phone_masked: Mapped[str] = mapped_column(String(20))
    gender: Mapped[str] = mapped_column(String(6))
    languages: Mapped[list[str]] = mapped_column(ARRAY(String(8)))
    skills: Mapped[list[str]] = mapped_column(ARRAY(String(40)))
    certificate_level: Mapped[str] = mapped_column(String(12))
    home_lat: Mapped[float | None] = mapped_column(Float)
    home_lon: Mapped[float | None] = mapped_column(Float)
    shifts: Mapped[list[Any]] = mapped_column(default=list)
    active: Mapped[bool] = mapped_column(default=True)
    on_duty: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    duty_changed_at: Mapped[datetime | None]
    rating_sum: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    rating_count: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())

    __table_args__ = (
        CheckConstraint("gender IN ('male','female')", name="gender_known"),
        CheckConstraint(
            "certificate_level IN ('none','junior','intermediate','senior','medical')", name="certificate_level_known"
        ),
        CheckConstraint("(home_lat IS NULL) = (home_lon IS NULL)", name="home_base_complete"),
        CheckConstraint("home_lat BETWEEN -90 AND 90 AND home_lon BETWEEN -180 AND 180", name="home_base_range"),
        Index("ix_caregivers_skills", "skills", postgresql_using="gin"),
    )


class Offer(Base):
    """An offer of an order to one caregiver. At most one accepted offer per order: the partial unique index makes
    "exactly one accept wins" a database fact, whatever the number of processes racing."""

    __tablename__ = "offers"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orders.id"), index=True)
    caregiver_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("caregivers.id"))
    kind: Mapped[str] = mapped_column(String(10))
    status: Mapped[str] = mapped_column(String(10), default="pending")
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    responded_at: Mapped[datetime | None]
    reason: Mapped[str | None] = mapped_column(String(500))
    distance_m: Mapped[float | None] = mapped_column(Float)
    score: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (
        CheckConstraint("kind IN ('loop','urgent','batch','manual')", name="kind_known"),
        CheckConstraint("status IN ('pending','accepted','declined','expired','withdrawn')", name="status_known"),
        Index("uq_offers_one_accept", "order_id", unique=True, postgresql_where=text("status = 'accepted'")),
        Index("uq_offers_one_pending_each", "order_id", "caregiver_id", unique=True,
              postgresql_where=text("status = 'pending'")),
        Index("ix_offers_pending_expiry", "expires_at", postgresql_where=text("status = 'pending'")),
        Index("ix_offers_caregiver", "caregiver_id", "status"),
    )


class PushNotification(Base):
    """A push to a caregiver's phone (dispatch/push.py), queued by the outbox relay after commit, one per outbox
    event (`outbox_id` unique: a batch the relay publishes twice queues nothing twice) and sent with retries; the
    provider sees `outbox_id` as the Idempotency-Key. An offer's push is dropped (`stale`) once the offer expired."""

    __tablename__ = "push_notifications"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    outbox_id: Mapped[int] = mapped_column(BigInteger, unique=True)
    caregiver_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("caregivers.id"), index=True)
    title: Mapped[str] = mapped_column(String(100))
    body: Mapped[str] = mapped_column(String(300))
    data: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(10), default="pending")
    attempts: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    created_at: Mapped[datetime]
    next_attempt_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(String(300))

    __table_args__ = (
        CheckConstraint("status IN ('pending','sent','failed','stale')", name="status_known"),
        Index("ix_push_notifications_due", "next_attempt_at", postgresql_where=text("status = 'pending'")),
    )
