"""Billing's tables: programmes and their rules, contracts, entitlements, the ledger, reservations, captures,
exclusions and settlements.

Billing never reads the orders' or visits' tables: what it needs of an order or a visit arrives through the
interface (`billing.service`) and is recorded here. The database itself refuses an overdraft (CHECKs on
entitlements and programmes), an unbalanced or edited ledger posting, and any change to an approved statement
(triggers in `alembic/versions/0003_billing.py`).
"""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import (
    ARRAY,
    BigInteger,
    CheckConstraint,
    Date,
    ForeignKey,
    Identity,
    Index,
    Integer,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    UniqueConstraint,
    Uuid,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from kernel.db import Base, new_id

RESERVATION_STATUSES = ("reserved", "released", "excluded", "captured")
POSTING_KINDS = ("fund", "reserve", "release", "exclude", "capture")
ACCOUNTS = ("program_funding", "program_available", "entitlement_reserved", "entitlement_used")
SETTLEMENT_STATUSES = ("draft", "approved")
LINE_KINDS = ("capture", "adjustment", "exclusion")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN (" + ",".join(f"'{v}'" for v in values) + ")"


class Program(Base):
    """A government-purchased service programme (政府购买服务项目): region, period, budget, covered services."""

    __tablename__ = "programs"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    region_code: Mapped[str] = mapped_column(String(6), index=True)
    period_start: Mapped[date] = mapped_column(Date)
    period_end: Mapped[date] = mapped_column(Date)
    budget_fen: Mapped[int] = mapped_column(BigInteger)
    reserved_fen: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    used_fen: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    covered_services: Mapped[list[str]] = mapped_column(ARRAY(String(40)))
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (
        CheckConstraint("region_code ~ '^[0-9]{6}$'", name="region_code_shape"),
        CheckConstraint("period_start <= period_end", name="period_ordered"),
        CheckConstraint("budget_fen >= 0 AND reserved_fen >= 0 AND used_fen >= 0", name="amounts_not_negative"),
        CheckConstraint("reserved_fen + used_fen <= budget_fen", name="budget_not_overdrawn"),
        CheckConstraint("cardinality(covered_services) >= 1", name="covers_a_service"),
        Index("ix_programs_period_end", "period_end", "id"),
    )


class ProgramRule(Base):
    """One eligibility rule; all its conditions apply. The highest quota among an elder's matching rules wins."""

    __tablename__ = "program_rules"

    program_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("programs.id"), primary_key=True)
    position: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    category: Mapped[str | None] = mapped_column(String(20))
    assessment_level_min: Mapped[int | None] = mapped_column(SmallInteger)
    min_age: Mapped[int | None] = mapped_column(SmallInteger)
    monthly_quota_fen: Mapped[int] = mapped_column(BigInteger)
    copay_percent: Mapped[int] = mapped_column(SmallInteger)

    __table_args__ = (
        CheckConstraint(
            "category IS NULL OR category IN ('tekun','dibao','gaoling','shineng','shizhi','duju','kongchao',"
            "'liushou','jisheng_tefu','youfu','zhongdu_canji')",
            name="category_known",
        ),
        CheckConstraint("assessment_level_min BETWEEN 0 AND 4", name="assessment_level_range"),
        CheckConstraint("min_age BETWEEN 0 AND 150", name="min_age_range"),
        CheckConstraint("monthly_quota_fen >= 0", name="quota_not_negative"),
        CheckConstraint("copay_percent BETWEEN 0 AND 100", name="copay_percent_range"),
    )


class Contract(Base):
    """An organisation's contract: with a programme (quota work) or none (a self-pay service area)."""

    __tablename__ = "contracts"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    organization_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id"), index=True)
    program_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("programs.id"), index=True)
    region_codes: Mapped[list[str]] = mapped_column(ARRAY(String(6)))
    service_codes: Mapped[list[str]] = mapped_column(ARRAY(String(40)))
    valid_from: Mapped[date] = mapped_column(Date)
    valid_to: Mapped[date] = mapped_column(Date)
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (
        CheckConstraint("valid_from <= valid_to", name="validity_ordered"),
        CheckConstraint("cardinality(region_codes) >= 1", name="covers_a_region"),
        CheckConstraint("cardinality(service_codes) >= 1", name="covers_a_service"),
    )


