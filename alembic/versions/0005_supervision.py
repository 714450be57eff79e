"""supervision: credit blacklist, random inspections (双随机) and their call-back results

Revision ID: 0005
Revises: 0002
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = ("supervision",)
depends_on: str | Sequence[str] | None = None

TS = sa.TIMESTAMP(timezone=True)


def upgrade() -> None:
    op.create_table(
        "blacklist",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("subject_kind", sa.String(12), nullable=False),
        sa.Column("subject_id", sa.Uuid(), nullable=False),
        sa.Column("reason", sa.String(1000), nullable=False),
        sa.Column("valid_from", TS, nullable=False),
        sa.Column("valid_to", TS, nullable=True),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("lifted_at", TS, nullable=True),
        sa.Column("lifted_by", sa.String(100), nullable=True),
        sa.Column("lift_reason", sa.String(1000), nullable=True),
        sa.CheckConstraint("subject_kind IN ('organization','caregiver')", name=op.f("ck_blacklist_subject_kind_known")),
        sa.CheckConstraint("valid_to IS NULL OR valid_to > valid_from", name=op.f("ck_blacklist_period_ordered")),
        sa.CheckConstraint("(lifted_at IS NULL) = (lifted_by IS NULL)", name=op.f("ck_blacklist_lift_complete")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_blacklist")),
    )
    op.create_index("ix_blacklist_subject", "blacklist", ["subject_kind", "subject_id"])
    op.create_table(
        "inspections",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("region_code", sa.String(12), nullable=False),
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("sample_size", sa.Integer(), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("population", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.CheckConstraint("sample_size > 0", name=op.f("ck_inspections_sample_size_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inspections")),
    )
    op.create_table(
        "inspection_items",
        sa.Column("inspection_id", sa.Uuid(), nullable=False),
        sa.Column("visit_id", sa.Uuid(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("reached", sa.Boolean(), nullable=True),
        sa.Column("confirmed", sa.Boolean(), nullable=True),
        sa.Column("notes", sa.String(2000), nullable=True),
        sa.Column("checked_by", sa.String(100), nullable=True),
        sa.Column("checked_at", TS, nullable=True),
        sa.ForeignKeyConstraint(["inspection_id"], ["inspections.id"],
                                name=op.f("fk_inspection_items_inspection_id_inspections")),
        sa.ForeignKeyConstraint(["visit_id"], ["visits.id"], name=op.f("fk_inspection_items_visit_id_visits")),
        sa.PrimaryKeyConstraint("inspection_id", "visit_id", name=op.f("pk_inspection_items")),
    )
    op.create_index("ix_inspection_items_pending", "inspection_items", ["inspection_id"],
                    postgresql_where=sa.text("checked_at IS NULL"))


def downgrade() -> None:
    op.drop_table("inspection_items")
    op.drop_table("inspections")
    op.drop_index("ix_blacklist_subject", table_name="blacklist")
    op.drop_table("blacklist")
