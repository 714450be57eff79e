"""Escalation of unacknowledged alarms: every `devices.escalate_after` (default 60 s, the UK TSA answer target) an
alarm still open goes one level up — until someone acknowledges or `escalation_max_level` is reached:

- the dispatcher's console is told again (`devices.alarm.escalated`);
- more responders: the alarm's emergency order is offered to the next nearest caregivers not yet asked;
- the elder's emergency contacts are notified through the notifier (an `alarm_notifications` row, sent after
  commit by `notifier.send_pending`).

Critical and warning alarms escalate; info alarms (low battery) do not. Times come from the injected clock.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from devices import alarms
from devices.models import Alarm, AlarmNotification
from kernel.audit import record_audit
from kernel.errors import DomainError
from kernel.runtime import Runtime
from orders.models import Elder, Order

log = logging.getLogger("vnh.devices.escalation")

ESCALATED = Counter("vnh_alarm_escalations_total", "Alarm escalations", ["type", "level"])


async def more_responders(session: AsyncSession, rt: Runtime, alarm: Alarm) -> int:
    """Offer the alarm's order to the next caregivers not yet asked; answers how many offers went out."""
    from dispatch import offers
    from dispatch.candidates import find_candidates
    from dispatch.models import Offer

    if alarm.order_id is None:
        return 0
    order = await session.scalar(select(Order).where(Order.id == alarm.order_id).with_for_update())
    if order is None or order.status not in ("dispatching", "offered", "unfulfilled"):
        return 0
    asked = set((await session.scalars(select(Offer.caregiver_id).where(Offer.order_id == order.id))).all())
    if not (await find_candidates(session, rt, order, exclude=asked)).ranked:
        return 0  # nobody new in reach: the order keeps its pending offers (or stays with the dispatcher)
    try:
        async with session.begin_nested():
            made = await offers.dispatch_order(session, rt, order, exclude=asked)
    except DomainError as exc:
        log.warning("alarm %s: no more responders (%s)", alarm.id, exc.code)
        return 0
    return len(made)


async def escalate_due(rt: Runtime, *, limit: int = 100) -> int:
    """One pass over alarms past their escalation time; answers how many went up a level."""
    settings = rt.settings.devices
    now = rt.clock.now()
    escalated = 0
    async with rt.database.unit_of_work() as session:
        due = list((await session.scalars(select(Alarm).where(
            Alarm.status == "open", Alarm.next_escalation_at.is_not(None), Alarm.next_escalation_at <= now)
            .order_by(Alarm.next_escalation_at).limit(limit).with_for_update(skip_locked=True))).all())
        for alarm in due:
            alarm.escalation_level += 1
            level = alarm.escalation_level
            alarm.next_escalation_at = now + settings.escalate_after if level < settings.escalation_max_level \
                else None
            offered = await more_responders(session, rt, alarm)
            elder = await session.get(Elder, alarm.elder_id)
            has_contacts = bool(elder and elder.emergency_contacts_enc)
            if has_contacts:
                await session.execute(pg_insert(AlarmNotification).values(
                    alarm_id=alarm.id, level=level, kind="emergency_contacts", status="pending", attempts=0,
                    created_at=now, next_attempt_at=now).on_conflict_do_nothing())
            await record_audit(session, rt.clock, alarms.DEVICES, "alarm.escalate", "alarm", alarm.id, {
                "level": level, "offers": offered, "contacts_notified": has_contacts,
                "seconds_unacknowledged": round((now - alarm.received_at).total_seconds())})
            alarms._emit(session, rt, alarm, "escalated")
            ESCALATED.labels(alarm.type, str(level)).inc()
            escalated += 1
    return escalated
