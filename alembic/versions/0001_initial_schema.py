"""initial schema: accounts, registry (organisations, caregivers, elders, devices, catalogue), outbox, audit

Hand-checked after autogenerate. Besides the tables: the outbox stream sequence, the national service catalogue
(orders/catalogue.py) and the triggers that keep the audit tables append-only for every role.

Revision ID: 0001
Revises:
Create Date: 2026-11-23 18:01:45.445181
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from kernel.audit import AUDIT_GUARD_SQL
from orders.catalogue import CATALOGUE

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(sa.schema.CreateSequence(sa.Sequence('outbox_stream_seq')))
    op.create_table('audit_log',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('at', sa.TIMESTAMP(timezone=True), nullable=False),
    sa.Column('actor_id', sa.String(length=100), nullable=False),
    sa.Column('actor_role', sa.String(length=30), nullable=False),
    sa.Column('action', sa.String(length=100), nullable=False),
    sa.Column('entity', sa.String(length=60), nullable=False),
    sa.Column('entity_id', sa.String(length=100), nullable=True),
    sa.Column('summary', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('outcome', sa.String(length=10), nullable=False),
    sa.Column('request_id', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log'))
    )
    op.create_table('elders',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('id_number_enc', sa.String(length=300), nullable=False),
    sa.Column('id_number_bidx', sa.String(length=64), nullable=False),
    sa.Column('id_number_masked', sa.String(length=20), nullable=False),
    sa.Column('phone_enc', sa.String(length=300), nullable=True),
    sa.Column('phone_bidx', sa.String(length=64), nullable=True),
    sa.Column('phone_masked', sa.String(length=20), nullable=True),
    sa.Column('address_enc', sa.String(length=1200), nullable=False),
    sa.Column('address_masked', sa.String(length=40), nullable=False),
    sa.Column('emergency_contacts_enc', sa.String(length=4000), nullable=True),
    sa.Column('emergency_contacts_masked', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('gender', sa.String(length=6), nullable=False),
    sa.Column('birth_date', sa.Date(), nullable=False),
    sa.Column('lat', sa.Float(), nullable=False),
    sa.Column('lon', sa.Float(), nullable=False),
    sa.Column('region_code', sa.String(length=6), nullable=False),
    sa.Column('town_code', sa.String(length=9), nullable=True),
    sa.Column('village_code', sa.String(length=12), nullable=True),
    sa.Column('categories', sa.ARRAY(sa.String(length=20)), nullable=False),
    sa.Column('assessment_level', sa.SmallInteger(), nullable=False),
    sa.Column('languages', sa.ARRAY(sa.String(length=8)), nullable=False),
    sa.Column('preferences', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('status_changed_at', sa.TIMESTAMP(timezone=True), nullable=True),
    sa.Column('created_at', sa.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("categories <@ ARRAY['tekun','dibao','gaoling','shineng','shizhi','duju','kongchao','liushou','jisheng_tefu','youfu','zhongdu_canji']::varchar[]", name=op.f('ck_elders_categories_known')),
    sa.CheckConstraint("gender IN ('male','female')", name=op.f('ck_elders_gender_known')),
    sa.CheckConstraint("region_code ~ '^[0-9]{6}$'", name=op.f('ck_elders_region_code_shape')),
    sa.CheckConstraint("status IN ('active','deceased','moved')", name=op.f('ck_elders_status_known')),
    sa.CheckConstraint('assessment_level BETWEEN 0 AND 4', name=op.f('ck_elders_assessment_level_range')),
    sa.CheckConstraint('lat BETWEEN -90 AND 90 AND lon BETWEEN -180 AND 180', name=op.f('ck_elders_coordinates_range')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_elders')),
    sa.UniqueConstraint('id_number_bidx', name=op.f('uq_elders_id_number_bidx'))
    )
    op.create_index('ix_elders_created', 'elders', ['created_at', 'id'], unique=False)
    op.create_index(op.f('ix_elders_phone_bidx'), 'elders', ['phone_bidx'], unique=False)
    op.create_index(op.f('ix_elders_region_code'), 'elders', ['region_code'], unique=False)
    op.create_table('organizations',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('region_code', sa.String(length=6), nullable=False),
    sa.Column('created_at', sa.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("region_code ~ '^[0-9]{6}$'", name=op.f('ck_organizations_region_code_shape')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_organizations'))
    )
    op.create_index(op.f('ix_organizations_region_code'), 'organizations', ['region_code'], unique=False)
    op.create_table('outbox',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('event_type', sa.String(length=100), nullable=False),
    sa.Column('aggregate_id', sa.String(length=100), nullable=False),
    sa.Column('payload', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('occurred_at', sa.TIMESTAMP(timezone=True), nullable=False),
    sa.Column('created_at', sa.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('published_at', sa.TIMESTAMP(timezone=True), nullable=True),
    sa.Column('stream_seq', sa.BigInteger(), nullable=True),
    sa.Column('attempts', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox')),
    sa.UniqueConstraint('stream_seq', name=op.f('uq_outbox_stream_seq'))
    )
    op.create_index('ix_outbox_unpublished', 'outbox', ['id'], unique=False, postgresql_where=sa.text('published_at IS NULL'))
    op.create_table('services',
    sa.Column('code', sa.String(length=40), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('unit', sa.String(length=8), nullable=False),
    sa.Column('price_fen', sa.Integer(), nullable=False),
    sa.Column('required_skill', sa.String(length=40), nullable=True),
    sa.Column('min_certificate_level', sa.String(length=12), nullable=False),
    sa.Column('default_duration_min', sa.Integer(), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.CheckConstraint("unit IN ('visit','hour')", name=op.f('ck_services_unit_known')),
    sa.CheckConstraint('default_duration_min > 0', name=op.f('ck_services_duration_positive')),
    sa.CheckConstraint('price_fen >= 0', name=op.f('ck_services_price_not_negative')),
    sa.PrimaryKeyConstraint('code', name=op.f('pk_services'))
    )
    op.create_table('audit_seal',
    sa.Column('chain_seq', sa.BigInteger(), nullable=False),
    sa.Column('audit_id', sa.BigInteger(), nullable=False),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.Column('sealed_at', sa.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['audit_id'], ['audit_log.id'], name=op.f('fk_audit_seal_audit_id_audit_log')),
    sa.PrimaryKeyConstraint('chain_seq', name=op.f('pk_audit_seal')),
    sa.UniqueConstraint('audit_id', name=op.f('uq_audit_seal_audit_id'))
    )
    op.create_table('caregivers',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('organization_id', sa.Uuid(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('phone_enc', sa.String(length=300), nullable=False),
    sa.Column('phone_bidx', sa.String(length=64), nullable=False),
    sa.Column('phone_masked', sa.String(length=20), nullable=False),
    sa.Column('gender', sa.String(length=6), nullable=False),
    sa.Column('languages', sa.ARRAY(sa.String(length=8)), nullable=False),
    sa.Column('skills', sa.ARRAY(sa.String(length=40)), nullable=False),
    sa.Column('certificate_level', sa.String(length=12), nullable=False),
    sa.Column('home_lat', sa.Float(), nullable=True),
    sa.Column('home_lon', sa.Float(), nullable=True),
    sa.Column('shifts', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("certificate_level IN ('none','junior','intermediate','senior','medical')", name=op.f('ck_caregivers_certificate_level_known')),
    sa.CheckConstraint("gender IN ('male','female')", name=op.f('ck_caregivers_gender_known')),
    sa.CheckConstraint('(home_lat IS NULL) = (home_lon IS NULL)', name=op.f('ck_caregivers_home_base_complete')),
    sa.CheckConstraint('home_lat BETWEEN -90 AND 90 AND home_lon BETWEEN -180 AND 180', name=op.f('ck_caregivers_home_base_range')),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], name=op.f('fk_caregivers_organization_id_organizations')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_caregivers')),
    sa.UniqueConstraint('phone_bidx', name=op.f('uq_caregivers_phone_bidx'))
    )
    op.create_index(op.f('ix_caregivers_organization_id'), 'caregivers', ['organization_id'], unique=False)
    op.create_index('ix_caregivers_skills', 'caregivers', ['skills'], unique=False, postgresql_using='gin')
    op.create_table('devices',
    sa.Column('device_id', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('elder_id', sa.Uuid(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('revoked_at', sa.TIMESTAMP(timezone=True), nullable=True),
    sa.Column('online', sa.Boolean(), nullable=False),
    sa.Column('last_seen_at', sa.TIMESTAMP(timezone=True), nullable=True),
    sa.Column('battery', sa.SmallInteger(), nullable=True),
    sa.Column('created_at', sa.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("(status = 'revoked') = (revoked_at IS NOT NULL)", name=op.f('ck_devices_revoked_has_time')),
    sa.CheckConstraint("device_id ~ '^[A-Za-z0-9_.:-]{3,64}$'", name=op.f('ck_devices_device_id_shape')),
    sa.CheckConstraint("kind IN ('call_button','wristband','bed_sensor','smart_speaker','gateway')", name=op.f('ck_devices_kind_known')),
    sa.CheckConstraint("status IN ('active','revoked')", name=op.f('ck_devices_status_known')),
    sa.CheckConstraint('battery BETWEEN 0 AND 100', name=op.f('ck_devices_battery_range')),
    sa.ForeignKeyConstraint(['elder_id'], ['elders.id'], name=op.f('fk_devices_elder_id_elders')),
    sa.PrimaryKeyConstraint('device_id', name=op.f('pk_devices'))
    )
    op.create_index(op.f('ix_devices_elder_id'), 'devices', ['elder_id'], unique=False)
    op.create_table('users',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('password_hash', sa.String(length=200), nullable=False),
    sa.Column('role', sa.String(length=20), nullable=False),
    sa.Column('organization_id', sa.Uuid(), nullable=True),
    sa.Column('region_code', sa.String(length=12), nullable=True),
    sa.Column('elder_ids', sa.ARRAY(sa.Uuid()), server_default='{}', nullable=False),
    sa.Column('caregiver_id', sa.Uuid(), nullable=True),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('failed_logins', sa.Integer(), nullable=False),
    sa.Column('locked_until', sa.TIMESTAMP(timezone=True), nullable=True),
    sa.Column('created_at', sa.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("role <> 'caregiver' OR caregiver_id IS NOT NULL", name=op.f('ck_users_caregiver_login_has_caregiver')),
    sa.CheckConstraint("role <> 'org_admin' OR organization_id IS NOT NULL", name=op.f('ck_users_org_admin_has_organization')),
    sa.CheckConstraint("role IN ('admin','dispatcher','org_admin','caregiver','elder','auditor','finance')", name=op.f('ck_users_role_known')),
    sa.CheckConstraint("role NOT IN ('dispatcher','auditor','finance') OR region_code IS NOT NULL", name=op.f('ck_users_regional_role_has_region')),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], name=op.f('fk_users_organization_id_organizations')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('username', name=op.f('uq_users_username'))
    )
    services = sa.table(
        'services', sa.column('code', sa.String), sa.column('name', sa.String), sa.column('unit', sa.String),
        sa.column('price_fen', sa.Integer), sa.column('required_skill', sa.String),
        sa.column('min_certificate_level', sa.String), sa.column('default_duration_min', sa.Integer),
        sa.column('active', sa.Boolean),
    )
    op.bulk_insert(services, [
        {"code": e.code, "name": e.name, "unit": e.unit, "price_fen": e.price_fen, "required_skill": e.required_skill,
         "min_certificate_level": e.min_certificate_level, "default_duration_min": e.default_duration_min,
         "active": True}
        for e in CATALOGUE
    ])
    for statement in AUDIT_GUARD_SQL:
        op.execute(statement)


def downgrade() -> None:
    op.drop_table('users')
    op.drop_index(op.f('ix_devices_elder_id'), table_name='devices')
    op.drop_table('devices')
    op.drop_index('ix_caregivers_skills', table_name='caregivers', postgresql_using='gin')
    op.drop_index(op.f('ix_caregivers_organization_id'), table_name='caregivers')
    op.drop_table('caregivers')
    op.drop_table('audit_seal')
    op.drop_table('services')
    op.drop_index('ix_outbox_unpublished', table_name='outbox', postgresql_where=sa.text('published_at IS NULL'))
    op.drop_table('outbox')
    op.drop_index(op.f('ix_organizations_region_code'), table_name='organizations')
    op.drop_table('organizations')
    op.drop_index(op.f('ix_elders_region_code'), table_name='elders')
    op.drop_index(op.f('ix_elders_phone_bidx'), table_name='elders')
    op.drop_index('ix_elders_created', table_name='elders')
    op.drop_table('elders')
    op.drop_table('audit_log')
    op.execute('DROP SEQUENCE outbox_stream_seq')
    op.execute('DROP FUNCTION IF EXISTS vnh_audit_is_append_only()')
