#!/bin/sh
# Run by the postgres image once, when it initialises an empty data volume (/docker-entrypoint-initdb.d).
#
# Creates the login the vnh instances connect as (DATABASE_URL), with the password from .env.
# `vnh migrate`, run as the owner afterwards, finds the role and grants it what the service needs and
# no more (audit tables: INSERT and SELECT only). Left to itself it would create the role NOLOGIN,
# without a password — the owner must not know the service's password, and the service must not hold
# the owner's.
set -eu

app_role=${VNH_APP_DB_ROLE:-vnh_app}
: "${VNH_APP_DB_PASSWORD:?VNH_APP_DB_PASSWORD is required}"

psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v app_role="$app_role" -v app_password="$VNH_APP_DB_PASSWORD" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'app_role', :'app_password')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'app_role')
\gexec
SQL
