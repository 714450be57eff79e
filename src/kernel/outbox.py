"""The transactional outbox: events are written with the change that causes them and published after commit.

`emit()` adds an `outbox` row in the caller's transaction. The relay (`OutboxRelay`) claims unpublished rows with
`FOR UPDATE SKIP LOCKED` (several instances may run), publishes them (Redis stream for the console; more publishers
plug in), then stamps `published_at` and a `stream_seq` in the order it saw the commits. A crash between publishing
and stamping publishes a row twice: consumers are idempotent by outbox id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, String, func, select, text
from sqlalchemy import Sequence as SqlSequence
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.orm.attributes import set_committed_value

from kernel.clock import Clock
from kernel.db import Base, Database
from kernel.events import payload_schema

log = logging.getLogger("vnh.outbox")

STREAM_SEQ = SqlSequence("outbox_stream_seq", metadata=Base.metadata)


class OutboxEvent(Base):
    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    event_type: Mapped[str] = mapped_column(String(100))
    aggregate_id: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]]
    occurred_at: Mapped[datetime]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    published_at: Mapped[datetime | None]
    stream_seq: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    attempts: Mapped[int] = mapped_column(default=0, server_default=text("0"))

    __table_args__ = (
        Index("ix_outbox_unpublished", "id", postgresql_where=text("published_at IS NULL")),
        # events that concern one caregiver carry its `caregiver_id` (kernel/events.py): the caregiver app's stream
        # replays them by it (dispatch/caregiver_stream.py)
        Index("ix_outbox_caregiver_seq", text("(payload ->> 'caregiver_id')"), "stream_seq",
              postgresql_where=text("(payload ->> 'caregiver_id') IS NOT NULL")),
    )


def emit(session: AsyncSession, clock: Clock, event_type: str, aggregate_id: str, payload: dict[str, Any]) -> None:
    """Record an event in the current transaction; it is validated against the catalogue now, not at relay time."""
    model = payload_schema(event_type)
    checked = model.model_validate(payload).model_dump(mode="json")
    session.add(
        OutboxEvent(event_type=event_type, aggregate_id=aggregate_id, payload=checked, occurred_at=clock.now())
    )


Publisher = Callable[[Sequence[OutboxEvent]], Awaitable[None]]


_NEXT_SEQS = text("SELECT nextval('outbox_stream_seq') FROM generate_series(1, :n)")
_STAMP = text(
    "UPDATE outbox AS o SET stream_seq = u.seq, published_at = :at, attempts = o.attempts + 1 "
    "FROM unnest(CAST(:ids AS bigint[]), CAST(:seqs AS bigint[])) AS u(id, seq) WHERE o.id = u.id")


class OutboxRelay:
    def __init__(self, database: Database, clock: Clock, publishers: Sequence[Publisher], *,
                 batch_size: int = 500, poll_interval_s: float = 0.2) -> None:
        self._db = database
        self._clock = clock
        self._publishers = list(publishers)
        self._batch = batch_size
        self._poll = poll_interval_s
        self.wakeup = asyncio.Event()

    async def relay_once(self) -> int:
        """Publish one batch; answers how many rows it published."""
        async with self._db.unit_of_work() as session:
            rows = (
                await session.scalars(
                    select(OutboxEvent)
                    .where(OutboxEvent.published_at.is_(None))
                    .order_by(OutboxEvent.id)
                    .limit(self._batch)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            if not rows:
                return 0
            # one round trip for the batch's sequence numbers, handed out in id order (an SOS's offers reach the
            # console as soon as the relay is woken: a round trip per row was most of that wait)
            numbers = sorted((await session.scalars(_NEXT_SEQS, {"n": len(rows)})).all())
            for row, number in zip(rows, numbers, strict=True):
                set_committed_value(row, "stream_seq", number)  # written below with the stamp, not by a flush
            for publish in self._publishers:
                await publish(rows)
            await session.execute(_STAMP, {"ids": [r.id for r in rows], "seqs": numbers, "at": self._clock.now()})
            return len(rows)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                published = await self.relay_once()
            except Exception:
                log.exception("outbox relay failed; retrying")
                published = 0
                await asyncio.sleep(1.0)
            if published:
                continue
            self.wakeup.clear()
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self.wakeup.wait())]
            await asyncio.wait(waiters, timeout=self._poll, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
