"""Identifiers from URLs: an id that is not even well-formed names nothing, so it is a 404 like an unknown one."""

from __future__ import annotations

import uuid

from kernel.errors import NotFound


def parse_id(value: str, what: str) -> uuid.UUID:
    """The UUID in a path segment, or 404 `{what} not found` (never a 422 that tells ids apart)."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound(f"{what} not found") from None