class Entitlement(Base):
    """An elder's monthly quota in one programme (免申即享: materialised when first needed, never applied for)."""

    __tablename__ = "entitlements"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    elder_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("elders.id"))
    program_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("programs.id"), index=True)
    month: Mapped[date] = mapped_column(Date)
    rule_position: Mapped[int] = mapped_column(SmallInteger)
    quota_fen: Mapped[int] = mapped_column(BigInteger)
    reserved_fen: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    used_fen: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    copay_percent: Mapped[int] = mapped_column(SmallInteger)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (
        UniqueConstraint("elder_id", "program_id", "month"),
        CheckConstraint("EXTRACT(DAY FROM month) = 1", name="month_first_day"),
        CheckConstraint("quota_fen >= 0 AND reserved_fen >= 0 AND used_fen >= 0", name="amounts_not_negative"),
        CheckConstraint("reserved_fen + used_fen <= quota_fen", name="quota_not_overdrawn"),
        CheckConstraint("copay_percent BETWEEN 0 AND 100", name="copay_percent_range"),
    )


class Reservation(Base):
    """What an order holds from the moment it was created: the price split into quota and co-pay."""

    __tablename__ = "billing_reservations"

    order_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    elder_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("elders.id"), index=True)
    program_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("programs.id"))
    entitlement_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("entitlements.id"), index=True)
    service_code: Mapped[str] = mapped_column(String(40))
    region_code: Mapped[str] = mapped_column(String(6))
    service_month: Mapped[date] = mapped_column(Date)
    price_fen: Mapped[int] = mapped_column(BigInteger)
    quota_fen: Mapped[int] = mapped_column(BigInteger)
    copay_fen: Mapped[int] = mapped_column(BigInteger)
    copay_percent: Mapped[int] = mapped_column(SmallInteger)
    status: Mapped[str] = mapped_column(String(10))
    reserved_at: Mapped[datetime]
    closed_at: Mapped[datetime | None]

    __table_args__ = (
        CheckConstraint(_in("status", RESERVATION_STATUSES), name="status_known"),
        CheckConstraint("price_fen >= 0 AND quota_fen >= 0 AND copay_fen >= 0", name="amounts_not_negative"),
        CheckConstraint("quota_fen + copay_fen = price_fen", name="split_adds_up"),
        CheckConstraint("(program_id IS NULL) = (entitlement_id IS NULL)", name="program_with_entitlement"),
        CheckConstraint("quota_fen = 0 OR entitlement_id IS NOT NULL", name="quota_has_entitlement"),
        CheckConstraint("copay_percent BETWEEN 0 AND 100", name="copay_percent_range"),
    )


class Capture(Base):
    """A billable visit: what the programme pays (quota) and the elder pays (co-pay) for it. Insert-only."""

    __tablename__ = "billing_captures"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    visit_id: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True)
    order_id: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True)
    elder_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("elders.id"))
    program_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("programs.id"))
    entitlement_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("entitlements.id"), index=True)
    organization_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id"))
    caregiver_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    service_code: Mapped[str] = mapped_column(String(40))
    service_month: Mapped[date] = mapped_column(Date)
    served_at: Mapped[datetime | None]
    billable_at: Mapped[datetime]
    price_fen: Mapped[int] = mapped_column(BigInteger)
    quota_fen: Mapped[int] = mapped_column(BigInteger)
    copay_fen: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        CheckConstraint("price_fen >= 0 AND quota_fen >= 0 AND copay_fen >= 0", name="amounts_not_negative"),
        CheckConstraint("quota_fen + copay_fen = price_fen", name="split_adds_up"),
        CheckConstraint("quota_fen = 0 OR entitlement_id IS NOT NULL", name="quota_has_entitlement"),
        Index("ix_billing_captures_statement", "program_id", "organization_id", "billable_at"),
    )


class Exclusion(Base):
    """A finished visit that is not billed, with the reason a statement shows. Insert-only."""

    __tablename__ = "billing_exclusions"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    visit_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    order_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    elder_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("elders.id"))
    program_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("programs.id"))
    organization_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id"))
    caregiver_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    service_code: Mapped[str] = mapped_column(String(40))
    service_month: Mapped[date] = mapped_column(Date)
    served_at: Mapped[datetime | None]
    price_fen: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(200))
    excluded_at: Mapped[datetime]

    __table_args__ = (
        UniqueConstraint("visit_id", "reason"),
        CheckConstraint("price_fen >= 0", name="price_not_negative"),
        Index("ix_billing_exclusions_statement", "program_id", "organization_id", "excluded_at"),
    )


