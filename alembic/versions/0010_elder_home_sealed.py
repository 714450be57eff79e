"""elders: the exact home point sealed like the address; a ~1 km cell kept in clear; visits' check-in and
check-out points sealed too (they are taken at the same door)

`elders.home_enc`: the exact WGS-84 home (`lat,lon`, Python float repr) encrypted with the personal-data field cipher
(kernel.personal_data, context `elders.home`; `vnh crypto rotate` covers it). `coarse_lat`/`coarse_lon`: the point
rounded to 0.01° (about 1.1 km), what staff reads, maps, alarms and outbox events show and what search may use.
`visits.check_in_enc` / `check_out_enc`: the caregiver's check-in and check-out points, sealed the same way (contexts
`visits.check_in`, `visits.check_out`) in place of `check_in_lat/lon` and `check_out_lat/lon`.

Existing rows of both tables are sealed here, in Python, before the plaintext `lat`/`lon` columns are dropped. The cipher needs the
field keys, which live in settings, not in the database: `vnh migrate` (and `vnh serve`, which migrates) hands its
FieldCipher to Alembic in `config.attributes["field_cipher"]`; a bare `alembic upgrade` builds one from the
environment (`VNH_CRYPTO__KEYS`, `VNH_CRYPTO__BLIND_INDEX_KEY`) and stops with a message when there are rows to seal
and no keys. A table without rows needs no key.

`DROP COLUMN` only hides a column: its values stay in the table's pages until each row is rewritten. So each table is
rewritten in the same transaction (`CLUSTER` on the primary key, which reconstructs every tuple with the dropped
columns nulled; then `SET WITHOUT CLUSTER` to leave no clustering mark): afterwards the data files hold no plaintext
home. The write-ahead log of the past, and base backups taken before, still do until they age out (README).

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import context, op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# copies of orders.home's contexts, so this revision never changes with the code
HOME_CONTEXT = "elders.home"
VISIT_CONTEXTS = {"check_in": "visits.check_in", "check_out": "visits.check_out"}
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


def _point(cipher: Any, lat: float, lon: float, context: str) -> str:
    return str(cipher.encrypt(f"{lat!r},{lon!r}", context=context))


def _open(cipher: Any, token: str, context: str) -> tuple[float, float]:
    lat, lon = (float(p) for p in cipher.decrypt(token, context=context).split(","))
    return lat, lon


def _rewrite(table: str) -> None:
    """Every row rewritten with the dropped columns nulled (see the module docstring)."""
    op.execute(f"CLUSTER {table} USING pk_{table}")
    op.execute(f"ALTER TABLE {table} SET WITHOUT CLUSTER")


def _seal_visits(cipher_of: Any) -> None:
    bind = op.get_bind()
    for step, aad in VISIT_CONTEXTS.items():
        op.add_column("visits", sa.Column(f"{step}_enc", sa.String(length=300), nullable=True))
        select_batch = sa.text(f"SELECT id, {step}_lat AS lat, {step}_lon AS lon FROM visits "  # noqa: S608
                               f"WHERE {step}_lat IS NOT NULL AND {step}_enc IS NULL ORDER BY id LIMIT :n")
        seal = sa.text(f"UPDATE visits SET {step}_enc = :sealed WHERE id = :id")  # noqa: S608
        while rows := bind.execute(select_batch, {"n": _BATCH}).all():
            cipher = cipher_of()
            bind.execute(seal, [{"id": r.id, "sealed": _point(cipher, r.lat, r.lon, aad)} for r in rows])
        op.drop_column("visits", f"{step}_lat")
        op.drop_column("visits", f"{step}_lon")
    _rewrite("visits")


def upgrade() -> None:
    op.add_column("elders", sa.Column("home_enc", sa.String(length=300), nullable=True))
    op.add_column("elders", sa.Column("coarse_lat", sa.Float(), nullable=True))
    op.add_column("elders", sa.Column("coarse_lon", sa.Float(), nullable=True))
    bind = op.get_bind()
    select_batch = sa.text("SELECT id, lat, lon FROM elders WHERE home_enc IS NULL ORDER BY id LIMIT :n")
    seal = sa.text("UPDATE elders SET home_enc = :home, coarse_lat = :clat, coarse_lon = :clon WHERE id = :id")
    opened: list[Any] = []

    def cipher_of() -> Any:  # the keys are needed only when there are rows to seal
        if not opened:
            opened.append(_cipher())
        return opened[0]

    while rows := bind.execute(select_batch, {"n": _BATCH}).all():
        cipher = cipher_of()
        bind.execute(seal, [{"id": r.id, "home": _point(cipher, r.lat, r.lon, HOME_CONTEXT),
                             "clat": round(r.lat, 2), "clon": round(r.lon, 2)} for r in rows])
    op.alter_column("elders", "home_enc", nullable=False)
    op.alter_column("elders", "coarse_lat", nullable=False)
    op.alter_column("elders", "coarse_lon", nullable=False)
    op.drop_constraint(op.f("ck_elders_coordinates_range"), "elders", type_="check")
    op.drop_column("elders", "lat")
    op.drop_column("elders", "lon")
    op.create_check_constraint(op.f("ck_elders_coarse_coordinates_range"), "elders",
                               "coarse_lat BETWEEN -90 AND 90 AND coarse_lon BETWEEN -180 AND 180")
    _rewrite("elders")
    _seal_visits(cipher_of)


def downgrade() -> None:
    bind = op.get_bind()
    for step, aad in VISIT_CONTEXTS.items():
        op.add_column("visits", sa.Column(f"{step}_lat", sa.Float(), nullable=True))
        op.add_column("visits", sa.Column(f"{step}_lon", sa.Float(), nullable=True))
        sealed = bind.execute(sa.text(f"SELECT id, {step}_enc AS enc FROM visits "  # noqa: S608
                                      f"WHERE {step}_enc IS NOT NULL")).all()
        if sealed:
            cipher = _cipher()
            points = [dict(zip(("lat", "lon"), _open(cipher, r.enc, aad), strict=True), id=r.id)
                      for r in sealed]
            bind.execute(sa.text(f"UPDATE visits SET {step}_lat = :lat, {step}_lon = :lon "  # noqa: S608
                                 "WHERE id = :id"), points)
        op.drop_column("visits", f"{step}_enc")
    op.add_column("elders", sa.Column("lat", sa.Float(), nullable=True))
    op.add_column("elders", sa.Column("lon", sa.Float(), nullable=True))
    rows = bind.execute(sa.text("SELECT id, home_enc FROM elders")).all()
    if rows:
        cipher = _cipher()
        points = [dict(zip(("lat", "lon"), _open(cipher, r.home_enc, HOME_CONTEXT), strict=True), id=r.id)
                  for r in rows]
        bind.execute(sa.text("UPDATE elders SET lat = :lat, lon = :lon WHERE id = :id"), points)
    op.alter_column("elders", "lat", nullable=False)
    op.alter_column("elders", "lon", nullable=False)
    op.drop_constraint(op.f("ck_elders_coarse_coordinates_range"), "elders", type_="check")
    op.create_check_constraint(op.f("ck_elders_coordinates_range"), "elders",
                               "lat BETWEEN -90 AND 90 AND lon BETWEEN -180 AND 180")
    op.drop_column("elders", "coarse_lon")
    op.drop_column("elders", "coarse_lat")
    op.drop_column("elders", "home_enc")
