"""Background work every instance runs beside HTTP: the outbox relay and the audit sealer."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence
from dataclasses import replace

from kernel.audit import seal_batch
from kernel.outbox import OutboxEvent, OutboxRelay, Publisher
from kernel.periodic import every
from kernel.runtime import Runtime

log = logging.getLogger("vnh.workers")


def redis_stream_publisher(runtime: Runtime) -> Publisher:
    """Publish to one Redis stream the console (and other live consumers) read; trimmed approximately."""
    key = runtime.redis_key(runtime.settings.outbox.stream_key)
    maxlen = runtime.settings.outbox.stream_maxlen

    async def publish(events: Sequence[OutboxEvent]) -> None:
        async with runtime.redis.pipeline(transaction=False) as pipe:
            for event in events:
                pipe.xadd(
                    key,
                    {
                        "seq": str(event.stream_seq),
                        "outbox_id": str(event.id),
                        "type": event.event_type,
                        "aggregate_id": event.aggregate_id,
                        "occurred_at": event.occurred_at.isoformat(),
                        "payload": json.dumps(event.payload, ensure_ascii=False),
                    },
                    maxlen=maxlen,
                    approximate=True,
                )
            await pipe.execute()

    return publish


def build_relay(runtime: Runtime, extra: Sequence[Publisher] = ()) -> OutboxRelay:
    return OutboxRelay(
        runtime.database, runtime.clock, [redis_stream_publisher(runtime), *extra],
        batch_size=runtime.settings.outbox.batch_size, poll_interval_s=runtime.settings.outbox.poll_interval_s,
    )


async def seal_audit_once(runtime: Runtime) -> int:
    """Seal what is pending; once committed, the new head goes to the witnesses outside the database."""
    async with runtime.database.unit_of_work() as session:
        sealed, head = await seal_batch(session, runtime.chain)
    if head is not None:
        await runtime.witnesses.record(replace(head, at=runtime.clock.now()))
    else:
        await runtime.witnesses.retry()
    return sealed


async def run_sealer(runtime: Runtime, stop: asyncio.Event) -> None:
    interval = runtime.settings.audit.seal_interval_s
    while not stop.is_set():
        try:
            sealed = await seal_audit_once(runtime)
            if sealed:
                continue
        except Exception:
            log.exception("audit sealer failed; retrying")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


async def run_batch_once(runtime: Runtime) -> int:
    from dispatch.batch import assign_batch

    async with runtime.database.unit_of_work() as session:
        return (await assign_batch(session, runtime)).offered


async def raise_missing_confirmations_once(runtime: Runtime) -> int:
    from orders.visits import raise_missing_confirmations

    async with runtime.database.unit_of_work() as session:
        return await raise_missing_confirmations(session, runtime)


class Workers:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.stop = asyncio.Event()
        from devices.tasks import DeviceWorkers
        from dispatch.push import push_sender_from_settings

        self.devices = DeviceWorkers(runtime)
        self.push = push_sender_from_settings(runtime)  # None unless VNH_PUSH__WEBHOOK_URL is set
        self.relay = build_relay(runtime, [*self.devices.publishers(), *(self.push.publishers() if self.push else ())])
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        from dispatch.live import drop_stale_positions
        from dispatch.offers import expire_due_offers
        from orders.service import lapse_unserved_orders

        rt, stop = self.runtime, self.stop
        self._tasks = [
            asyncio.create_task(self.relay.run(stop), name="outbox-relay"),
            asyncio.create_task(run_sealer(rt, stop), name="audit-sealer"),
            asyncio.create_task(every("offer expiry", 1.0, stop, lambda: expire_due_offers(rt)), name="offers"),
            asyncio.create_task(every("batch assigner", rt.settings.dispatch.batch_interval.total_seconds(), stop,
                                       lambda: run_batch_once(rt)), name="batch"),
            asyncio.create_task(every("no-confirmation", 60.0, stop, lambda: raise_missing_confirmations_once(rt)),
                                name="confirmations"),
            asyncio.create_task(every("unserved windows", 60.0, stop, lambda: lapse_unserved_orders(rt)),
                                name="lapse"),
            asyncio.create_task(every("stale positions", 60.0, stop, lambda: drop_stale_positions(rt)),
                                name="positions"),
        ]
        if self.push is not None:
            self._tasks.append(asyncio.create_task(self.push.run(stop), name="caregiver-push"))
        self.devices.start(stop, relay=self.relay)  # an SOS wakes the relay: its offers go out at once

    async def close(self) -> None:
        self.stop.set()
        await self.devices.close()  # the MQTT gateway commits and acknowledges what it holds, then disconnects
        for task in self._tasks:
            try:
                await asyncio.wait_for(task, 10)
            except Exception:
                log.exception("worker %s did not stop cleanly", task.get_name())
