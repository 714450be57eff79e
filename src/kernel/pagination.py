"""Keyset pagination: lists answer `{"items": [...], "next_cursor": "…" | null}`; the cursor is opaque."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime
from typing import Generic, TypeVar

from pydantic import BaseModel
from sqlalchemy import Select, tuple_
from sqlalchemy.orm import InstrumentedAttribute

from kernel.errors import Unprocessable
from kernel.fields import EARLIEST_TIME, LATEST_TIME

T = TypeVar("T")
MAX_LIMIT = 500


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


def encode_cursor(created_at: datetime, row_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(json.dumps([created_at.isoformat(), str(row_id)]).encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        created, rid = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        at = datetime.fromisoformat(created)
        # a forged time the database cannot hold (year 1 at +08:00) or without an offset is as bad as garbage
        if at.utcoffset() is None or not EARLIEST_TIME <= at < LATEST_TIME:
            raise ValueError("cursor time out of range")
        return at, uuid.UUID(rid)
    except Exception as exc:
        raise Unprocessable("invalid cursor", code="invalid_cursor") from exc


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise Unprocessable(f"limit must be 1..{MAX_LIMIT}", code="invalid_limit")
    return limit


def keyset(query: Select[T], created_col: InstrumentedAttribute[datetime],
           id_col: InstrumentedAttribute[uuid.UUID], cursor: str | None, limit: int) -> Select[T]:
    """Newest first; fetch one more than asked to know whether there is a next page."""
    if cursor:
        created, rid = decode_cursor(cursor)
        query = query.where(tuple_(created_col, id_col) < tuple_(created, rid))
    return query.order_by(created_col.desc(), id_col.desc()).limit(check_limit(limit) + 1)
