"""elders: the exact home point sealed like the address; a ~1 km cell kept in clear

`elders.home_enc`: the exact WGS-84 home (`lat,lon`, Python float repr) encrypted with the personal-data field cipher
(kernel.personal_data, context `elders.home`; `vnh crypto rotate` covers it). `coarse_lat`/`coarse_lon`: the point
rounded to 0.01° (about 1.1 km), what staff reads, maps, alarms and outbox events show and what search may use.

Existing rows are sealed here, in Python, before the plaintext `lat`/`lon` columns are dropped. The cipher needs the
field keys, which live in settings, not in the database: `vnh migrate` (and `vnh serve`, which migrates) hands its
FieldCipher to Alembic in `config.attributes["field_cipher"]`; a bare `alembic upgrade` builds one from the
environment (`VNH_CRYPTO__KEYS`, `VNH_CRYPTO__BLIND_INDEX_KEY`) and stops with a message when there are rows to seal
and no keys. A table without rows needs no key.

`DROP COLUMN` only hides a column: its values stay in the table's pages until each row is rewritten. So the table is
rewritten in the same transaction (`CLUSTER` on the primary key, which reconstructs every tuple with the dropped
columns nulled; then `SET WITHOUT CLUSTER` to leave no clustering mark): afterwards the data files hold no plaintext
home. The write-ahead log of the past, and base backups taken before, still do until they age out (README).

Revision ID: 0014
Revises: 0007
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import context, op

revision: str = "0014"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HOME_CONTEXT = "elders.home"  # orders.home.HOME_CONTEXT: a copy, so this revision never changes with the code
_BATCH = 2000


def _cipher() -> Any:
    cipher = context.config.attributes.get("field_cipher")
    if cipher is not None:
        return cipher
    from kernel.personal_data import FieldCipher
    from kernel.settings import Settings

    try:
        return FieldCipher.from_settings(Settings())
    except RuntimeError as exc:
        raise RuntimeError(
            "revision 0014 seals the elders' home coordinates and needs the field keys: run `vnh migrate` "
            "(it passes its cipher), or set VNH_CRYPTO__KEYS and VNH_CRYPTO__BLIND_INDEX_KEY") from exc


def upgrade() -> None:
    op.add_column("elders", sa.Column("home_enc", sa.String(length=300), nullable=True))
    op.add_column("elders", sa.Column("coarse_lat", sa.Float(), nullable=True))
    op.add_column("elders", sa.Column("coarse_lon", sa.Float(), nullable=True))
    bind = op.get_bind()
    select_batch = sa.text("SELECT id, lat, lon FROM elders WHERE home_enc IS NULL ORDER BY id LIMIT :n")
    seal = sa.text("UPDATE elders SET home_enc = :home, coarse_lat = :clat, coarse_lon = :clon WHERE id = :id")
    cipher = None
    while rows := bind.execute(select_batch, {"n": _BATCH}).all():
        cipher = cipher or _cipher()
        bind.execute(seal, [{"id": r.id, "home": cipher.encrypt(f"{r.lat!r},{r.lon!r}", context=HOME_CONTEXT),
                             "clat": round(r.lat, 2), "clon": round(r.lon, 2)} for r in rows])
    op.alter_column("elders", "home_enc", nullable=False)
    op.alter_column("elders", "coarse_lat", nullable=False)
    op.alter_column("elders", "coarse_lon", nullable=False)
    op.drop_constraint(op.f("ck_elders_coordinates_range"), "elders", type_="check")
    op.drop_column("elders", "lat")
    op.drop_column("elders", "lon")
    op.create_check_constraint(op.f("ck_elders_coarse_coordinates_range"), "elders",
                               "coarse_lat BETWEEN -90 AND 90 AND coarse_lon BETWEEN -180 AND 180")
    # rewrite every row so the dropped plaintext columns leave the data files (see the module docstring)
    op.execute("CLUSTER elders USING pk_elders")
    op.execute("ALTER TABLE elders SET WITHOUT CLUSTER")


def downgrade() -> None:
    op.add_column("elders", sa.Column("lat", sa.Float(), nullable=True))
    op.add_column("elders", sa.Column("lon", sa.Float(), nullable=True))
    bind = op.get_bind()
    rows = bind.execute(sa.text("SELECT id, home_enc FROM elders")).all()
    if rows:
        cipher = _cipher()
        points = []
        for r in rows:
            lat, lon = (float(p) for p in cipher.decrypt(r.home_enc, context=HOME_CONTEXT).split(","))
            points.append({"id": r.id, "lat": lat, "lon": lon})
        bind.execute(sa.text("UPDATE elders SET lat = :lat, lon = :lon WHERE id = :id"), points)
    op.alter_column("elders", "lat", nullable=False)
    op.alter_column("elders", "lon", nullable=False)
    op.drop_constraint(op.f("ck_elders_coarse_coordinates_range"), "elders", type_="check")
    op.create_check_constraint(op.f("ck_elders_coordinates_range"), "elders",
                               "lat BETWEEN -90 AND 90 AND lon BETWEEN -180 AND 180")
    op.drop_column("elders", "coarse_lon")
    op.drop_column("elders", "coarse_lat")
    op.drop_column("elders", "home_enc")
