"""SQL of the orders domain (elders, orders, visits, service types). Other domains read these tables only through
the query functions below, which return small frozen read models, never ORM rows."""

from __future__ import annotations

# --- orders' own queries ------------------------------------------------------------------------------------


# --- read models for dispatch --------------------------------------------------------------------------------


# --- read models for devices and alarms ----------------------------------------------------------------------


# --- read models for billing ---------------------------------------------------------------------------------


# --- read models for supervision (auditors) and the console --------------------------------------------------
