"""Re-encryption of personal data under the active key (`vnh crypto rotate`).

Each package declares its encrypted columns as `EncryptedColumn`s (orders: the elders' ID number, phone, address and
emergency contacts; dispatch: the caregivers' phones); the composition root (`vnh.cli`) passes them all here.
Rows are rewritten in small committed batches, locked with SKIP LOCKED so a live service keeps working; a row
already under the active key and cipher is left alone, so the command can be interrupted and run again. Blind
indexes use their own key and do not change. Only when it reports nothing left may the old key be removed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

from sqlalchemy import Table, and_, bindparam, func, not_, select, tuple_, update

from kernel.audit import SystemActor, record_audit
from kernel.clock import Clock
from kernel.db import Base, Database
from kernel.personal_data import FieldCipher


@dataclass(frozen=True)
class EncryptedColumn:
    model: type[Base]
    column: str
    context: str  # the associated data the values were encrypted with

    @property
    def table(self) -> Table:
        return cast(Table, self.model.__table__)

    @property
    def name(self) -> str:
        return f"{self.table.name}.{self.column}"


@dataclass
class RotationReport:
    key: str
    rewritten: dict[str, int] = field(default_factory=dict)
    remaining: dict[str, int] = field(default_factory=dict)  # rows still under old keys (locked while running)

    @property
    def complete(self) -> bool:
        return not any(self.remaining.values())


async def count_stale(database: Database, cipher: FieldCipher, column: EncryptedColumn) -> int:
    value = column.table.c[column.column]
    async with database.unit_of_work() as session:
        found = await session.scalar(select(func.count()).where(
            value.is_not(None), not_(value.startswith(cipher.current_prefix, autoescape=True))))
    return int(found or 0)


async def rotate(database: Database, clock: Clock, cipher: FieldCipher, columns: Sequence[EncryptedColumn], *,
                 batch: int = 500, on_start: Callable[[EncryptedColumn, int], None] | None = None,
                 on_batch: Callable[[EncryptedColumn, int], None] | None = None) -> RotationReport:
    """Rewrite every value of `columns` that is not under the active key and cipher, walking each table once in
    primary-key order (keyset pages, so a large table such as the partitioned telemetry is not rescanned)."""
    report = RotationReport(key=cipher.active_key)
    for column in columns:
        table = column.table
        keys = list(table.primary_key.columns)
        value = table.c[column.column]
        stale = (value.is_not(None), not_(value.startswith(cipher.current_prefix, autoescape=True)))
        if on_start is not None:
            on_start(column, await count_stale(database, cipher, column))
        done, last = 0, None
        while True:
            async with database.unit_of_work() as session:
                query = select(*keys, value).where(*stale)
                if last is not None:
                    query = query.where(tuple_(*keys) > tuple_(*last))
                rows = (await session.execute(query.order_by(*keys).limit(batch)
                                              .with_for_update(skip_locked=True))).all()
                if not rows:
                    break
                match = and_(*(k == bindparam(f"_k{i}") for i, k in enumerate(keys)))
                await session.execute(
                    update(table).where(match).values({column.column: bindparam("_value")}),
                    [{**{f"_k{i}": row[i] for i in range(len(keys))},
                      "_value": cipher.reencrypt(row[-1], context=column.context)} for row in rows])
                done += len(rows)
                last = tuple(rows[-1][:len(keys)])
                await record_audit(session, clock, SystemActor("crypto-rotate"), "crypto.rotate", "column",
                                   column.name, {"rows": len(rows), "key": cipher.active_key})
            if on_batch is not None:
                on_batch(column, len(rows))
        report.rewritten[column.name] = done
        report.remaining[column.name] = await count_stale(database, cipher, column)
    return report
