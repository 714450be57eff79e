"""devices: event keys (deduplication), events partitioned by month, dead letters, alarms and their notifications,
monitoring settings and rule state, downlink commands; device columns for buttons, supervision and `seq`

Hand-written (the metadata holds other domains' tables too). `vnh_device_events_partition(month)` creates one
month's partition of `device_events` as the owner (SECURITY DEFINER: the app role has no DDL rights), moving any
rows of that month out of the DEFAULT partition first — PostgreSQL refuses a partition for rows already in DEFAULT.
The service calls it for the current month and two ahead (`devices.partitions`), with its own clock.

Revision ID: 0004
Revises: 0002
Create Date: 2026-11-24 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = ("devices",)
depends_on: str | Sequence[str] | None = None

TS = sa.TIMESTAMP(timezone=True)

PARTITION_FUNCTION = """
CREATE FUNCTION vnh_device_events_partition(month date) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    first_day date := date_trunc('month', month)::date;
    next_day date := (date_trunc('month', month) + interval '1 month')::date;
    lower_bound text := to_char(first_day, 'YYYY-MM-DD') || ' 00:00:00+00';
    upper_bound text := to_char(next_day, 'YYYY-MM-DD') || ' 00:00:00+00';
    part text := 'device_events_' || to_char(first_day, 'YYYY_MM');
