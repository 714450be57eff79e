"""Asserting which database rule refused a statement: the PostgreSQL error class and the constraint or trigger
function by name, never "some database error" (a bare `pytest.raises(DBAPIError)` passes on a typo too)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg
import pytest
from sqlalchemy.exc import DBAPIError


@contextmanager
def refused(kind: type[asyncpg.PostgresError], *, constraint: str | None = None, trigger: str | None = None,
            message: str | None = None) -> Iterator[None]:
    """The block fails with a PostgreSQL error of `kind` raised by `constraint` (its name) or by the trigger
    function `trigger` (named in the error's context), its message matching `message` (a regular expression)."""
    assert constraint or trigger, "say which rule refuses"
    with pytest.raises(DBAPIError) as caught:
        yield
    cause = caught.value.orig.__cause__ if caught.value.orig is not None else None
    assert isinstance(cause, kind), f"{type(cause).__name__}: {cause}"
    if constraint is not None:
        assert cause.constraint_name == constraint, f"refused by {cause.constraint_name!r}: {cause}"
    if trigger is not None:
        assert f"function {trigger}()" in (cause.context or ""), f"refused elsewhere: {cause.context!r}: {cause}"
    if message is not None:
        assert re.search(message, cause.message), cause.message
