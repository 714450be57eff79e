"""Mobile push to caregivers' phones: a 60-second urgent offer must reach a phone whose app is closed.

The outbox relay hands every committed batch to `push_queue_publisher`, which turns the events worth a push (a new
offer; the cancellation of an order assigned to the caregiver) into `push_notifications` rows in a transaction of
its own, one per outbox id, so a batch published twice queues nothing twice. `send_due_pushes` sends due rows
through a `PushNotifier` — woken by the publisher, and every second for retries with backoff — and drops an offer's
push once the offer has expired. The webhook implementation posts JSON to the push provider's gateway, signed with
HMAC-SHA256 of the body (`X-VNH-Signature`, as the alarm notifier's webhook) and with the outbox id as its
`Idempotency-Key`, so a push sent again after a crash is recognised. Texts are zh-CN; no personal data: the title
and body name the service, the data carries the order and offer ids.
Off (nothing queued, nothing sent) unless `VNH_PUSH__WEBHOOK_URL` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Protocol

from prometheus_client import Counter
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from dispatch.models import PushNotification
from kernel.outbox import OutboxEvent, Publisher
from kernel.runtime import Runtime
from kernel.webhooks import SignedWebhook
from orders.catalogue import CATALOGUE
from orders.models import Order

log = logging.getLogger("vnh.dispatch.push")

PUSHES = Counter("vnh_caregiver_pushes_total", "Pushes to caregivers' phones", ["outcome"])
SERVICE_NAMES = {entry.code: entry.name for entry in CATALOGUE}
OFFER_TITLES = {"urgent": "新的紧急工单", "manual": "调度员为您指派了工单", "batch": "新的预约工单",
                "loop": "新的工单"}


class PushNotifier(Protocol):
    async def send(self, caregiver_id: str, title: str, body: str, data: dict[str, str], *,
                   idempotency_key: str) -> None:
        """Deliver to the caregiver's devices or raise; a raise is retried later with the same key."""
        ...


class WebhookPushNotifier(SignedWebhook):
    """POSTs `{caregiver_id, title, body, data}` to the push provider's webhook (which maps the caregiver to its
    phones' device tokens)."""

    async def send(self, caregiver_id: str, title: str, body: str, data: dict[str, str], *,
                   idempotency_key: str) -> None:
        content = json.dumps({"caregiver_id": caregiver_id, "title": title, "body": body, "data": data},
                             ensure_ascii=False, separators=(",", ":")).encode()
        await self.post_json(content, idempotency_key=idempotency_key)


def push_notifier_from_settings(rt: Runtime) -> WebhookPushNotifier | None:
    settings = rt.settings.push
    if not settings.webhook_url:
        return None
    secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
    return WebhookPushNotifier(settings.webhook_url, secret=secret, timeout_s=settings.timeout_s)


def _within(expires_at: datetime, at: datetime) -> str:
    seconds = max(0, round((expires_at - at).total_seconds()))
    return f"{seconds}秒" if seconds < 120 else f"{seconds // 60}分钟"


def _message(event: OutboxEvent, service_code: str) -> tuple[str, str, dict[str, str], datetime | None] | None:
    """(title, body, data, send-no-later-than) of the push an event is worth, or None."""
    p = event.payload
    name = SERVICE_NAMES.get(service_code, service_code)
    if event.event_type == "dispatch.offer.created":
        expires_at = datetime.fromisoformat(p["expires_at"])
        title = OFFER_TITLES.get(p["kind"], "新的工单")
        body = f"{name}，请在{_within(expires_at, event.occurred_at)}内接单"
        return title, body, {"type": event.event_type, "order_id": p["order_id"], "offer_id": p["offer_id"],
                             "kind": p["kind"], "expires_at": p["expires_at"]}, expires_at
    if event.event_type == "orders.order.cancelled" and p.get("caregiver_id"):
        return "工单已取消", f"{name}工单已取消，无需上门", {"type": event.event_type, "order_id": p["order_id"]}, None
    return None


def _worth_a_push(event: OutboxEvent) -> bool:
    return event.event_type == "dispatch.offer.created" or (
        event.event_type == "orders.order.cancelled" and bool(event.payload.get("caregiver_id")))


