"""TLS for the service's own connections: PostgreSQL (asyncpg), Redis (redis-py) and MQTT (paho, the probe).

A URL says whether a connection is encrypted (`postgresql://…?sslmode=verify-full`, `rediss://`, `mqtts://`); the
certificates come from the URL's query where one names them, else from `VNH_TLS__*` (settings.TlsSettings), else the
system's trust store. Plain URLs (tests, the embedded servers on loopback) are left exactly as they were.

Every verifying mode checks the server's certificate against the CA and its name against the host in the URL:
a certificate issued by another CA, or for another name, ends the connection before a password is sent.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL, make_url

from kernel.settings import TlsSettings

# libpq's names (what people paste from their provider) and asyncpg's `ssl` (what SQLAlchemy's docs show)
_PG_MODE_KEYS = ("sslmode", "ssl")
_PG_FILE_KEYS = ("sslrootcert", "sslcert", "sslkey")
PG_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_PG_BOOL = {"true": "require", "1": "require", "on": "require", "false": "disable", "0": "disable", "off": "disable"}


def client_context(*, ca_file: str | Path | None = None, cert_file: str | Path | None = None,
                   key_file: str | Path | None = None, verify: bool = True, check_hostname: bool = True
                   ) -> ssl.SSLContext:
    """A client-side context: TLS 1.2 or newer, the server verified against `ca_file` (the system's trust store when
    None) and, with `check_hostname`, its certificate's name against the host connected to; `cert_file`/`key_file`
    present a client certificate (mutual TLS) when the server asks for one."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif not check_hostname:
        context.check_hostname = False
    if cert_file:
        context.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
    elif key_file:
        raise ValueError("a TLS client key needs its certificate (VNH_TLS__CERT_FILE or sslcert)")
    return context


def postgres_connect_args(url: str | URL, tls: TlsSettings | None = None) -> tuple[URL, dict[str, Any]]:
    """Split a PostgreSQL URL's TLS query (libpq's `sslmode`, `sslrootcert`, `sslcert`, `sslkey`, or asyncpg's `ssl`)
    into asyncpg's `ssl` connect argument, and the URL without it.

    SQLAlchemy hands every query item to `asyncpg.connect()` as a keyword, which knows no `sslmode` and reads
    `sslrootcert` only from a DSN or the environment: so the context is built here. The modes are libpq's:
    `verify-full` checks the chain and the host name, `verify-ca` the chain only, `require` encrypts and verifies the
    chain only when a CA is configured (as libpq does with a root certificate), `disable` never encrypts, and
    `prefer`/`allow` (and no mode at all: asyncpg's default) try TLS without verifying anything — never for a network
    a deployment does not own.
    """
    parsed = make_url(url) if isinstance(url, str) else url
    query = dict(parsed.query)

    def pop(key: str) -> str:  # a repeated key arrives as a tuple: the last one counts, as in libpq
        value = query.pop(key)
        return value[-1] if isinstance(value, tuple) else value

    modes = {pop(key) for key in _PG_MODE_KEYS if key in query}
    files = {key: pop(key) for key in _PG_FILE_KEYS if key in query}
    clean = parsed.set(query=query)
    if not modes and not files:
        return clean, {}
    if len(modes) > 1:
        raise ValueError(f"DATABASE_URL names two different TLS modes: {sorted(modes)}")
    raw = next(iter(modes)) if modes else "prefer"
    mode = _PG_BOOL.get(raw.lower(), raw.lower())
    if mode not in PG_MODES:
        raise ValueError(f"DATABASE_URL sslmode must be one of {', '.join(PG_MODES)}, got {raw!r}")
    if mode in ("disable", "allow", "prefer"):
        return clean, {"ssl": mode}
    ca_file = files.get("sslrootcert") or (tls.ca_file if tls else None)
    cert_file = files.get("sslcert") or (tls.cert_file if tls else None)
    key_file = files.get("sslkey") or (tls.key_file if tls else None)
    context = client_context(
        ca_file=ca_file, cert_file=cert_file, key_file=key_file,
        verify=mode != "require" or ca_file is not None, check_hostname=mode == "verify-full",
    )
    return clean, {"ssl": context}


def redis_options(url: str, tls: TlsSettings | None = None) -> dict[str, Any]:
    """Keyword arguments for `Redis.from_url(url, ...)`: for `rediss://` the configured CA and client certificate,
    with the certificate and host name verified. Query items of the URL (`ssl_ca_certs=`, `ssl_cert_reqs=none`, …)
    still win: redis-py applies them over these. A plain `redis://` gets nothing."""
    if not url.startswith("rediss://"):
        return {}
    options: dict[str, Any] = {"ssl_cert_reqs": "required", "ssl_check_hostname": True,
                               "ssl_min_version": ssl.TLSVersion.TLSv1_2}
    if tls and tls.ca_file:
        options["ssl_ca_certs"] = str(tls.ca_file)
    if tls and tls.cert_file:
        options["ssl_certfile"] = str(tls.cert_file)
        if tls.key_file:
            options["ssl_keyfile"] = str(tls.key_file)
    return options
