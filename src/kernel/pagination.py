"""Keyset pagination: lists answer `{"items": [...], "next_cursor": "…" | null}`; the cursor is opaque."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Generic, TypeVar

from pydantic import BaseModel
from sqlalchemy import Select, tuple_
from sqlalchemy.orm import InstrumentedAttribute

from kernel.errors import Unprocessable
from kernel.fields import EARLIEST_TIME, LATEST_TIME

T = TypeVar("T")
R = TypeVar("R")
MAX_LIMIT = 500


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


def encode_cursor(at: datetime, row_id: uuid.UUID | int) -> str:
    key: str | int = row_id if isinstance(row_id, int) else str(row_id)
    return base64.urlsafe_b64encode(json.dumps([at.isoformat(), key]).encode()).decode()


def decode_cursor(cursor: str, id_type: type[uuid.UUID] | type[int] = uuid.UUID) -> tuple[datetime, uuid.UUID | int]:
    """The (time, id) a cursor names; anything forged or of the wrong id type is a 422 `invalid_cursor`."""
    try:
        at_text, rid = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        at = datetime.fromisoformat(at_text)
        # a forged time the database cannot hold (year 1 at +08:00) or without an offset is as bad as garbage
        if at.utcoffset() is None or not EARLIEST_TIME <= at < LATEST_TIME:
            raise ValueError("cursor time out of range")
        if id_type is int:
            if type(rid) is not int or not -(2**63) <= rid < 2**63:
                raise ValueError("cursor id is not a row number")
            return at, rid
        return at, uuid.UUID(rid)
    except Exception as exc:
        raise Unprocessable("invalid cursor", code="invalid_cursor") from exc


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise Unprocessable(f"limit must be 1..{MAX_LIMIT}", code="invalid_limit")
    return limit


def keyset(query: Select[T], at_col: InstrumentedAttribute[datetime],
           id_col: InstrumentedAttribute[uuid.UUID] | InstrumentedAttribute[int], cursor: str | None,
           limit: int) -> Select[T]:
    """Newest first, ties broken by id; fetch one more than asked to know whether there is a next page."""
    if cursor:
        id_type = int if id_col.type.python_type is int else uuid.UUID
        at, rid = decode_cursor(cursor, id_type)
        query = query.where(tuple_(at_col, id_col) < tuple_(at, rid))
    return query.order_by(at_col.desc(), id_col.desc()).limit(check_limit(limit) + 1)


def page_of(rows: list[R], limit: int, key: Callable[[R], tuple[datetime, uuid.UUID | int]]
            ) -> tuple[list[R], str | None]:
    """Rows fetched by `keyset` cut to `limit`, with the cursor of the next page when there is one."""
    if len(rows) > limit:
        rows = rows[:limit]
        return rows, encode_cursor(*key(rows[-1]))
    return rows, None
