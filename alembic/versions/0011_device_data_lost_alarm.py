"""devices: the `data_lost` alarm (events a device numbered with `seq` that never reached vnh), one open per device
like `device_offline`.

Only the alarms' type CHECK changes; the new alarm lives in the existing `alarms` table, whose grants to `vnh_app`
(migration 0004) are unchanged.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD = "type IN ('sos','fall','heart_rate','spo2','geofence','low_battery','device_offline')"
NEW = "type IN ('sos','fall','heart_rate','spo2','geofence','low_battery','device_offline','data_lost')"


def upgrade() -> None:
    op.drop_constraint(op.f("ck_alarms_type_known"), "alarms", type_="check")
    op.create_check_constraint(op.f("ck_alarms_type_known"), "alarms", NEW)


def downgrade() -> None:
    op.execute("DELETE FROM alarm_notifications WHERE alarm_id IN (SELECT id FROM alarms WHERE type = 'data_lost')")
    op.execute("DELETE FROM alarms WHERE type = 'data_lost'")
    op.drop_constraint(op.f("ck_alarms_type_known"), "alarms", type_="check")
    op.create_check_constraint(op.f("ck_alarms_type_known"), "alarms", OLD)
