"""Devices registered to elders (call buttons, wristbands, sensors), what they send, the alarms it raises and the
commands sent back. Tables of the devices issue's migration (alembic/versions/0004_devices.py)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    Uuid,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from kernel.db import Base, new_id

DEVICE_KINDS = ("call_button", "wristband", "bed_sensor", "smart_speaker", "gateway")


class Device(Base):
    __tablename__ = "devices"

    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    elder_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("elders.id"), index=True)
    # HMAC-SHA256 of the token (argon2 is for people: too slow for a reconnect storm); the plaintext is shown once
    token_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(10), default="active")
    revoked_at: Mapped[datetime | None]
    online: Mapped[bool] = mapped_column(default=False)
    last_seen_at: Mapped[datetime | None]
    battery: Mapped[int | None] = mapped_column(SmallInteger)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    # call button code → service code (`PUT /v1/devices/{id}/buttons`); unmapped buttons make a hotline call-back
    buttons: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default=text("'{}'::jsonb"))
    # supervision interval of this device; NULL: the elder's monitoring setting, else the service default
    heartbeat_s: Mapped[int | None] = mapped_column(Integer)
    # protocol `seq`: the highest seen and how many numbers never arrived (events lost before vnh got them)
    last_seq: Mapped[int | None] = mapped_column(BigInteger)
    seq_missed: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    status_at: Mapped[datetime | None]  # when `online` last changed (retained status topic, last will)
    # Mosquitto dynsec's PBKDF2-SHA512 entry of the token, made at registration (`vnh devices export-mosquitto-acl`)
    broker_password: Mapped[dict[str, Any] | None]
    broker_disabled_at: Mapped[datetime | None]  # when Mosquitto's dynsec disabled the revoked device's account
    # the token encrypted (context `devices.broker_secret`) until the dynsec client is created on a running Mosquitto
    # (`mosquitto_control.create_registered`: `createClient` takes the plaintext), then cleared (migration 0007)
    broker_secret: Mapped[str | None] = mapped_column(Text)
    broker_created_at: Mapped[datetime | None]  # when that pass created the device's client and role on Mosquitto

    __table_args__ = (
        CheckConstraint("device_id ~ '^[A-Za-z0-9_.:-]{3,64}$'", name="device_id_shape"),
        CheckConstraint("kind IN ('call_button','wristband','bed_sensor','smart_speaker','gateway')",
                        name="kind_known"),
        CheckConstraint("status IN ('active','revoked')", name="status_known"),
        CheckConstraint("(status = 'revoked') = (revoked_at IS NOT NULL)", name="revoked_has_time"),
        CheckConstraint("battery BETWEEN 0 AND 100", name="battery_range"),
        CheckConstraint("heartbeat_s BETWEEN 10 AND 86400", name="heartbeat_range"),
        Index("ix_devices_token_hash", "token_hash"),
        Index("ix_devices_broker_pending", "created_at", postgresql_where=text("broker_secret IS NOT NULL")),
    )


EVENT_TYPES = ("sos", "fall", "call", "heart_rate", "spo2", "location", "heartbeat", "confirm", "cancel",
               "command_ack")
ALARM_TYPES = ("sos", "fall", "heart_rate", "spo2", "geofence", "low_battery", "device_offline", "data_lost")
DEAD_LETTER_REASONS = (
    "payload_too_large", "not_utf8", "invalid_json", "not_an_object", "missing_field", "invalid_field",
    "unknown_type", "type_not_allowed_here", "unknown_topic", "unknown_device", "device_revoked",
    "topic_mismatch", "processing_failed", "invalid_ts", "invalid_event_id",
)


class EventKey(Base):
    """Deduplication: one row per (device, event id, payload hash), kept `devices.dedup_retention` (30 days).

    Not partitioned, so the key is unique across months. A repeat with another payload hash is a new event (stored
    and noted as `event_id_reused`), and its own repeats are duplicates again."""

    __tablename__ = "device_event_keys"

    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    payload_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    received_at: Mapped[datetime]

    __table_args__ = (Index("ix_device_event_keys_received_at", "received_at"),)


class StoredEvent(Base):
    """Every accepted event, as received, partitioned by `received_at` month (`device_events_YYYY_MM`, plus a
    DEFAULT partition that must stay empty: `devices.partitions` creates months ahead and watches it)."""

    __tablename__ = "device_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True,
                                    server_default=text("nextval('device_events_id_seq')"))
    received_at: Mapped[datetime] = mapped_column(primary_key=True)
    device_id: Mapped[str] = mapped_column(String(64))
    elder_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    event_id: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(20))
    ts: Mapped[datetime]
    lat: Mapped[float | None] = mapped_column(Float)
    lon: Mapped[float | None] = mapped_column(Float)
    battery: Mapped[int | None] = mapped_column(SmallInteger)
    seq: Mapped[int | None] = mapped_column(BigInteger)
    value: Mapped[dict[str, Any] | None]
    channel: Mapped[str] = mapped_column(String(10))
    payload_hash: Mapped[str] = mapped_column(String(64))
    note: Mapped[str | None] = mapped_column(String(40))
    # `value`, `lat`, `lon` sealed together (devices/health.py, migration 0007); those columns are then NULL
    health_enc: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_device_events_device_received", "device_id", "received_at"),
        {"postgresql_partition_by": "RANGE (received_at)"},
    )


class DeadLetter(Base):
    """A message vnh could not accept, with the reason; never silently dropped."""

    __tablename__ = "device_dead_letters"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    received_at: Mapped[datetime]
    channel: Mapped[str] = mapped_column(String(10))
    topic: Mapped[str | None] = mapped_column(String(300))
    device_id: Mapped[str | None] = mapped_column(String(64))  # as claimed by the topic or URL; may not exist
    region_code: Mapped[str | None] = mapped_column(String(6))  # the device's elder's, when the device is known
    reason: Mapped[str] = mapped_column(String(30))
    detail: Mapped[str] = mapped_column(String(500))
    payload: Mapped[str] = mapped_column(Text)  # the first bytes, decoded with replacement characters
    payload_size: Mapped[int]

    __table_args__ = (
        Index("ix_device_dead_letters_received_at", "received_at"),
    )


class Alarm(Base):
    """One open alarm per (elder, type) — per device for `device_offline` and `data_lost` — enforced by a unique
    index on (`type`, `open_key`) over open and acknowledged alarms; a repeat increments `count`."""

    __tablename__ = "alarms"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    elder_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("elders.id"), index=True)
    device_id: Mapped[str | None] = mapped_column(String(64))
    region_code: Mapped[str] = mapped_column(String(6), index=True)
    type: Mapped[str] = mapped_column(String(20))
    severity: Mapped[str] = mapped_column(String(10))
    status: Mapped[str] = mapped_column(String(14), default="open")
    open_key: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(10))  # device | app | hotline | system
    source_event_id: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    count: Mapped[int] = mapped_column(default=1)
    raised_at: Mapped[datetime]  # when vnh raised it (the injected clock)
    received_at: Mapped[datetime]  # when the triggering message reached vnh: response times count from here
    device_ts: Mapped[datetime | None]  # the device's own `ts`: its lag is reported beside response times
    last_at: Mapped[datetime]
    acknowledged_at: Mapped[datetime | None]
    acknowledged_by: Mapped[str | None] = mapped_column(String(100))
    resolved_at: Mapped[datetime | None]
    resolved_by: Mapped[str | None] = mapped_column(String(100))
    outcome: Mapped[str | None] = mapped_column(String(12))
    notes: Mapped[str | None] = mapped_column(String(1000))
    cancelled_by_elder_at: Mapped[datetime | None]
    order_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    callback_order_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    escalation_level: Mapped[int] = mapped_column(SmallInteger, default=0)
    next_escalation_at: Mapped[datetime | None]

    __table_args__ = (
        CheckConstraint("type IN ('sos','fall','heart_rate','spo2','geofence','low_battery','device_offline',"
                        "'data_lost')", name="type_known"),
        CheckConstraint("severity IN ('critical','warning','info')", name="severity_known"),
        CheckConstraint("status IN ('open','acknowledged','resolved')", name="status_known"),
        CheckConstraint("outcome IN ('false_alarm','assisted','hospital','other')", name="outcome_known"),
        CheckConstraint("source IN ('device','app','hotline','system')", name="source_known"),
        CheckConstraint("count >= 1", name="count_positive"),
        CheckConstraint("(status = 'resolved') = (resolved_at IS NOT NULL AND outcome IS NOT NULL)",
                        name="resolution_complete"),
        CheckConstraint("status <> 'acknowledged' OR acknowledged_at IS NOT NULL", name="acknowledged_has_time"),
        Index("uq_alarms_one_open", "type", "open_key", unique=True,
              postgresql_where=text("status <> 'resolved'")),
        Index("ix_alarms_escalation_due", "next_escalation_at",
              postgresql_where=text("status = 'open' AND next_escalation_at IS NOT NULL")),
        Index("ix_alarms_raised", "raised_at", "id"),
    )


class AlarmNotification(Base):
    """A notice to send through the notifier (escalation to emergency contacts and supervisors), written in the
    escalating transaction and sent after commit by the notifier worker, with retries."""

    __tablename__ = "alarm_notifications"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    alarm_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("alarms.id"), index=True)
    level: Mapped[int] = mapped_column(SmallInteger)
    kind: Mapped[str] = mapped_column(String(20))  # emergency_contacts
    status: Mapped[str] = mapped_column(String(10), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime]
    next_attempt_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(String(300))

    __table_args__ = (
        CheckConstraint("status IN ('pending','sent','failed')", name="status_known"),
        Index("ix_alarm_notifications_due", "next_attempt_at", postgresql_where=text("status = 'pending'")),
        Index("uq_alarm_notifications_level", "alarm_id", "level", "kind", unique=True),
    )


class ElderMonitoring(Base):
    """`PUT /v1/elders/{id}/monitoring`: safe ranges with durations, safe zone, heartbeat interval."""

    __tablename__ = "elder_monitoring"

    elder_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("elders.id"), primary_key=True)
    heart_rate_min: Mapped[int | None] = mapped_column(SmallInteger)
    heart_rate_max: Mapped[int | None] = mapped_column(SmallInteger)
    heart_rate_for_s: Mapped[int] = mapped_column(default=0)
    spo2_min: Mapped[int | None] = mapped_column(SmallInteger)
    spo2_for_s: Mapped[int] = mapped_column(default=0)
    safe_zone: Mapped[dict[str, Any] | None]  # {"type": "circle", ...} | {"type": "polygon", ...}, WGS-84
    heartbeat_s: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime]
    updated_by: Mapped[str] = mapped_column(String(100))

    __table_args__ = (
        CheckConstraint("heart_rate_min IS NULL OR heart_rate_max IS NULL OR heart_rate_min < heart_rate_max",
                        name="heart_rate_range"),
        CheckConstraint("heartbeat_s BETWEEN 10 AND 86400", name="heartbeat_range"),
    )


class RuleWatch(Base):
    """The state of a duration rule per elder: since when a reading is out of its safe range (or outside the safe
    zone, or the battery low), and whether this streak already raised its alarm."""

    __tablename__ = "device_rule_watch"

    elder_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("elders.id"), primary_key=True)
    rule: Mapped[str] = mapped_column(String(80), primary_key=True)  # heart_rate, spo2, geofence, battery:<device>
    out_since: Mapped[datetime | None]
    last_ts: Mapped[datetime]
    alarmed: Mapped[bool] = mapped_column(default=False)


class DeviceCommand(Base):
    """A downlink command: queued → sent → acknowledged, or expired; re-sent when the device comes back online."""

    __tablename__ = "device_commands"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.device_id"), index=True)
    type: Mapped[str] = mapped_column(String(20))
    body: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(12), default="queued")
    # what caused it, unique: an outbox event or an alarm acknowledgement is turned into a command once
    cause: Mapped[str] = mapped_column(String(120), unique=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    send_count: Mapped[int] = mapped_column(default=0)
    acknowledged_at: Mapped[datetime | None]

    __table_args__ = (
        CheckConstraint("type IN ('notify','alarm_ack','config')", name="type_known"),
        CheckConstraint("status IN ('queued','sent','acknowledged','expired')", name="status_known"),
        Index("ix_device_commands_unsent", "device_id", "created_at",
              postgresql_where=text("status IN ('queued','sent')")),
    )
