"""SQL of the dispatch domain (organisations, caregivers, offers). Other domains read these tables only through
the query functions below, which return small frozen read models, never ORM rows."""

from __future__ import annotations

# --- dispatch's own queries ----------------------------------------------------------------------------------


# --- read models for devices and alarms ----------------------------------------------------------------------


# --- read models for billing ---------------------------------------------------------------------------------


# --- read models for supervision (auditors) and the console --------------------------------------------------