BEGIN
    IF to_regclass('public.' || part) IS NOT NULL THEN
        RETURN false;
    END IF;
    -- one creator at a time; the ingest keeps writing (rows of other months are not touched)
    PERFORM pg_advisory_xact_lock(7761000004);
    IF to_regclass('public.' || part) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE device_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part);
    EXECUTE format('WITH moved AS (DELETE FROM device_events_default WHERE received_at >= %L::timestamptz '
                   'AND received_at < %L::timestamptz RETURNING *) INSERT INTO %I SELECT * FROM moved',
                   lower_bound, upper_bound, part);
    EXECUTE format('ALTER TABLE device_events ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                   part, lower_bound, upper_bound);
    RETURN true;
END $$
"""


def upgrade() -> None:
    # --- devices: buttons, supervision interval, sequence tracking, status time, token look-up -----------------
    op.add_column("devices", sa.Column("buttons", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"),
                                       nullable=False))
    op.add_column("devices", sa.Column("heartbeat_s", sa.Integer(), nullable=True))
    op.add_column("devices", sa.Column("last_seq", sa.BigInteger(), nullable=True))
    op.add_column("devices", sa.Column("seq_missed", sa.BigInteger(), server_default=sa.text("0"), nullable=False))
    op.add_column("devices", sa.Column("status_at", TS, nullable=True))
    op.add_column("devices", sa.Column("broker_password", postgresql.JSONB(), nullable=True))
    op.add_column("devices", sa.Column("broker_disabled_at", TS, nullable=True))
    op.create_check_constraint(op.f("ck_devices_heartbeat_range"), "devices", "heartbeat_s BETWEEN 10 AND 86400")
    op.create_index("ix_devices_token_hash", "devices", ["token_hash"])

    # --- deduplication keys (not partitioned: unique across months) ---------------------------------------------
    op.create_table(
        "device_event_keys",
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("payload_hash", sa.String(64), nullable=False),
        sa.Column("received_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("device_id", "event_id", "payload_hash", name=op.f("pk_device_event_keys")),
    )
    op.create_index("ix_device_event_keys_received_at", "device_event_keys", ["received_at"])

    # --- events, partitioned by received month ------------------------------------------------------------------
    op.execute("CREATE SEQUENCE device_events_id_seq")
    op.create_table(
        "device_events",
        sa.Column("id", sa.BigInteger(), server_default=sa.text("nextval('device_events_id_seq')"), nullable=False),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("elder_id", sa.Uuid(), nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("type", sa.String(20), nullable=False),
        sa.Column("ts", TS, nullable=False),
        sa.Column("lat", sa.Float(), nullable=True),
        sa.Column("lon", sa.Float(), nullable=True),
        sa.Column("battery", sa.SmallInteger(), nullable=True),
        sa.Column("seq", sa.BigInteger(), nullable=True),
        sa.Column("value", postgresql.JSONB(), nullable=True),
        sa.Column("channel", sa.String(10), nullable=False),
        sa.Column("payload_hash", sa.String(64), nullable=False),
        sa.Column("note", sa.String(40), nullable=True),
        sa.PrimaryKeyConstraint("id", "received_at", name=op.f("pk_device_events")),
        postgresql_partition_by="RANGE (received_at)",
    )
    op.execute("ALTER SEQUENCE device_events_id_seq OWNED BY device_events.id")
    op.create_index("ix_device_events_device_received", "device_events", ["device_id", "received_at"])
    op.execute("CREATE TABLE device_events_default PARTITION OF device_events DEFAULT")
    op.execute(PARTITION_FUNCTION)
    # months around the migration: the service adds its own clock's months on start and monthly
    op.execute("SELECT vnh_device_events_partition((now() + make_interval(months => m))::date) "
               "FROM generate_series(0, 2) AS m")

    # --- dead letters -------------------------------------------------------------------------------------------
    op.create_table(
        "device_dead_letters",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("channel", sa.String(10), nullable=False),
        sa.Column("topic", sa.String(300), nullable=True),
        sa.Column("device_id", sa.String(64), nullable=True),
        sa.Column("region_code", sa.String(6), nullable=True),
        sa.Column("reason", sa.String(30), nullable=False),
        sa.Column("detail", sa.String(500), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("payload_size", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_dead_letters")),
    )
    op.create_index("ix_device_dead_letters_received_at", "device_dead_letters", ["received_at"])

    # --- alarms -------------------------------------------------------------------------------------------------
    op.create_table(
        "alarms",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("elder_id", sa.Uuid(), nullable=False),
        sa.Column("device_id", sa.String(64), nullable=True),
        sa.Column("region_code", sa.String(6), nullable=False),
        sa.Column("type", sa.String(20), nullable=False),
        sa.Column("severity", sa.String(10), nullable=False),
        sa.Column("status", sa.String(14), nullable=False),
        sa.Column("open_key", sa.String(64), nullable=False),
        sa.Column("source", sa.String(10), nullable=False),
        sa.Column("source_event_id", sa.String(64), nullable=True),
        sa.Column("details", postgresql.JSONB(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("raised_at", TS, nullable=False),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("device_ts", TS, nullable=True),
        sa.Column("last_at", TS, nullable=False),
        sa.Column("acknowledged_at", TS, nullable=True),
        sa.Column("acknowledged_by", sa.String(100), nullable=True),
        sa.Column("resolved_at", TS, nullable=True),
        sa.Column("resolved_by", sa.String(100), nullable=True),
        sa.Column("outcome", sa.String(12), nullable=True),
        sa.Column("notes", sa.String(1000), nullable=True),
        sa.Column("cancelled_by_elder_at", TS, nullable=True),
        sa.Column("order_id", sa.Uuid(), nullable=True),
        sa.Column("callback_order_id", sa.Uuid(), nullable=True),
        sa.Column("escalation_level", sa.SmallInteger(), nullable=False),
        sa.Column("next_escalation_at", TS, nullable=True),
        sa.CheckConstraint("type IN ('sos','fall','heart_rate','spo2','geofence','low_battery','device_offline')",
                           name=op.f("ck_alarms_type_known")),
        sa.CheckConstraint("severity IN ('critical','warning','info')", name=op.f("ck_alarms_severity_known")),
        sa.CheckConstraint("status IN ('open','acknowledged','resolved')", name=op.f("ck_alarms_status_known")),
        sa.CheckConstraint("outcome IN ('false_alarm','assisted','hospital','other')",
                           name=op.f("ck_alarms_outcome_known")),
        sa.CheckConstraint("source IN ('device','app','hotline','system')", name=op.f("ck_alarms_source_known")),
        sa.CheckConstraint("count >= 1", name=op.f("ck_alarms_count_positive")),
        sa.CheckConstraint("(status = 'resolved') = (resolved_at IS NOT NULL AND outcome IS NOT NULL)",
                           name=op.f("ck_alarms_resolution_complete")),
        sa.CheckConstraint("status <> 'acknowledged' OR acknowledged_at IS NOT NULL",
                           name=op.f("ck_alarms_acknowledged_has_time")),
        sa.ForeignKeyConstraint(["elder_id"], ["elders.id"], name=op.f("fk_alarms_elder_id_elders")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alarms")),
    )
    op.create_index(op.f("ix_alarms_elder_id"), "alarms", ["elder_id"])
    op.create_index(op.f("ix_alarms_region_code"), "alarms", ["region_code"])
    op.create_index("uq_alarms_one_open", "alarms", ["type", "open_key"], unique=True,
                    postgresql_where=sa.text("status <> 'resolved'"))
    op.create_index("ix_alarms_escalation_due", "alarms", ["next_escalation_at"],
                    postgresql_where=sa.text("status = 'open' AND next_escalation_at IS NOT NULL"))
    op.create_index("ix_alarms_raised", "alarms", ["raised_at", "id"])

    op.create_table(
        "alarm_notifications",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("alarm_id", sa.Uuid(), nullable=False),
        sa.Column("level", sa.SmallInteger(), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("next_attempt_at", TS, nullable=False),
        sa.Column("sent_at", TS, nullable=True),
        sa.Column("last_error", sa.String(300), nullable=True),
        sa.CheckConstraint("status IN ('pending','sent','failed')", name=op.f("ck_alarm_notifications_status_known")),
        sa.ForeignKeyConstraint(["alarm_id"], ["alarms.id"], name=op.f("fk_alarm_notifications_alarm_id_alarms")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alarm_notifications")),
    )
    op.create_index(op.f("ix_alarm_notifications_alarm_id"), "alarm_notifications", ["alarm_id"])
    op.create_index("ix_alarm_notifications_due", "alarm_notifications", ["next_attempt_at"],
                    postgresql_where=sa.text("status = 'pending'"))
    op.create_index("uq_alarm_notifications_level", "alarm_notifications", ["alarm_id", "level", "kind"],
                    unique=True)

    # --- monitoring settings and rule state ---------------------------------------------------------------------
    op.create_table(
        "elder_monitoring",
        sa.Column("elder_id", sa.Uuid(), nullable=False),
        sa.Column("heart_rate_min", sa.SmallInteger(), nullable=True),
        sa.Column("heart_rate_max", sa.SmallInteger(), nullable=True),
        sa.Column("heart_rate_for_s", sa.Integer(), nullable=False),
        sa.Column("spo2_min", sa.SmallInteger(), nullable=True),
        sa.Column("spo2_for_s", sa.Integer(), nullable=False),
        sa.Column("safe_zone", postgresql.JSONB(), nullable=True),
        sa.Column("heartbeat_s", sa.Integer(), nullable=True),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("updated_by", sa.String(100), nullable=False),
        sa.CheckConstraint("heart_rate_min IS NULL OR heart_rate_max IS NULL OR heart_rate_min < heart_rate_max",
                           name=op.f("ck_elder_monitoring_heart_rate_range")),
        sa.CheckConstraint("heartbeat_s BETWEEN 10 AND 86400", name=op.f("ck_elder_monitoring_heartbeat_range")),
        sa.ForeignKeyConstraint(["elder_id"], ["elders.id"], name=op.f("fk_elder_monitoring_elder_id_elders")),
        sa.PrimaryKeyConstraint("elder_id", name=op.f("pk_elder_monitoring")),
    )
    op.create_table(
        "device_rule_watch",
        sa.Column("elder_id", sa.Uuid(), nullable=False),
        sa.Column("rule", sa.String(80), nullable=False),
        sa.Column("out_since", TS, nullable=True),
        sa.Column("last_ts", TS, nullable=False),
        sa.Column("alarmed", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["elder_id"], ["elders.id"], name=op.f("fk_device_rule_watch_elder_id_elders")),
        sa.PrimaryKeyConstraint("elder_id", "rule", name=op.f("pk_device_rule_watch")),
    )

    # --- downlink commands --------------------------------------------------------------------------------------
    op.create_table(
        "device_commands",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("type", sa.String(20), nullable=False),
        sa.Column("body", postgresql.JSONB(), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("cause", sa.String(120), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("sent_at", TS, nullable=True),
        sa.Column("send_count", sa.Integer(), nullable=False),
        sa.Column("acknowledged_at", TS, nullable=True),
        sa.CheckConstraint("type IN ('notify','alarm_ack','config')", name=op.f("ck_device_commands_type_known")),
        sa.CheckConstraint("status IN ('queued','sent','acknowledged','expired')",
                           name=op.f("ck_device_commands_status_known")),
        sa.ForeignKeyConstraint(["device_id"], ["devices.device_id"],
                                name=op.f("fk_device_commands_device_id_devices")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_commands")),
        sa.UniqueConstraint("cause", name=op.f("uq_device_commands_cause")),
    )
    op.create_index(op.f("ix_device_commands_device_id"), "device_commands", ["device_id"])
    op.create_index("ix_device_commands_unsent", "device_commands", ["device_id", "created_at"],
                    postgresql_where=sa.text("status IN ('queued','sent')"))


def downgrade() -> None:
    for table in ("device_commands", "device_rule_watch", "elder_monitoring", "alarm_notifications", "alarms",
                  "device_dead_letters"):
        op.drop_table(table)
    op.execute("DROP FUNCTION vnh_device_events_partition(date)")
    op.execute("DROP TABLE device_events")  # drops its partitions and the owned sequence
    op.drop_table("device_event_keys")
    op.drop_index("ix_devices_token_hash", table_name="devices")
    op.drop_constraint(op.f("ck_devices_heartbeat_range"), "devices", type_="check")
    for column in ("broker_disabled_at", "broker_password", "status_at", "seq_missed", "last_seq", "heartbeat_s", "buttons"):
        op.drop_column("devices", column)
