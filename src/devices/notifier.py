"""Notices to people outside vnh (emergency contacts) when an alarm escalates: an interface and its webhook.

The escalating transaction writes an `alarm_notifications` row; `send_pending` sends due rows after commit through
a `Notifier` and retries failures with backoff (the row is the outbox of this side effect: a crash between the
escalation and the sending loses nothing). The webhook implementation posts JSON to an SMS/voice gateway with
httpx, signed with HMAC-SHA256 of the body (`X-VNH-Signature`). The notice carries the contacts' phone numbers in
plaintext — the gateway must call them; SOS handling never waits for consent (PIPL) — and every decryption is
an audited reveal of the elder's record.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any, Protocol

from prometheus_client import Counter
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from devices.models import Alarm, AlarmNotification
from kernel.authz import Access
from kernel.runtime import Runtime
from kernel.webhooks import SignedWebhook
from orders.elders import reveal
from orders.models import Elder
from orders.schemas import RevealRequest

log = logging.getLogger("vnh.devices.notifier")

NOTICES = Counter("vnh_alarm_notices_total", "Escalation notices to emergency contacts", ["outcome"])
MAX_ATTEMPTS = 10
TYPE_NAMES = {"sos": "紧急呼叫", "fall": "跌倒报警", "heart_rate": "心率异常", "spo2": "血氧偏低",
              "geofence": "离开安全区域", "device_offline": "设备离线", "low_battery": "电量低"}


@dataclass(frozen=True)
class Contact:
    name: str
    relation: str | None
    phone: str


@dataclass(frozen=True)
class Notice:
    notification_id: int
    alarm_id: str
    alarm_type: str
    severity: str
    level: int
    raised_at: str
    elder_name: str
    region_code: str
    contacts: list[Contact]
    text: str


class Notifier(Protocol):
    async def send(self, notice: Notice) -> None:
        """Deliver or raise; a raise is retried later."""
        ...


class WebhookNotifier(SignedWebhook):
    async def send(self, notice: Notice) -> None:
        body = json.dumps(asdict(notice), ensure_ascii=False).encode()
        await self.post_json(body, idempotency_key=f"vnh-notice-{notice.notification_id}")


def notifier_from_settings(rt: Runtime) -> WebhookNotifier | None:
    settings = rt.settings.devices
    if not settings.notifier_webhook_url:
        return None
    secret = settings.notifier_webhook_secret.get_secret_value() if settings.notifier_webhook_secret else None
    return WebhookNotifier(settings.notifier_webhook_url, secret=secret, timeout_s=settings.notifier_timeout_s)


async def _notice(session: AsyncSession, rt: Runtime, row: AlarmNotification) -> Notice:
    alarm = await session.get(Alarm, row.alarm_id)
    assert alarm is not None
    elder = await session.get(Elder, alarm.elder_id)
    assert elder is not None
    revealed = await reveal(session, rt.clock, rt.cipher, Access.system("devices.notifier"), str(elder.id),
                            RevealRequest(fields=["emergency_contacts"],
                                          reason=f"alarm {alarm.id} escalated (level {row.level})"))
    contacts = [Contact(c.name, c.relation, c.phone) for c in revealed.emergency_contacts or []]
    local = alarm.raised_at.astimezone(rt.settings.tz)
    text = (f"【虚拟养老院】{elder.name}的{TYPE_NAMES.get(alarm.type, alarm.type)}（{local:%m月%d日%H:%M}）"
            f"尚无人确认，请尽快联系老人或拨打热线。")
    return Notice(notification_id=row.id, alarm_id=str(alarm.id), alarm_type=alarm.type, severity=alarm.severity,
                  level=row.level, raised_at=alarm.raised_at.isoformat(), elder_name=elder.name,
                  region_code=alarm.region_code, contacts=contacts, text=text)


def backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(600, 5 * 2 ** max(0, attempts - 1)))


async def send_pending(rt: Runtime, notifier: Notifier | None, *, limit: int = 50) -> int:
    """Send due notices, each in its own transaction; answers how many were delivered."""
    async with rt.database.unit_of_work() as session:
        due = list((await session.scalars(select(AlarmNotification.id).where(
            AlarmNotification.status == "pending", AlarmNotification.next_attempt_at <= rt.clock.now())
            .order_by(AlarmNotification.next_attempt_at).limit(limit))).all())
    delivered = 0
    for notification_id in due:
        async with rt.database.unit_of_work() as session:
            row = await session.scalar(select(AlarmNotification).where(
                AlarmNotification.id == notification_id, AlarmNotification.status == "pending")
                .with_for_update(skip_locked=True))
            if row is None:
                continue
            row.attempts += 1
            if notifier is None:
                row.status, row.last_error = "failed", "no notifier configured (VNH_DEVICES__NOTIFIER_WEBHOOK_URL)"
                NOTICES.labels("unconfigured").inc()
                log.error("alarm %s escalated but no notifier is configured", row.alarm_id)
                continue
            try:
                await notifier.send(await _notice(session, rt, row))
            except Exception as exc:
                row.last_error = f"{type(exc).__name__}: {exc}"[:300]
                if row.attempts >= MAX_ATTEMPTS:
                    row.status = "failed"
                    NOTICES.labels("failed").inc()
                else:
                    row.next_attempt_at = rt.clock.now() + backoff(row.attempts)
                    NOTICES.labels("retry").inc()
                log.warning("notice %s for alarm %s not delivered: %s", row.id, row.alarm_id, row.last_error)
                continue
            row.status, row.sent_at, row.last_error = "sent", rt.clock.now(), None
            NOTICES.labels("sent").inc()
            delivered += 1
    return delivered


def describe(notice: Notice) -> dict[str, Any]:
    """A loggable summary without phone numbers."""
    return {"alarm_id": notice.alarm_id, "level": notice.level, "contacts": len(notice.contacts)}
