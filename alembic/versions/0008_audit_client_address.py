"""audit rows carry the HTTP client's address and user agent

`source_ip` is the client address the server saw (the ASGI scope's `client`, after uvicorn's trusted-proxy
handling), `user_agent` the request's User-Agent, truncated; both NULL for work that came from no HTTP request and
for rows written before this revision. When present they are part of the sealed hash (kernel/audit.py), so rows
sealed earlier keep verifying. The app role's table grants (INSERT, SELECT) cover the new columns.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("audit_log", sa.Column("source_ip", sa.String(64), nullable=True))
    op.add_column("audit_log", sa.Column("user_agent", sa.String(256), nullable=True))


def downgrade() -> None:
    op.drop_column("audit_log", "user_agent")
    op.drop_column("audit_log", "source_ip")
