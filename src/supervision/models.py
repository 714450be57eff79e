"""Credit blacklist and random inspections (双随机) of the civil-affairs bureau's supervision."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, Uuid, text
from sqlalchemy.orm import Mapped, mapped_column

from kernel.db import Base, new_id


class BlacklistEntry(Base):
    """An organisation or caregiver that may take no government-purchased work or new offers in a period."""

    __tablename__ = "blacklist"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    subject_kind: Mapped[str] = mapped_column(String(12))
    subject_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    reason: Mapped[str] = mapped_column(String(1000))
    valid_from: Mapped[datetime]
    valid_to: Mapped[datetime | None]
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime]
    lifted_at: Mapped[datetime | None]
    lifted_by: Mapped[str | None] = mapped_column(String(100))
    lift_reason: Mapped[str | None] = mapped_column(String(1000))

    __table_args__ = (
        CheckConstraint("subject_kind IN ('organization','caregiver')", name="subject_kind_known"),
        CheckConstraint("valid_to IS NULL OR valid_to > valid_from", name="period_ordered"),
        CheckConstraint("(lifted_at IS NULL) = (lifted_by IS NULL)", name="lift_complete"),
        Index("ix_blacklist_subject", "subject_kind", "subject_id"),
    )


class Inspection(Base):
    """A reproducible random sample of completed visits for call-back checks: the seed is stored."""

    __tablename__ = "inspections"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    region_code: Mapped[str] = mapped_column(String(12))
    month: Mapped[date]
    sample_size: Mapped[int]
    seed: Mapped[int] = mapped_column(BigInteger)
    population: Mapped[int]
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime]

    __table_args__ = (CheckConstraint("sample_size > 0", name="sample_size_positive"),)


class InspectionItem(Base):
    __tablename__ = "inspection_items"

    inspection_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("inspections.id"), primary_key=True)
    visit_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("visits.id"), primary_key=True)
    position: Mapped[int]
    reached: Mapped[bool | None]
    confirmed: Mapped[bool | None]
    notes: Mapped[str | None] = mapped_column(String(2000))
    checked_by: Mapped[str | None] = mapped_column(String(100))
    checked_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_inspection_items_pending", "inspection_id", postgresql_where=text("checked_at IS NULL")),
    )
