"""Every domain's tables on the one metadata (Alembic and the test harness import this)."""

from __future__ import annotations

import billing.models
import devices.models
import dispatch.models
import kernel.audit
import kernel.auth
import kernel.outbox
import orders.models
import supervision.models
from kernel.db import Base

metadata = Base.metadata

__all__ = ["billing", "devices", "dispatch", "kernel", "metadata", "orders", "supervision"]
