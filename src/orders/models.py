"""Elders and the service catalogue (orders and visits join them in a later migration)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import ARRAY, CheckConstraint, Float, Index, SmallInteger, String, Uuid, func
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
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)
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
        CheckConstraint("lat BETWEEN -90 AND 90 AND lon BETWEEN -180 AND 180", name="coordinates_range"),
        CheckConstraint("region_code ~ '^[0-9]{6}$'", name="region_code_shape"),
        CheckConstraint(
            "categories <@ ARRAY['tekun','dibao','gaoling','shineng','shizhi','duju','kongchao','liushou',"
            "'jisheng_tefu','youfu','zhongdu_canji']::varchar[]",
            name="categories_known",
        ),
        Index("ix_elders_created", "created_at", "id"),
    )
