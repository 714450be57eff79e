"""orders with history and idempotency keys, offers (one accept per order), visits and their flags; caregiver duty
and rating columns

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 18:15:12.432839
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('orders',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('elder_id', sa.Uuid(), nullable=False),
    sa.Column('service_code', sa.String(length=40), nullable=False),
    sa.Column('region_code', sa.String(length=6), nullable=False),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('priority', sa.String(length=6), nullable=False),
    sa.Column('channel', sa.String(length=10), nullable=False),
    sa.Column('asap', sa.Boolean(), nullable=False),
    sa.Column('window_start', sa.TIMESTAMP(timezone=True), nullable=False),
    sa.Column('window_end', sa.TIMESTAMP(timezone=True), nullable=False),
    sa.Column('scheduled', sa.Boolean(), nullable=False),
    sa.Column('planned_minutes', sa.Integer(), nullable=False),
    sa.Column('notes', sa.String(length=1000), nullable=True),
    sa.Column('price_fen', sa.Integer(), nullable=False),
    sa.Column('quota_fen', sa.Integer(), nullable=False),
    sa.Column('copay_fen', sa.Integer(), nullable=False),
    sa.Column('program_id', sa.Uuid(), nullable=True),
    sa.Column('service_month', sa.Date(), nullable=False),
    sa.Column('assigned_caregiver_id', sa.Uuid(), nullable=True),
    sa.Column('visit_id', sa.Uuid(), nullable=True),
    sa.Column('created_by', sa.String(length=100), nullable=False),
    sa.Column('created_at', sa.TIMESTAMP(timezone=True), nullable=False),
    sa.Column('updated_at', sa.TIMESTAMP(timezone=True), nullable=False),
    sa.CheckConstraint("channel IN ('app','hotline','device','caregiver')", name=op.f('ck_orders_channel_known')),
    sa.CheckConstraint("priority IN ('normal','urgent')", name=op.f('ck_orders_priority_known')),
    sa.CheckConstraint("status IN ('created','dispatching','offered','assigned','en_route','in_service','completed','confirmed','cancelled','unfulfilled')", name=op.f('ck_orders_status_known')),
    sa.CheckConstraint('planned_minutes > 0', name=op.f('ck_orders_planned_minutes_positive')),
    sa.CheckConstraint('price_fen >= 0 AND quota_fen >= 0 AND copay_fen >= 0 AND quota_fen + copay_fen = price_fen', name=op.f('ck_orders_price_split')),
    sa.CheckConstraint('window_end > window_start', name=op.f('ck_orders_window_ordered')),
    sa.ForeignKeyConstraint(['elder_id'], ['elders.id'], name=op.f('fk_orders_elder_id_elders')),
    sa.ForeignKeyConstraint(['service_code'], ['services.code'], name=op.f('fk_orders_service_code_services')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_orders'))
    )
    op.create_index(op.f('ix_orders_assigned_caregiver_id'), 'orders', ['assigned_caregiver_id'], unique=False)
    op.create_index('ix_orders_created', 'orders', ['created_at', 'id'], unique=False)
    op.create_index(op.f('ix_orders_elder_id'), 'orders', ['elder_id'], unique=False)
    op.create_index('ix_orders_open_scheduled', 'orders', ['region_code', 'window_start'], unique=False, postgresql_where=sa.text("scheduled AND status = 'created'"))
    op.create_index(op.f('ix_orders_region_code'), 'orders', ['region_code'], unique=False)
    op.create_index(op.f('ix_orders_status'), 'orders', ['status'], unique=False)
    op.create_table('idempotency_keys',
    sa.Column('actor', sa.String(length=100), nullable=False),
    sa.Column('key', sa.String(length=200), nullable=False),
    sa.Column('request_hash', sa.String(length=64), nullable=False),
    sa.Column('order_id', sa.Uuid(), nullable=False),
    sa.Column('created_at', sa.TIMESTAMP(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['order_id'], ['orders.id'], name=op.f('fk_idempotency_keys_order_id_orders')),
    sa.PrimaryKeyConstraint('actor', 'key', name=op.f('pk_idempotency_keys'))
    )
    op.create_table('offers',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('order_id', sa.Uuid(), nullable=False),
    sa.Column('caregiver_id', sa.Uuid(), nullable=False),
    sa.Column('kind', sa.String(length=10), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('created_at', sa.TIMESTAMP(timezone=True), nullable=False),
    sa.Column('expires_at', sa.TIMESTAMP(timezone=True), nullable=False),
    sa.Column('responded_at', sa.TIMESTAMP(timezone=True), nullable=True),
    sa.Column('reason', sa.String(length=500), nullable=True),
    sa.Column('distance_m', sa.Float(), nullable=True),
    sa.Column('score', sa.Float(), nullable=True),
    sa.CheckConstraint("kind IN ('loop','urgent','batch','manual')", name=op.f('ck_offers_kind_known')),
    sa.CheckConstraint("status IN ('pending','accepted','declined','expired','withdrawn')", name=op.f('ck_offers_status_known')),
    sa.ForeignKeyConstraint(['caregiver_id'], ['caregivers.id'], name=op.f('fk_offers_caregiver_id_caregivers')),
    sa.ForeignKeyConstraint(['order_id'], ['orders.id'], name=op.f('fk_offers_order_id_orders')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_offers'))
    )
    op.create_index('ix_offers_caregiver', 'offers', ['caregiver_id', 'status'], unique=False)
    op.create_index(op.f('ix_offers_order_id'), 'offers', ['order_id'], unique=False)
    op.create_index('ix_offers_pending_expiry', 'offers', ['expires_at'], unique=False, postgresql_where=sa.text("status = 'pending'"))
    op.create_index('uq_offers_one_accept', 'offers', ['order_id'], unique=True, postgresql_where=sa.text("status = 'accepted'"))
    op.create_index('uq_offers_one_pending_each', 'offers', ['order_id', 'caregiver_id'], unique=True, postgresql_where=sa.text("status = 'pending'"))
    op.create_table('order_events',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('order_id', sa.Uuid(), nullable=False),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('event', sa.String(length=20), nullable=False),
    sa.Column('at', sa.TIMESTAMP(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=100), nullable=False),
    sa.Column('reason', sa.String(length=500), nullable=True),
    sa.ForeignKeyConstraint(['order_id'], ['orders.id'], name=op.f('fk_order_events_order_id_orders')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_order_events'))
    )
    op.create_index(op.f('ix_order_events_order_id'), 'order_events', ['order_id'], unique=False)
    op.create_table('visits',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('order_id', sa.Uuid(), nullable=False),
    sa.Column('caregiver_id', sa.Uuid(), nullable=False),
    sa.Column('organization_id', sa.Uuid(), nullable=False),
    sa.Column('elder_id', sa.Uuid(), nullable=False),
    sa.Column('service_code', sa.String(length=40), nullable=False),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('window_start', sa.TIMESTAMP(timezone=True), nullable=False),
    sa.Column('window_end', sa.TIMESTAMP(timezone=True), nullable=False),
    sa.Column('assigned_at', sa.TIMESTAMP(timezone=True), nullable=False),
    sa.Column('departed_at', sa.TIMESTAMP(timezone=True), nullable=True),
    sa.Column('check_in_at', sa.TIMESTAMP(timezone=True), nullable=True),
    sa.Column('check_in_lat', sa.Float(), nullable=True),
    sa.Column('check_in_lon', sa.Float(), nullable=True),
    sa.Column('check_in_distance_m', sa.Float(), nullable=True),
    sa.Column('check_out_at', sa.TIMESTAMP(timezone=True), nullable=True),
    sa.Column('check_out_lat', sa.Float(), nullable=True),
    sa.Column('check_out_lon', sa.Float(), nullable=True),
    sa.Column('duration_min', sa.Integer(), nullable=True),
    sa.Column('tasks_done', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('notes', sa.String(length=2000), nullable=True),
    sa.Column('outcome', sa.String(length=12), nullable=True),
    sa.Column('actual_price_fen', sa.Integer(), nullable=True),
    sa.Column('confirmed_at', sa.TIMESTAMP(timezone=True), nullable=True),
    sa.Column('confirmed_via', sa.String(length=10), nullable=True),
    sa.Column('rating', sa.SmallInteger(), nullable=True),
    sa.Column('comment', sa.String(length=1000), nullable=True),
    sa.Column('withdrawn_reason', sa.String(length=500), nullable=True),
    sa.Column('billing', sa.String(length=10), nullable=False),
    sa.CheckConstraint("billing IN ('pending','held','captured','excluded')", name=op.f('ck_visits_billing_known')),
    sa.CheckConstraint("outcome IN ('completed','elder_absent','aborted')", name=op.f('ck_visits_outcome_known')),
    sa.CheckConstraint("status IN ('assigned','en_route','in_service','completed','withdrawn')", name=op.f('ck_visits_status_known')),
    sa.CheckConstraint('check_out_at IS NULL OR check_in_at IS NOT NULL', name=op.f('ck_visits_check_out_after_check_in')),
    sa.CheckConstraint('rating BETWEEN 1 AND 5', name=op.f('ck_visits_rating_range')),
    sa.ForeignKeyConstraint(['caregiver_id'], ['caregivers.id'], name=op.f('fk_visits_caregiver_id_caregivers')),
    sa.ForeignKeyConstraint(['elder_id'], ['elders.id'], name=op.f('fk_visits_elder_id_elders')),
    sa.ForeignKeyConstraint(['order_id'], ['orders.id'], name=op.f('fk_visits_order_id_orders')),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], name=op.f('fk_visits_organization_id_organizations')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_visits'))
    )
    op.create_index(op.f('ix_visits_caregiver_id'), 'visits', ['caregiver_id'], unique=False)
    op.create_index('ix_visits_caregiver_window', 'visits', ['caregiver_id', 'window_start'], unique=False)
    op.create_index(op.f('ix_visits_elder_id'), 'visits', ['elder_id'], unique=False)
    op.create_index(op.f('ix_visits_order_id'), 'visits', ['order_id'], unique=False)
    op.create_index('uq_visits_live_order', 'visits', ['order_id'], unique=True, postgresql_where=sa.text("status <> 'withdrawn'"))
    op.create_table('visit_flags',
    sa.Column('visit_id', sa.Uuid(), nullable=False),
    sa.Column('flag', sa.String(length=20), nullable=False),
    sa.Column('raised_at', sa.TIMESTAMP(timezone=True), nullable=False),
    sa.Column('details', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('decision', sa.String(length=10), nullable=True),
    sa.Column('reason', sa.String(length=500), nullable=True),
    sa.Column('resolved_by', sa.String(length=100), nullable=True),
    sa.Column('resolved_at', sa.TIMESTAMP(timezone=True), nullable=True),
    sa.CheckConstraint("decision IN ('approved','rejected')", name=op.f('ck_visit_flags_decision_known')),
    sa.CheckConstraint("flag IN ('far_check_in','too_short','overlap','no_confirmation','impossible_travel')", name=op.f('ck_visit_flags_flag_known')),
    sa.CheckConstraint('(decision IS NULL) = (resolved_at IS NULL)', name=op.f('ck_visit_flags_resolution_complete')),
    sa.ForeignKeyConstraint(['visit_id'], ['visits.id'], name=op.f('fk_visit_flags_visit_id_visits')),
    sa.PrimaryKeyConstraint('visit_id', 'flag', name=op.f('pk_visit_flags'))
    )
    op.create_index('ix_visit_flags_open', 'visit_flags', ['flag'], unique=False, postgresql_where=sa.text('decision IS NULL'))
    op.add_column('caregivers', sa.Column('on_duty', sa.Boolean(), server_default=sa.text('false'), nullable=False))
    op.add_column('caregivers', sa.Column('duty_changed_at', sa.TIMESTAMP(timezone=True), nullable=True))
    op.add_column('caregivers', sa.Column('rating_sum', sa.Integer(), server_default=sa.text('0'), nullable=False))
    op.add_column('caregivers', sa.Column('rating_count', sa.Integer(), server_default=sa.text('0'), nullable=False))


def downgrade() -> None:
    op.drop_column('caregivers', 'rating_count')
    op.drop_column('caregivers', 'rating_sum')
    op.drop_column('caregivers', 'duty_changed_at')
    op.drop_column('caregivers', 'on_duty')
    op.drop_index('ix_visit_flags_open', table_name='visit_flags', postgresql_where=sa.text('decision IS NULL'))
    op.drop_table('visit_flags')
    op.drop_index('uq_visits_live_order', table_name='visits', postgresql_where=sa.text("status <> 'withdrawn'"))
    op.drop_index(op.f('ix_visits_order_id'), table_name='visits')
    op.drop_index(op.f('ix_visits_elder_id'), table_name='visits')
    op.drop_index('ix_visits_caregiver_window', table_name='visits')
    op.drop_index(op.f('ix_visits_caregiver_id'), table_name='visits')
    op.drop_table('visits')
    op.drop_index(op.f('ix_order_events_order_id'), table_name='order_events')
    op.drop_table('order_events')
    op.drop_index('uq_offers_one_pending_each', table_name='offers', postgresql_where=sa.text("status = 'pending'"))
    op.drop_index('uq_offers_one_accept', table_name='offers', postgresql_where=sa.text("status = 'accepted'"))
    op.drop_index('ix_offers_pending_expiry', table_name='offers', postgresql_where=sa.text("status = 'pending'"))
    op.drop_index(op.f('ix_offers_order_id'), table_name='offers')
    op.drop_index('ix_offers_caregiver', table_name='offers')
    op.drop_table('offers')
    op.drop_table('idempotency_keys')
    op.drop_index(op.f('ix_orders_status'), table_name='orders')
    op.drop_index(op.f('ix_orders_region_code'), table_name='orders')
    op.drop_index('ix_orders_open_scheduled', table_name='orders', postgresql_where=sa.text("scheduled AND status = 'created'"))
    op.drop_index(op.f('ix_orders_elder_id'), table_name='orders')
    op.drop_index('ix_orders_created', table_name='orders')
    op.drop_index(op.f('ix_orders_assigned_caregiver_id'), table_name='orders')
    op.drop_table('orders')
