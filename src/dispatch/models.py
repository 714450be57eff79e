"""Organisations and caregivers (the supply side of dispatch)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ARRAY, CheckConstraint, Float, ForeignKey, Index, String, Uuid, func
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