async def queue_pushes(rt: Runtime, events: Sequence[OutboxEvent]) -> int:
    """Queue the pushes of committed events (idempotent by outbox id); answers how many were new."""
    chosen = [e for e in events if _worth_a_push(e)]
    if not chosen:
        return 0
    now = rt.clock.now()
    async with rt.database.unit_of_work() as session:
        order_ids = {uuid.UUID(e.payload["order_id"]) for e in chosen}
        services = {oid: code for oid, code in (await session.execute(
            select(Order.id, Order.service_code).where(Order.id.in_(order_ids)))).all()}
        rows = []
        for event in chosen:
            message = _message(event, services.get(uuid.UUID(event.payload["order_id"]), ""))
            if message is None:
                continue
            title, body, data, expires_at = message
            rows.append({"outbox_id": event.id, "caregiver_id": uuid.UUID(event.payload["caregiver_id"]),
                         "title": title, "body": body, "data": data, "status": "pending", "attempts": 0,
                         "created_at": now, "next_attempt_at": now, "expires_at": expires_at})
        if not rows:
            return 0
        inserted = (await session.scalars(insert(PushNotification).values(rows).on_conflict_do_nothing(
            index_elements=["outbox_id"]).returning(PushNotification.id))).all()
        return len(inserted)


def push_queue_publisher(rt: Runtime, on_queued: asyncio.Event | None = None) -> Publisher:
    """The relay's consumer: queue pushes after commit and wake the sender."""

    async def publish(events: Sequence[OutboxEvent]) -> None:
        if await queue_pushes(rt, events) and on_queued is not None:
            on_queued.set()

    return publish


def backoff(attempts: int) -> timedelta:
    """1, 2, 4 … seconds, at most 5 minutes: an urgent offer lives 60 s, so its first retries must be quick."""
    return timedelta(seconds=min(300, 2 ** max(0, attempts - 1)))


async def send_due_pushes(rt: Runtime, notifier: PushNotifier, *, limit: int = 50) -> int:
    """Send due pushes, each in a transaction of its own; answers how many were delivered."""
    async with rt.database.unit_of_work() as session:
        due = list((await session.scalars(select(PushNotification.id).where(
            PushNotification.status == "pending", PushNotification.next_attempt_at <= rt.clock.now())
            .order_by(PushNotification.next_attempt_at, PushNotification.id).limit(limit))).all())
    delivered = 0
    for push_id in due:
        async with rt.database.unit_of_work() as session:
            row = await session.scalar(select(PushNotification).where(
                PushNotification.id == push_id, PushNotification.status == "pending")
                .with_for_update(skip_locked=True))
            if row is None:
                continue
            now = rt.clock.now()
            if row.expires_at is not None and row.expires_at <= now:
                row.status = "stale"  # the offer is gone: a push now would only mislead
                PUSHES.labels("stale").inc()
                continue
            row.attempts += 1
            try:
                await notifier.send(str(row.caregiver_id), row.title, row.body, dict(row.data),
                                    idempotency_key=f"vnh-push-{row.outbox_id}")
            except Exception as exc:
                row.last_error = f"{type(exc).__name__}: {exc}"[:300]
                if row.attempts >= rt.settings.push.max_attempts:
                    row.status = "failed"
                    PUSHES.labels("failed").inc()
                else:
                    row.next_attempt_at = now + backoff(row.attempts)
                    PUSHES.labels("retry").inc()
                log.warning("push %s to caregiver %s not delivered: %s", row.id, row.caregiver_id, row.last_error)
                continue
            row.status, row.sent_at, row.last_error = "sent", rt.clock.now(), None
            PUSHES.labels("sent").inc()
            delivered += 1
    return delivered


class PushSender:
    """The background sender: queues from the relay, sends at once when woken, retries every second."""

    def __init__(self, rt: Runtime, notifier: WebhookPushNotifier) -> None:
        self.rt = rt
        self.notifier = notifier
        self.wakeup = asyncio.Event()

    def publishers(self) -> list[Publisher]:
        return [push_queue_publisher(self.rt, self.wakeup)]

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                self.wakeup.clear()
                try:
                    await send_due_pushes(self.rt, self.notifier)
                except Exception:
                    log.exception("push sender failed; retrying")
                waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self.wakeup.wait())]
                await asyncio.wait(waiters, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
                for waiter in waiters:
                    waiter.cancel()
        finally:
            with contextlib.suppress(Exception):
                await self.notifier.aclose()


def push_sender_from_settings(rt: Runtime) -> PushSender | None:
    notifier = push_notifier_from_settings(rt)
    return PushSender(rt, notifier) if notifier is not None else None
