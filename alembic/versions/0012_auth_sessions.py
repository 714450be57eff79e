"""auth: per-user token generation (revocation of every token of a user), soft deletion, password age and history,
TOTP second factor with recovery codes, lock-out per account and source address

`token_generation`: tokens carry the generation they were issued at (`gen`); deactivation, lock-out, deletion,
a password change and "log out everywhere" bump it, so older tokens are refused on the next request (kernel/auth.py,
`SessionGuard`; Redis holds the current value, this column is the truth when Redis lacks it).
`deleted_at`: a deleted account keeps its row (the audit log names it) and can never log in again.
`password_changed_at`, `password_history` (argon2 hashes of the previous passwords, newest first, at most 5).
`totp_secret_enc`: the RFC 6238 secret sealed with the personal-data cipher (context `users.totp_secret`);
`totp_enabled_at`: set once the first code was checked; `recovery_codes`: argon2 hashes of unused recovery codes.
`login_failures`: failed logins per (account, source address); 5 lock that pair for 30 minutes, and the account
itself is locked only after failures from several addresses (kernel/auth.py `authenticate`).

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("users", sa.Column("token_generation", sa.Integer(), server_default="0", nullable=False))
    op.add_column("users", sa.Column("deleted_at", sa.TIMESTAMP(timezone=True), nullable=True))
    op.add_column("users", sa.Column("password_changed_at", sa.TIMESTAMP(timezone=True), nullable=True))
    # existing passwords' age counts from the upgrade: no account is sent to change its password on the spot
    op.execute("UPDATE users SET password_changed_at = now()")
    op.add_column("users", sa.Column("password_history", postgresql.ARRAY(sa.String(length=200)),
                                     server_default="{}", nullable=False))
    op.add_column("users", sa.Column("totp_secret_enc", sa.Text(), nullable=True))
    op.add_column("users", sa.Column("totp_enabled_at", sa.TIMESTAMP(timezone=True), nullable=True))
    op.add_column("users", sa.Column("recovery_codes", postgresql.ARRAY(sa.String(length=200)),
                                     server_default="{}", nullable=False))
    op.create_table(
        "login_failures",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("failures", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_failure_at", sa.TIMESTAMP(timezone=True), nullable=False),
        sa.Column("locked_until", sa.TIMESTAMP(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_login_failures_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id", "source", name=op.f("pk_login_failures")),
    )


def downgrade() -> None:
    op.drop_table("login_failures")
    for column in ("recovery_codes", "totp_enabled_at", "totp_secret_enc", "password_history", "password_changed_at",
                   "deleted_at", "token_generation"):
        op.drop_column("users", column)
