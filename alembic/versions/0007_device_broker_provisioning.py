"""devices: provisioning of newly registered devices on a running Mosquitto (dynamic-security `createClient`);
vital signs and positions of stored events encrypted at rest

`broker_secret`: the device token encrypted with the personal-data cipher (kernel.personal_data, context
`devices.broker_secret`), kept only from registration until the periodic pass has created the device's dynsec client
(whose `createClient` takes the plaintext password), then cleared; set only when a Mosquitto admin is configured.
`broker_created_at`: when the pass created the client and its role on the broker.

`device_events.health_enc`: an event's `value`, `lat` and `lon` sealed together with the same cipher (context
`devices.event_health`, devices/health.py); new rows leave those plaintext columns NULL. Added on the partitioned
parent, so every partition (and those `vnh_device_events_partition` creates with LIKE) has it.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("devices", sa.Column("broker_secret", sa.Text(), nullable=True))
    op.add_column("devices", sa.Column("broker_created_at", sa.TIMESTAMP(timezone=True), nullable=True))
    op.create_index("ix_devices_broker_pending", "devices", ["created_at"],
                    postgresql_where=sa.text("broker_secret IS NOT NULL"))
    op.add_column("device_events", sa.Column("health_enc", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("device_events", "health_enc")
    op.drop_index("ix_devices_broker_pending", table_name="devices")
    op.drop_column("devices", "broker_created_at")
    op.drop_column("devices", "broker_secret")
