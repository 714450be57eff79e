"""dispatch: the caregiver app's live stream and mobile push

`ix_outbox_caregiver_seq`: the outbox by the `caregiver_id` its payload carries, then `stream_seq`, so the
caregiver app's stream replays one caregiver's events after a `Last-Event-ID` without reading anyone else's.

`push_notifications`: pushes to caregivers' phones (new offers, cancelled orders), queued by the outbox relay after
commit, one per outbox event, sent through the push provider's webhook with retries (dispatch/push.py). Titles and
bodies carry the service's name only, data the order and offer ids: no personal data.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.TIMESTAMP(timezone=True)


def upgrade() -> None:
    op.create_index("ix_outbox_caregiver_seq", "outbox", [sa.text("(payload ->> 'caregiver_id')"), "stream_seq"],
                    postgresql_where=sa.text("(payload ->> 'caregiver_id') IS NOT NULL"))
    op.create_table(
        "push_notifications",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("outbox_id", sa.BigInteger(), nullable=False),
        sa.Column("caregiver_id", sa.Uuid(), nullable=False),
        sa.Column("title", sa.String(100), nullable=False),
        sa.Column("body", sa.String(300), nullable=False),
        sa.Column("data", postgresql.JSONB(), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("next_attempt_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=True),
        sa.Column("sent_at", TS, nullable=True),
        sa.Column("last_error", sa.String(300), nullable=True),
        sa.CheckConstraint("status IN ('pending','sent','failed','stale')",
                           name=op.f("ck_push_notifications_status_known")),
        sa.ForeignKeyConstraint(["caregiver_id"], ["caregivers.id"],
                                name=op.f("fk_push_notifications_caregiver_id_caregivers")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_push_notifications")),
        sa.UniqueConstraint("outbox_id", name=op.f("uq_push_notifications_outbox_id")),
    )
    op.create_index(op.f("ix_push_notifications_caregiver_id"), "push_notifications", ["caregiver_id"])
    op.create_index("ix_push_notifications_due", "push_notifications", ["next_attempt_at"],
                    postgresql_where=sa.text("status = 'pending'"))
    # the service's role (`vnh_app`) gets SELECT/INSERT/UPDATE/DELETE on the table and USAGE on its identity
    # sequence from `vnh migrate` (kernel.migrate.apply_grants, run after every upgrade), as every data table does


def downgrade() -> None:
    op.drop_index("ix_push_notifications_due", table_name="push_notifications")
    op.drop_index(op.f("ix_push_notifications_caregiver_id"), table_name="push_notifications")
    op.drop_table("push_notifications")
    op.drop_index("ix_outbox_caregiver_seq", table_name="outbox")
