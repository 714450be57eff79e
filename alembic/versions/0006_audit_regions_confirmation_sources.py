"""audit rows carry the region of what they are about; visits record where their confirmation came from

Auditors are scoped to a region, so each audit row gets `region_code` at insert, resolved by a trigger from the
entity it names (orders, visits, offers, elders, devices, alarms, caregivers, organisations, programmes, contracts,
settlements, inspections, users), falling back to a `region_code` in its summary. The value is fixed at insert (the
append-only guard refuses updates) and is part of the sealed hash. This revision merges the billing, devices and
supervision branches because the trigger reads their tables.

`visits.confirmed_from` says which device or app installation confirmed a visit, for the supervision anomaly
"many visits confirmed from one device".

Revision ID: 0006
Revises: 0003, 0004, 0005
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = ("0003", "0004", "0005")
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RESOLVE_REGION = r"""
CREATE FUNCTION vnh_audit_region() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    target uuid;
    found text;
BEGIN
    IF NEW.region_code IS NOT NULL THEN
        RETURN NEW;
    END IF;
    IF NEW.entity = 'device' THEN
        SELECT e.region_code INTO found FROM devices d JOIN elders e ON e.id = d.elder_id
         WHERE d.device_id = NEW.entity_id;
    ELSIF NEW.entity_id ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
        target := NEW.entity_id::uuid;
        CASE NEW.entity
        WHEN 'elder' THEN
            SELECT region_code INTO found FROM elders WHERE id = target;
        WHEN 'order' THEN
            SELECT region_code INTO found FROM orders WHERE id = target;
        WHEN 'visit' THEN
            SELECT o.region_code INTO found FROM visits v JOIN orders o ON o.id = v.order_id WHERE v.id = target;
        WHEN 'offer' THEN
            SELECT o.region_code INTO found FROM offers f JOIN orders o ON o.id = f.order_id WHERE f.id = target;
        WHEN 'alarm' THEN
            SELECT region_code INTO found FROM alarms WHERE id = target;
        WHEN 'organization' THEN
            SELECT region_code INTO found FROM organizations WHERE id = target;
        WHEN 'caregiver' THEN
            SELECT g.region_code INTO found FROM caregivers c JOIN organizations g ON g.id = c.organization_id
             WHERE c.id = target;
        WHEN 'program' THEN
            SELECT region_code INTO found FROM programs WHERE id = target;
        WHEN 'contract' THEN
            SELECT coalesce(p.region_code, g.region_code) INTO found FROM contracts c
              JOIN organizations g ON g.id = c.organization_id LEFT JOIN programs p ON p.id = c.program_id
             WHERE c.id = target;
        WHEN 'settlement' THEN
            SELECT p.region_code INTO found FROM settlements s JOIN programs p ON p.id = s.program_id
             WHERE s.id = target;
        WHEN 'inspection' THEN
            SELECT region_code INTO found FROM inspections WHERE id = target;
        WHEN 'user' THEN
            SELECT region_code INTO found FROM users WHERE id = target;
        ELSE
            found := NULL;
        END CASE;
    END IF;
    IF found IS NULL AND NEW.summary ->> 'region_code' ~ '^[0-9]{6}([0-9]{3})?$' THEN
        found := NEW.summary ->> 'region_code';
    END IF;
    NEW.region_code := found;
    RETURN NEW;
END
$$
"""


def upgrade() -> None:
    op.add_column("audit_log", sa.Column("region_code", sa.String(12), nullable=True))
    op.create_index("ix_audit_log_region_code_id", "audit_log", ["region_code", "id"])
    op.execute(RESOLVE_REGION)
    op.execute("CREATE TRIGGER audit_log_region BEFORE INSERT ON audit_log FOR EACH ROW "
               "EXECUTE FUNCTION vnh_audit_region()")
    op.add_column("visits", sa.Column("confirmed_from", sa.String(80), nullable=True))
    op.create_index("ix_visits_confirmed_from", "visits", ["confirmed_from", "confirmed_at"],
                    postgresql_where=sa.text("confirmed_from IS NOT NULL"))


def downgrade() -> None:
    op.drop_index("ix_visits_confirmed_from", table_name="visits")
    op.drop_column("visits", "confirmed_from")
    op.execute("DROP TRIGGER IF EXISTS audit_log_region ON audit_log")
    op.execute("DROP FUNCTION IF EXISTS vnh_audit_region()")
    op.drop_index("ix_audit_log_region_code_id", table_name="audit_log")
    op.drop_column("audit_log", "region_code")