class LedgerPosting(Base):
    """One balanced posting, idempotent by `key` (`<kind>:<order id>`, `fund:<programme id>`). Insert-only."""

    __tablename__ = "ledger_postings"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(80), unique=True)
    kind: Mapped[str] = mapped_column(String(10))
    order_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    program_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("programs.id"))
    posted_at: Mapped[datetime]

    __table_args__ = (CheckConstraint(_in("kind", POSTING_KINDS), name="kind_known"),)


class LedgerEntry(Base):
    """One leg of a posting; the legs of a posting sum to zero (a statement trigger checks it). Insert-only."""

    __tablename__ = "ledger_entries"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    posting_id: Mapped[int] = mapped_column(ForeignKey("ledger_postings.id"), index=True)
    account: Mapped[str] = mapped_column(String(24))
    account_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    amount_fen: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        CheckConstraint(_in("account", ACCOUNTS), name="account_known"),
        CheckConstraint("amount_fen <> 0", name="amount_not_zero"),
        Index("ix_ledger_entries_account", "account", "account_id"),
    )


class Settlement(Base):
    """A monthly statement of one organisation in one programme: draft, then approved (closed, immutable)."""

    __tablename__ = "settlements"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    program_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("programs.id"))
    organization_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id"), index=True)
    month: Mapped[date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(10))
    line_count: Mapped[int] = mapped_column(Integer, default=0)
    adjustment_count: Mapped[int] = mapped_column(Integer, default=0)
    exclusion_count: Mapped[int] = mapped_column(Integer, default=0)
    price_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    quota_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    copay_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    drafted_at: Mapped[datetime]
    approved_at: Mapped[datetime | None]
    approved_by: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (
        UniqueConstraint("program_id", "organization_id", "month"),
        CheckConstraint(_in("status", SETTLEMENT_STATUSES), name="status_known"),
        CheckConstraint("EXTRACT(DAY FROM month) = 1", name="month_first_day"),
        CheckConstraint("(status = 'approved') = (approved_at IS NOT NULL)", name="approved_has_time"),
        CheckConstraint("price_fen >= 0 AND quota_fen >= 0 AND copay_fen >= 0", name="totals_not_negative"),
        Index("ix_settlements_created", "created_at", "id"),
    )


class SettlementLine(Base):
    """A statement line: a capture (an `adjustment` when its service month is earlier than the statement's) or an
    exclusion with its reason. A snapshot: lines of an approved statement never change (triggers).

    Written only by `INSERT … SELECT` from the insert-only captures and exclusions, a million at a time: so no per-row
    foreign keys (they cost more than the insert itself). A statement trigger checks instead that every new line's
    statement exists and is a draft, and a statement with lines cannot be deleted; each capture and exclusion is on
    at most one statement (unique)."""

    __tablename__ = "settlement_lines"

    settlement_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    id: Mapped[int] = mapped_column(BigInteger, Identity())
    kind: Mapped[str] = mapped_column(String(10))
    capture_id: Mapped[int | None] = mapped_column(BigInteger)
    exclusion_id: Mapped[int | None] = mapped_column(BigInteger)
    visit_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    order_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    elder_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    caregiver_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    service_code: Mapped[str] = mapped_column(String(40))
    service_month: Mapped[date] = mapped_column(Date)
    served_at: Mapped[datetime | None]
    price_fen: Mapped[int] = mapped_column(BigInteger)
    quota_fen: Mapped[int] = mapped_column(BigInteger)
    copay_fen: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str | None] = mapped_column(String(200))

    __table_args__ = (
        PrimaryKeyConstraint("settlement_id", "id"),
        CheckConstraint(_in("kind", LINE_KINDS), name="kind_known"),
        CheckConstraint("(kind = 'exclusion') = (exclusion_id IS NOT NULL)", name="exclusion_has_source"),
        CheckConstraint("(kind <> 'exclusion') = (capture_id IS NOT NULL)", name="capture_has_source"),
        CheckConstraint("price_fen >= 0 AND quota_fen >= 0 AND copay_fen >= 0", name="amounts_not_negative"),
        Index("uq_settlement_lines_capture_id", "capture_id", unique=True,
              postgresql_where=text("capture_id IS NOT NULL")),
        Index("uq_settlement_lines_exclusion_id", "exclusion_id", unique=True,
              postgresql_where=text("exclusion_id IS NOT NULL")),
    )
