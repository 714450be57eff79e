"""auth: the last accepted TOTP time step per user, so a code is accepted at most once (RFC 6238 §5.2)

`totp_last_step`: the RFC 6238 counter (Unix time // 30) of the last TOTP code accepted at login or at enrolment;
a code is accepted only for a later step (kernel/auth.py `_accept_totp_step`). NULL: none yet. The table's grants
to `vnh_app` cover the new column.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("users", sa.Column("totp_last_step", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    op.drop_column("users", "totp_last_step")
