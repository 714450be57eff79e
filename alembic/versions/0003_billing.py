"""billing: programmes, rules, contracts, entitlements, reservations, captures, exclusions, ledger, settlements

Hand-written (the metadata holds other domains' tables too). Besides the tables and their CHECKs (no entitlement or
budget can be overdrawn, whatever the code path), triggers that keep the ledger, captures and exclusions insert-only,
refuse a ledger posting whose legs do not sum to zero, and keep approved statements and their lines immutable.

Revision ID: 0003
Revises: 0001
Create Date: 2026-11-23 19:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = ("billing",)
depends_on: str | Sequence[str] | None = None

CATEGORIES = ("'tekun','dibao','gaoling','shineng','shizhi','duju','kongchao','liushou','jisheng_tefu','youfu',"
              "'zhongdu_canji'")

TRIGGERS = [
    # Ledger, captures and exclusions are insert-only: corrections are new rows, never edits.
    """CREATE FUNCTION vnh_billing_insert_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION '% is insert-only (% refused)', TG_TABLE_NAME, TG_OP USING ERRCODE = 'raise_exception';
    END $$""",
    *[
        stmt
        for table in ("ledger_postings", "ledger_entries", "billing_captures", "billing_exclusions")
        for stmt in (
            f"CREATE TRIGGER {table}_insert_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION vnh_billing_insert_only()",
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION vnh_billing_insert_only()",
        )
    ],
    # Double entry: the legs of every posting touched by a statement sum to zero when the statement ends.
    """CREATE FUNCTION vnh_ledger_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE unbalanced bigint;
    BEGIN
        SELECT e.posting_id INTO unbalanced
          FROM ledger_entries e
         WHERE e.posting_id IN (SELECT DISTINCT posting_id FROM new_entries)
         GROUP BY e.posting_id
        HAVING sum(e.amount_fen) <> 0
         LIMIT 1;
        IF unbalanced IS NOT NULL THEN
            RAISE EXCEPTION 'ledger posting % does not balance', unbalanced USING ERRCODE = 'check_violation';
        END IF;
        RETURN NULL;
    END $$""",
    "CREATE TRIGGER ledger_entries_balanced AFTER INSERT ON ledger_entries REFERENCING NEW TABLE AS new_entries "
    "FOR EACH STATEMENT EXECUTE FUNCTION vnh_ledger_balanced()",
    # An approved statement is closed: no change to it, no line added, changed or removed.
    """CREATE FUNCTION vnh_settlement_closed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF OLD.status = 'approved' THEN
            RAISE EXCEPTION 'settlement % is approved and cannot change', OLD.id USING ERRCODE = 'raise_exception';
        END IF;
        IF TG_OP = 'DELETE' THEN
            IF EXISTS (SELECT 1 FROM settlement_lines WHERE settlement_id = OLD.id) THEN
                RAISE EXCEPTION 'settlement % has lines', OLD.id USING ERRCODE = 'foreign_key_violation';
            END IF;
            RETURN OLD;
        END IF;
        RETURN NEW;
    END $$""",
    "CREATE TRIGGER settlements_closed BEFORE UPDATE OR DELETE ON settlements "
    "FOR EACH ROW EXECUTE FUNCTION vnh_settlement_closed()",
    """CREATE FUNCTION vnh_settlement_lines_closed() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE closed uuid;
    BEGIN
        IF TG_OP = 'INSERT' THEN
            -- one check per statement instead of a foreign key per row: the statement exists and is a draft
            SELECT n.settlement_id INTO closed FROM (SELECT DISTINCT settlement_id FROM changed_lines) n
              LEFT JOIN settlements s ON s.id = n.settlement_id
             WHERE s.id IS NULL OR s.status = 'approved' LIMIT 1;
        ELSE
            SELECT s.id INTO closed FROM settlements s
             WHERE s.status = 'approved' AND s.id IN (SELECT DISTINCT settlement_id FROM previous_lines) LIMIT 1;
        END IF;
        IF closed IS NOT NULL THEN
            RAISE EXCEPTION 'settlement % is approved or missing: its lines cannot change', closed
                USING ERRCODE = 'raise_exception';
        END IF;
        RETURN NULL;
    END $$""",
    "CREATE TRIGGER settlement_lines_insert_closed AFTER INSERT ON settlement_lines "
    "REFERENCING NEW TABLE AS changed_lines FOR EACH STATEMENT EXECUTE FUNCTION vnh_settlement_lines_closed()",
    "CREATE TRIGGER settlement_lines_update_closed AFTER UPDATE ON settlement_lines "
    "REFERENCING OLD TABLE AS previous_lines FOR EACH STATEMENT EXECUTE FUNCTION vnh_settlement_lines_closed()",
    "CREATE TRIGGER settlement_lines_delete_closed AFTER DELETE ON settlement_lines "
    "REFERENCING OLD TABLE AS previous_lines FOR EACH STATEMENT EXECUTE FUNCTION vnh_settlement_lines_closed()",
    "CREATE TRIGGER settlement_lines_no_truncate BEFORE TRUNCATE ON settlement_lines "
    "FOR EACH STATEMENT EXECUTE FUNCTION vnh_billing_insert_only()",
]


def _now() -> sa.Column[sa.TIMESTAMP]:
    return sa.Column("created_at", sa.TIMESTAMP(timezone=True), server_default=sa.text("now()"), nullable=False)


def _ts(name: str, nullable: bool = False) -> sa.Column[sa.TIMESTAMP]:
    return sa.Column(name, sa.TIMESTAMP(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "programs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("region_code", sa.String(6), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("period_end", sa.Date(), nullable=False),
        sa.Column("budget_fen", sa.BigInteger(), nullable=False),
        sa.Column("reserved_fen", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("used_fen", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("covered_services", sa.ARRAY(sa.String(40)), nullable=False),
        sa.Column("created_by", sa.String(100), nullable=False),
        _now(),
        sa.CheckConstraint("region_code ~ '^[0-9]{6}$'", name=op.f("ck_programs_region_code_shape")),
        sa.CheckConstraint("period_start <= period_end", name=op.f("ck_programs_period_ordered")),
        sa.CheckConstraint("budget_fen >= 0 AND reserved_fen >= 0 AND used_fen >= 0",
                           name=op.f("ck_programs_amounts_not_negative")),
        sa.CheckConstraint("reserved_fen + used_fen <= budget_fen", name=op.f("ck_programs_budget_not_overdrawn")),
        sa.CheckConstraint("cardinality(covered_services) >= 1", name=op.f("ck_programs_covers_a_service")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_programs")),
    )
    op.create_index(op.f("ix_programs_region_code"), "programs", ["region_code"])
    op.create_index("ix_programs_period_end", "programs", ["period_end", "id"])

    op.create_table(
        "program_rules",
        sa.Column("program_id", sa.Uuid(), nullable=False),
        sa.Column("position", sa.SmallInteger(), nullable=False),
        sa.Column("category", sa.String(20), nullable=True),
        sa.Column("assessment_level_min", sa.SmallInteger(), nullable=True),
        sa.Column("min_age", sa.SmallInteger(), nullable=True),
        sa.Column("monthly_quota_fen", sa.BigInteger(), nullable=False),
        sa.Column("copay_percent", sa.SmallInteger(), nullable=False),
        sa.CheckConstraint(f"category IS NULL OR category IN ({CATEGORIES})",
                           name=op.f("ck_program_rules_category_known")),
        sa.CheckConstraint("assessment_level_min BETWEEN 0 AND 4",
                           name=op.f("ck_program_rules_assessment_level_range")),
        sa.CheckConstraint("min_age BETWEEN 0 AND 150", name=op.f("ck_program_rules_min_age_range")),
        sa.CheckConstraint("monthly_quota_fen >= 0", name=op.f("ck_program_rules_quota_not_negative")),
        sa.CheckConstraint("copay_percent BETWEEN 0 AND 100", name=op.f("ck_program_rules_copay_percent_range")),
        sa.ForeignKeyConstraint(["program_id"], ["programs.id"], name=op.f("fk_program_rules_program_id_programs")),
        sa.PrimaryKeyConstraint("program_id", "position", name=op.f("pk_program_rules")),
    )

    op.create_table(
        "contracts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("program_id", sa.Uuid(), nullable=True),
        sa.Column("region_codes", sa.ARRAY(sa.String(6)), nullable=False),
        sa.Column("service_codes", sa.ARRAY(sa.String(40)), nullable=False),
        sa.Column("valid_from", sa.Date(), nullable=False),
        sa.Column("valid_to", sa.Date(), nullable=False),
        sa.Column("created_by", sa.String(100), nullable=False),
        _now(),
        sa.CheckConstraint("valid_from <= valid_to", name=op.f("ck_contracts_validity_ordered")),
        sa.CheckConstraint("cardinality(region_codes) >= 1", name=op.f("ck_contracts_covers_a_region")),
        sa.CheckConstraint("cardinality(service_codes) >= 1", name=op.f("ck_contracts_covers_a_service")),
        sa.ForeignKeyConstraint(["organization_id"], ["organizations.id"],
                                name=op.f("fk_contracts_organization_id_organizations")),
        sa.ForeignKeyConstraint(["program_id"], ["programs.id"], name=op.f("fk_contracts_program_id_programs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contracts")),
    )
    op.create_index(op.f("ix_contracts_organization_id"), "contracts", ["organization_id"])
    op.create_index(op.f("ix_contracts_program_id"), "contracts", ["program_id"])

    op.create_table(
        "entitlements",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("elder_id", sa.Uuid(), nullable=False),
        sa.Column("program_id", sa.Uuid(), nullable=False),
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("rule_position", sa.SmallInteger(), nullable=False),
        sa.Column("quota_fen", sa.BigInteger(), nullable=False),
        sa.Column("reserved_fen", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("used_fen", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("copay_percent", sa.SmallInteger(), nullable=False),
        _now(),
        sa.CheckConstraint("EXTRACT(DAY FROM month) = 1", name=op.f("ck_entitlements_month_first_day")),
        sa.CheckConstraint("quota_fen >= 0 AND reserved_fen >= 0 AND used_fen >= 0",
                           name=op.f("ck_entitlements_amounts_not_negative")),
        sa.CheckConstraint("reserved_fen + used_fen <= quota_fen", name=op.f("ck_entitlements_quota_not_overdrawn")),
        sa.CheckConstraint("copay_percent BETWEEN 0 AND 100", name=op.f("ck_entitlements_copay_percent_range")),
        sa.ForeignKeyConstraint(["elder_id"], ["elders.id"], name=op.f("fk_entitlements_elder_id_elders")),
        sa.ForeignKeyConstraint(["program_id"], ["programs.id"], name=op.f("fk_entitlements_program_id_programs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_entitlements")),
        sa.UniqueConstraint("elder_id", "program_id", "month", name=op.f("uq_entitlements_elder_id_program_id_month")),
    )
    op.create_index(op.f("ix_entitlements_program_id"), "entitlements", ["program_id"])

    op.create_table(
        "billing_reservations",
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("elder_id", sa.Uuid(), nullable=False),
        sa.Column("program_id", sa.Uuid(), nullable=True),
        sa.Column("entitlement_id", sa.Uuid(), nullable=True),
        sa.Column("service_code", sa.String(40), nullable=False),
        sa.Column("region_code", sa.String(6), nullable=False),
        sa.Column("service_month", sa.Date(), nullable=False),
        sa.Column("price_fen", sa.BigInteger(), nullable=False),
        sa.Column("quota_fen", sa.BigInteger(), nullable=False),
        sa.Column("copay_fen", sa.BigInteger(), nullable=False),
        sa.Column("copay_percent", sa.SmallInteger(), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        _ts("reserved_at"),
        _ts("closed_at", nullable=True),
        sa.CheckConstraint("status IN ('reserved','released','excluded','captured')",
                           name=op.f("ck_billing_reservations_status_known")),
        sa.CheckConstraint("price_fen >= 0 AND quota_fen >= 0 AND copay_fen >= 0",
                           name=op.f("ck_billing_reservations_amounts_not_negative")),
        sa.CheckConstraint("quota_fen + copay_fen = price_fen", name=op.f("ck_billing_reservations_split_adds_up")),
        sa.CheckConstraint("(program_id IS NULL) = (entitlement_id IS NULL)",
                           name=op.f("ck_billing_reservations_program_with_entitlement")),
        sa.CheckConstraint("quota_fen = 0 OR entitlement_id IS NOT NULL",
                           name=op.f("ck_billing_reservations_quota_has_entitlement")),
        sa.CheckConstraint("copay_percent BETWEEN 0 AND 100",
                           name=op.f("ck_billing_reservations_copay_percent_range")),
        sa.ForeignKeyConstraint(["elder_id"], ["elders.id"], name=op.f("fk_billing_reservations_elder_id_elders")),
        sa.ForeignKeyConstraint(["program_id"], ["programs.id"],
                                name=op.f("fk_billing_reservations_program_id_programs")),
        sa.ForeignKeyConstraint(["entitlement_id"], ["entitlements.id"],
                                name=op.f("fk_billing_reservations_entitlement_id_entitlements")),
        sa.PrimaryKeyConstraint("order_id", name=op.f("pk_billing_reservations")),
    )
    op.create_index(op.f("ix_billing_reservations_elder_id"), "billing_reservations", ["elder_id"])
    op.create_index(op.f("ix_billing_reservations_entitlement_id"), "billing_reservations", ["entitlement_id"])

    op.create_table(
        "billing_captures",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("visit_id", sa.Uuid(), nullable=False),
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("elder_id", sa.Uuid(), nullable=False),
        sa.Column("program_id", sa.Uuid(), nullable=True),
        sa.Column("entitlement_id", sa.Uuid(), nullable=True),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("caregiver_id", sa.Uuid(), nullable=False),
        sa.Column("service_code", sa.String(40), nullable=False),
        sa.Column("service_month", sa.Date(), nullable=False),
        _ts("served_at", nullable=True),
        _ts("billable_at"),
        sa.Column("price_fen", sa.BigInteger(), nullable=False),
        sa.Column("quota_fen", sa.BigInteger(), nullable=False),
        sa.Column("copay_fen", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("price_fen >= 0 AND quota_fen >= 0 AND copay_fen >= 0",
                           name=op.f("ck_billing_captures_amounts_not_negative")),
        sa.CheckConstraint("quota_fen + copay_fen = price_fen", name=op.f("ck_billing_captures_split_adds_up")),
        sa.CheckConstraint("quota_fen = 0 OR entitlement_id IS NOT NULL",
                           name=op.f("ck_billing_captures_quota_has_entitlement")),
        sa.ForeignKeyConstraint(["elder_id"], ["elders.id"], name=op.f("fk_billing_captures_elder_id_elders")),
        sa.ForeignKeyConstraint(["program_id"], ["programs.id"], name=op.f("fk_billing_captures_program_id_programs")),
        sa.ForeignKeyConstraint(["entitlement_id"], ["entitlements.id"],
                                name=op.f("fk_billing_captures_entitlement_id_entitlements")),
        sa.ForeignKeyConstraint(["organization_id"], ["organizations.id"],
                                name=op.f("fk_billing_captures_organization_id_organizations")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_captures")),
        sa.UniqueConstraint("visit_id", name=op.f("uq_billing_captures_visit_id")),
        sa.UniqueConstraint("order_id", name=op.f("uq_billing_captures_order_id")),
    )
    op.create_index(op.f("ix_billing_captures_entitlement_id"), "billing_captures", ["entitlement_id"])
    op.create_index("ix_billing_captures_statement", "billing_captures",
                    ["program_id", "organization_id", "billable_at"])

    op.create_table(
        "billing_exclusions",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("visit_id", sa.Uuid(), nullable=False),
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("elder_id", sa.Uuid(), nullable=False),
        sa.Column("program_id", sa.Uuid(), nullable=True),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("caregiver_id", sa.Uuid(), nullable=False),
        sa.Column("service_code", sa.String(40), nullable=False),
        sa.Column("service_month", sa.Date(), nullable=False),
        _ts("served_at", nullable=True),
        sa.Column("price_fen", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(200), nullable=False),
        _ts("excluded_at"),
        sa.CheckConstraint("price_fen >= 0", name=op.f("ck_billing_exclusions_price_not_negative")),
        sa.ForeignKeyConstraint(["elder_id"], ["elders.id"], name=op.f("fk_billing_exclusions_elder_id_elders")),
        sa.ForeignKeyConstraint(["program_id"], ["programs.id"],
                                name=op.f("fk_billing_exclusions_program_id_programs")),
        sa.ForeignKeyConstraint(["organization_id"], ["organizations.id"],
                                name=op.f("fk_billing_exclusions_organization_id_organizations")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_exclusions")),
        sa.UniqueConstraint("visit_id", "reason", name=op.f("uq_billing_exclusions_visit_id_reason")),
    )
    op.create_index(op.f("ix_billing_exclusions_visit_id"), "billing_exclusions", ["visit_id"])
    op.create_index("ix_billing_exclusions_statement", "billing_exclusions",
                    ["program_id", "organization_id", "excluded_at"])

    op.create_table(
        "ledger_postings",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("key", sa.String(80), nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("order_id", sa.Uuid(), nullable=True),
        sa.Column("program_id", sa.Uuid(), nullable=False),
        _ts("posted_at"),
        sa.CheckConstraint("kind IN ('fund','reserve','release','exclude','capture')",
                           name=op.f("ck_ledger_postings_kind_known")),
        sa.ForeignKeyConstraint(["program_id"], ["programs.id"], name=op.f("fk_ledger_postings_program_id_programs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_postings")),
        sa.UniqueConstraint("key", name=op.f("uq_ledger_postings_key")),
    )

    op.create_table(
        "ledger_entries",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("posting_id", sa.BigInteger(), nullable=False),
        sa.Column("account", sa.String(24), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "account IN ('program_funding','program_available','entitlement_reserved','entitlement_used')",
            name=op.f("ck_ledger_entries_account_known")),
        sa.CheckConstraint("amount_fen <> 0", name=op.f("ck_ledger_entries_amount_not_zero")),
        sa.ForeignKeyConstraint(["posting_id"], ["ledger_postings.id"],
                                name=op.f("fk_ledger_entries_posting_id_ledger_postings")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_entries")),
    )
    op.create_index(op.f("ix_ledger_entries_posting_id"), "ledger_entries", ["posting_id"])
    op.create_index("ix_ledger_entries_account", "ledger_entries", ["account", "account_id"])

    op.create_table(
        "settlements",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("program_id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("line_count", sa.Integer(), nullable=False),
        sa.Column("adjustment_count", sa.Integer(), nullable=False),
        sa.Column("exclusion_count", sa.Integer(), nullable=False),
        sa.Column("price_fen", sa.BigInteger(), nullable=False),
        sa.Column("quota_fen", sa.BigInteger(), nullable=False),
        sa.Column("copay_fen", sa.BigInteger(), nullable=False),
        _ts("drafted_at"),
        _ts("approved_at", nullable=True),
        sa.Column("approved_by", sa.String(100), nullable=True),
        _now(),
        sa.CheckConstraint("status IN ('draft','approved')", name=op.f("ck_settlements_status_known")),
        sa.CheckConstraint("EXTRACT(DAY FROM month) = 1", name=op.f("ck_settlements_month_first_day")),
        sa.CheckConstraint("(status = 'approved') = (approved_at IS NOT NULL)",
                           name=op.f("ck_settlements_approved_has_time")),
        sa.CheckConstraint("price_fen >= 0 AND quota_fen >= 0 AND copay_fen >= 0",
                           name=op.f("ck_settlements_totals_not_negative")),
        sa.ForeignKeyConstraint(["program_id"], ["programs.id"], name=op.f("fk_settlements_program_id_programs")),
        sa.ForeignKeyConstraint(["organization_id"], ["organizations.id"],
                                name=op.f("fk_settlements_organization_id_organizations")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_settlements")),
        sa.UniqueConstraint("program_id", "organization_id", "month", name=op.f("uq_settlements_program_id_organization_id_month")),
    )
    op.create_index(op.f("ix_settlements_organization_id"), "settlements", ["organization_id"])
    op.create_index("ix_settlements_created", "settlements", ["created_at", "id"])

    op.create_table(
        "settlement_lines",
        sa.Column("settlement_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("capture_id", sa.BigInteger(), nullable=True),
        sa.Column("exclusion_id", sa.BigInteger(), nullable=True),
        sa.Column("visit_id", sa.Uuid(), nullable=False),
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("elder_id", sa.Uuid(), nullable=False),
        sa.Column("caregiver_id", sa.Uuid(), nullable=False),
        sa.Column("service_code", sa.String(40), nullable=False),
        sa.Column("service_month", sa.Date(), nullable=False),
        _ts("served_at", nullable=True),
        sa.Column("price_fen", sa.BigInteger(), nullable=False),
        sa.Column("quota_fen", sa.BigInteger(), nullable=False),
        sa.Column("copay_fen", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(200), nullable=True),
        sa.CheckConstraint("kind IN ('capture','adjustment','exclusion')", name=op.f("ck_settlement_lines_kind_known")),
        sa.CheckConstraint("(kind = 'exclusion') = (exclusion_id IS NOT NULL)",
                           name=op.f("ck_settlement_lines_exclusion_has_source")),
        sa.CheckConstraint("(kind <> 'exclusion') = (capture_id IS NOT NULL)",
                           name=op.f("ck_settlement_lines_capture_has_source")),
        sa.CheckConstraint("price_fen >= 0 AND quota_fen >= 0 AND copay_fen >= 0",
                           name=op.f("ck_settlement_lines_amounts_not_negative")),
        # no per-row foreign keys: a statement trigger checks the statements of new lines (see TRIGGERS)
        sa.PrimaryKeyConstraint("settlement_id", "id", name=op.f("pk_settlement_lines")),
    )
    op.create_index("uq_settlement_lines_capture_id", "settlement_lines", ["capture_id"], unique=True,
                    postgresql_where=sa.text("capture_id IS NOT NULL"))
    op.create_index("uq_settlement_lines_exclusion_id", "settlement_lines", ["exclusion_id"], unique=True,
                    postgresql_where=sa.text("exclusion_id IS NOT NULL"))

    for statement in TRIGGERS:
        op.execute(statement)


def downgrade() -> None:
    for table in ("settlement_lines", "settlements", "ledger_entries", "ledger_postings", "billing_exclusions",
                  "billing_captures", "billing_reservations", "entitlements", "contracts", "program_rules",
                  "programs"):
        op.drop_table(table)
    for function in ("vnh_settlement_lines_closed", "vnh_settlement_closed", "vnh_ledger_balanced",
                     "vnh_billing_insert_only"):
        op.execute(f"DROP FUNCTION IF EXISTS {function}()")
