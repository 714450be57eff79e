"""Elders, the service catalogue, orders with their history and idempotency keys, visits and their flags."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    SmallInteger,
    String,
    Uuid,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from kernel.db import Base, new_id

CATEGORIES = (
    "tekun", "dibao", "gaoling", "shineng", "shizhi", "duju", "kongchao", "liushou", "jisheng_tefu", "youfu",
    "zhongdu_canji",
)
ELDER_STATUSES = ("active", "deceased", "moved")


class ServiceType(Base):
    __tablename__ = "services"

    code: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    unit: Mapped[str] = mapped_column(String(8))
    price_fen: Mapped[int]
    required_skill: Mapped[str | None] = mapped_column(String(40))
    min_certificate_level: Mapped[str] = mapped_column(String(12))
    default_duration_min: Mapped[int]
    active: Mapped[bool] = mapped_column(default=True)

    __table_args__ = (
        CheckConstraint("unit IN ('visit','hour')", name="unit_known"),
        CheckConstraint("price_fen >= 0", name="price_not_negative"),
        CheckConstraint("default_duration_min > 0", name="duration_positive"),
    )


class Elder(Base):
    __tablename__ = "elders"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(100))
    # personal data: ciphertext, blind index, masked form (kernel.personal_data); never plaintext
    id_number_enc: Mapped[str] = mapped_column(String(300))
    id_number_bidx: Mapped[str] = mapped_column(String(64), unique=True)
    id_number_masked: Mapped[str] = mapped_column(String(20))
    phone_enc: Mapped[str | None] = mapped_column(String(300))
    phone_bidx: Mapped[str | None] = mapped_column(String(64), index=True)
    phone_masked: Mapped[str | None] = mapped_column(String(20))
    address_enc: Mapped[str] = mapped_column(String(1200))
    address_masked: Mapped[str] = mapped_column(String(40))
    emergency_contacts_enc: Mapped[str | None] = mapped_column(String(4000))
    emergency_contacts_masked: Mapped[list[Any]] = mapped_column(default=list)
    gender: Mapped[str] = mapped_column(String(6))
    birth_date: Mapped[date]
    # the exact home (WGS-84) is personal data: sealed (orders.home); a ~1 km cell stays clear for search and maps
    home_enc: Mapped[str] = mapped_column(String(300))
    coarse_lat: Mapped[float] = mapped_column(Float)
    coarse_lon: Mapped[float] = mapped_column(Float)
    region_code: Mapped[str] = mapped_column(String(6), index=True)
    town_code: Mapped[str | None] = mapped_column(String(9))
    village_code: Mapped[str | None] = mapped_column(String(12))
    categories: Mapped[list[str]] = mapped_column(ARRAY(String(20)), default=list)
    assessment_level: Mapped[int] = mapped_column(SmallInteger, default=0)
    languages: Mapped[list[str]] = mapped_column(ARRAY(String(8)), default=list)
    preferences: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(10), default="active")
    # billing grants no entitlement from the next local day on (decisions §4)
    status_changed_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())

    __table_args__ = (
        CheckConstraint("gender IN ('male','female')", name="gender_known"),
        CheckConstraint("status IN ('active','deceased','moved')", name="status_known"),
        CheckConstraint("assessment_level BETWEEN 0 AND 4", name="assessment_level_range"),
        CheckConstraint("coarse_lat BETWEEN -90 AND 90 AND coarse_lon BETWEEN -180 AND 180",
                        name="coarse_coordinates_range"),
        CheckConstraint("region_code ~ '^[0-9]{6}$'", name="region_code_shape"),
        CheckConstraint(
            "categories <@ ARRAY['tekun','dibao','gaoling','shineng','shizhi','duju','kongchao','liushou',"
            "'jisheng_tefu','youfu','zhongdu_canji']::varchar[]",
            name="categories_known",
        ),
        Index("ix_elders_created", "created_at", "id"),
    )


class Order(Base):
    __tablename__ = "orders"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    elder_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("elders.id"), index=True)
    service_code: Mapped[str] = mapped_column(ForeignKey("services.code"))
    region_code: Mapped[str] = mapped_column(String(6), index=True)
    status: Mapped[str] = mapped_column(String(12), index=True)
    priority: Mapped[str] = mapped_column(String(6), default="normal")
    channel: Mapped[str] = mapped_column(String(10))
    asap: Mapped[bool]
    window_start: Mapped[datetime]
    window_end: Mapped[datetime]
    scheduled: Mapped[bool] = mapped_column(default=False)  # waits for the batch assigner
    planned_minutes: Mapped[int]
    notes: Mapped[str | None] = mapped_column(String(1000))
    price_fen: Mapped[int]
    quota_fen: Mapped[int] = mapped_column(default=0)
    copay_fen: Mapped[int]
    program_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    service_month: Mapped[date]
    assigned_caregiver_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True)
    visit_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    __table_args__ = (
        CheckConstraint(
            "status IN ('created','dispatching','offered','assigned','en_route','in_service','completed',"
            "'confirmed','cancelled','unfulfilled')", name="status_known"),
        CheckConstraint("priority IN ('normal','urgent')", name="priority_known"),
        CheckConstraint("channel IN ('app','hotline','device','caregiver')", name="channel_known"),
        CheckConstraint("window_end > window_start", name="window_ordered"),
        CheckConstraint("price_fen >= 0 AND quota_fen >= 0 AND copay_fen >= 0 AND quota_fen + copay_fen = price_fen",
                        name="price_split"),
        CheckConstraint("planned_minutes > 0", name="planned_minutes_positive"),
        Index("ix_orders_open_scheduled", "region_code", "window_start",
              postgresql_where=text("scheduled AND status = 'created'")),
        Index("ix_orders_created", "created_at", "id"),
    )


class OrderEvent(Base):
    """Every transition of an order, with actor and time: the order's `history`."""

    __tablename__ = "order_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orders.id"), index=True)
    status: Mapped[str] = mapped_column(String(12))
    event: Mapped[str] = mapped_column(String(20))
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(100))
    reason: Mapped[str | None] = mapped_column(String(500))


