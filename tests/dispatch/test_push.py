"""Mobile push to caregivers: queued by the outbox relay after commit, one per outbox event, posted signed to the
push provider's webhook (a real local HTTP server here), retried with backoff under the same Idempotency-Key,
dropped once the offer expired, off when not configured."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from dispatch.models import Offer, PushNotification
from dispatch.push import (
    WebhookPushNotifier,
    push_queue_publisher,
    push_sender_from_settings,
    queue_pushes,
    send_due_pushes,
)
from kernel.clock import ManualClock
from kernel.outbox import OutboxEvent
from kernel.runtime import Runtime
from tests.dispatch.push_receiver import PushReceiver, signed_by
from tests.world import World
from vnh.workers import build_relay

SECRET = "push-webhook-secret"


@pytest.fixture
def receiver() -> Iterator[PushReceiver]:
    server = PushReceiver(refuse_first=1)
    yield server
    server.close()


async def _rows(rt: Runtime) -> list[PushNotification]:
    async with rt.database.unit_of_work() as s:
        return list((await s.scalars(select(PushNotification).order_by(PushNotification.id))).all())


async def test_an_urgent_offer_reaches_each_offered_phone_signed_once_and_without_personal_data(
        world: World, receiver: PushReceiver) -> None:
    rt = world.rt
    order = await world.order(priority="urgent")
    await build_relay(rt, [push_queue_publisher(rt)]).relay_once()
    queued = await _rows(rt)
    assert len(queued) == 3 and {r.status for r in queued} == {"pending"}
    # the relay publishing the same batch again (a crash before it stamped the rows) queues nothing twice
    async with rt.database.unit_of_work() as s:
        created = list((await s.scalars(select(OutboxEvent).where(
            OutboxEvent.event_type == "dispatch.offer.created"))).all())
    assert await queue_pushes(rt, created) == 0

    notifier = WebhookPushNotifier(receiver.url, secret=SECRET)
    try:
        assert await send_due_pushes(rt, notifier) == 2  # the provider refused the first one
        retrying = [r for r in await _rows(rt) if r.status == "pending"]
        assert len(retrying) == 1 and retrying[0].attempts == 1 and "503" in (retrying[0].last_error or "")
        assert await send_due_pushes(rt, notifier) == 0  # not before its backoff
        assert isinstance(rt.clock, ManualClock)
        rt.clock.advance(1)
        assert await send_due_pushes(rt, notifier) == 1
    finally:
        await notifier.aclose()
    assert {r.status for r in await _rows(rt)} == {"sent"}

    async with rt.database.unit_of_work() as s:
        offers = {str(o.caregiver_id): o for o in (await s.scalars(select(Offer))).all()}
    assert set(offers) == {str(c.id) for c in world.caregivers}
    keys = [h["idempotency-key"] for h, _ in receiver.received]
    assert len(set(keys)) == 3 and receiver.refused[0][0]["idempotency-key"] in keys  # the retry kept its key
    for headers, body in receiver.received:
        assert signed_by(SECRET, headers, body)
        push = json.loads(body)
        offer = offers[push["caregiver_id"]]
        assert push["title"] == "新的紧急工单"
        assert push["body"] == "生活照料，请在60秒内接单"
        assert push["data"] == {"type": "dispatch.offer.created", "order_id": order["id"], "offer_id": str(offer.id),
                                "kind": "urgent", "expires_at": offer.expires_at.isoformat()}
        text = body.decode()
        assert world.elder.name not in text and world.elder.name[0] not in text  # no name, not even masked
        assert str(world.elder.id) not in text and "巴音乌素" not in text and "+86" not in text


async def test_a_push_for_an_offer_that_expired_meanwhile_is_dropped(world: World, receiver: PushReceiver) -> None:
    rt = world.rt
    await world.order(priority="urgent")
    await build_relay(rt, [push_queue_publisher(rt)]).relay_once()
    assert isinstance(rt.clock, ManualClock)
    rt.clock.advance(61)
    notifier = WebhookPushNotifier(receiver.url, secret=SECRET)
    try:
        assert await send_due_pushes(rt, notifier) == 0
    finally:
        await notifier.aclose()
    assert {r.status for r in await _rows(rt)} == {"stale"}
    assert receiver.received == [] and receiver.refused == []


async def test_cancelling_an_assigned_order_pushes_to_its_caregiver(world: World, receiver: PushReceiver) -> None:
    rt, client = world.rt, world.client
    order = await world.order()
    offer = (await world.offers_of(0))[0]
    assert (await client.post(f"/v1/offers/{offer['id']}/accept", headers=await world.as_cg(0))).status_code == 200
    cancelled = await client.post(f"/v1/orders/{order['id']}/cancel", json={"reason": "家属已到"},
                                  headers=world.dispatcher)
    assert cancelled.status_code == 200, cancelled.text
    await build_relay(rt, [push_queue_publisher(rt)]).relay_once()
    rows = await _rows(rt)
    assert [(r.title, r.body, str(r.caregiver_id)) for r in rows] == [
        ("新的工单", "生活照料，请在3分钟内接单", str(world.caregivers[0].id)),
        ("工单已取消", "生活照料工单已取消，无需上门", str(world.caregivers[0].id))]
    assert rows[1].data == {"type": "orders.order.cancelled", "order_id": order["id"]}


def test_push_is_off_unless_its_webhook_is_configured(runtime: Runtime) -> None:
    assert push_sender_from_settings(runtime) is None
    settings = runtime.settings.model_copy(deep=True)
    settings.push.webhook_url = "http://127.0.0.1:9/push"
    settings.push.webhook_secret = SecretStr(SECRET)
    configured = dataclasses.replace(runtime, settings=settings)
    sender = push_sender_from_settings(configured)
    assert sender is not None and sender.notifier.url == "http://127.0.0.1:9/push"