class IdempotencyRecord(Base):
    """`Idempotency-Key` of order intake, per caller: same key + same body → same order; other body → 409."""

    __tablename__ = "idempotency_keys"

    actor: Mapped[str] = mapped_column(String(100), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orders.id"))
    created_at: Mapped[datetime]


class Visit(Base):
    __tablename__ = "visits"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orders.id"), index=True)
    caregiver_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("caregivers.id"), index=True)
    organization_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id"))
    elder_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("elders.id"), index=True)
    service_code: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(12))
    window_start: Mapped[datetime]
    window_end: Mapped[datetime]
    assigned_at: Mapped[datetime]
    departed_at: Mapped[datetime | None]
    check_in_at: Mapped[datetime | None]
    # taken at the elder's door, so sealed like the home (orders.home): `lat,lon` ciphertext
    check_in_enc: Mapped[str | None] = mapped_column(String(300))
    check_in_distance_m: Mapped[float | None] = mapped_column(Float)
    check_out_at: Mapped[datetime | None]
    check_out_enc: Mapped[str | None] = mapped_column(String(300))
    duration_min: Mapped[int | None]
    tasks_done: Mapped[list[Any]] = mapped_column(default=list)
    notes: Mapped[str | None] = mapped_column(String(2000))
    outcome: Mapped[str | None] = mapped_column(String(12))
    actual_price_fen: Mapped[int | None]
    confirmed_at: Mapped[datetime | None]
    confirmed_via: Mapped[str | None] = mapped_column(String(10))
    confirmed_from: Mapped[str | None] = mapped_column(String(80))  # device:<id> | app:<installation> | net:<hash>
    rating: Mapped[int | None] = mapped_column(SmallInteger)
    comment: Mapped[str | None] = mapped_column(String(1000))
    withdrawn_reason: Mapped[str | None] = mapped_column(String(500))
    billing: Mapped[str] = mapped_column(String(10), default="pending")

    __table_args__ = (
        CheckConstraint("status IN ('assigned','en_route','in_service','completed','withdrawn')",
                        name="status_known"),
        CheckConstraint("outcome IN ('completed','elder_absent','aborted')", name="outcome_known"),
        CheckConstraint("rating BETWEEN 1 AND 5", name="rating_range"),
        CheckConstraint("billing IN ('pending','held','captured','excluded')", name="billing_known"),
        CheckConstraint("check_out_at IS NULL OR check_in_at IS NOT NULL", name="check_out_after_check_in"),
        # one live visit per order; a withdrawn one stays as a record
        Index("uq_visits_live_order", "order_id", unique=True, postgresql_where=text("status <> 'withdrawn'")),
        Index("ix_visits_caregiver_window", "caregiver_id", "window_start"),
    )

    @property
    def checked_out_at(self) -> datetime | None:
        """The name billing's `FinishedVisit` protocol reads."""
        return self.check_out_at


VISIT_FLAGS = ("far_check_in", "too_short", "overlap", "no_confirmation", "impossible_travel")


class VisitFlag(Base):
    """An exception a dispatcher of the region resolves with a decision and a reason before billing."""

    __tablename__ = "visit_flags"

    visit_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("visits.id"), primary_key=True)
    flag: Mapped[str] = mapped_column(String(20), primary_key=True)
    raised_at: Mapped[datetime]
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    decision: Mapped[str | None] = mapped_column(String(10))
    reason: Mapped[str | None] = mapped_column(String(500))
    resolved_by: Mapped[str | None] = mapped_column(String(100))
    resolved_at: Mapped[datetime | None]

    __table_args__ = (
        CheckConstraint("flag IN ('far_check_in','too_short','overlap','no_confirmation','impossible_travel')",
                        name="flag_known"),
        CheckConstraint("decision IN ('approved','rejected')", name="decision_known"),
        CheckConstraint("(decision IS NULL) = (resolved_at IS NULL)", name="resolution_complete"),
        Index("ix_visit_flags_open", "flag", postgresql_where=text("decision IS NULL")),
    )
