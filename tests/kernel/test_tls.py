"""TLS between the service and PostgreSQL and Redis (deploy/README.md, "TLS"), against real servers of the test's own:
certificates from deploy/tls/make-dev-certs.py, a throw-away PostgreSQL 15 cluster with ssl=on and
deploy/postgres/pg_hba.conf, a Redis with only a TLS port. The service connects with `sslmode=verify-full` and
`rediss://`, the CA from VNH_TLS__*; a server whose certificate comes from another CA is refused, and so is a
connection without TLS. (MQTT: tests/devices/test_tls.py.)

A missing system binary skips the test with its reason on a developer's machine and fails it when CI=true.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from kernel.db import create_engine
from kernel.migrate import pending_heads
from kernel.runtime import Runtime
from kernel.settings import AuditSettings, AuthSettings, CryptoSettings, Settings, TlsSettings
from kernel.tls import postgres_connect_args, redis_options

ROOT = Path(__file__).resolve().parents[2]
MAKE_CERTS = ROOT / "deploy" / "tls" / "make-dev-certs.py"
PG_BIN = next((Path(p) for p in ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin",
                                 "/usr/lib/postgresql/17/bin") if Path(p, "initdb").exists()), None)
PG_PASSWORD = "tls-test-password"


def require(what: str, present: bool) -> None:
    if present:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{what} is not installed (CI=true: it must be)")
    pytest.skip(f"{what} is not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_dev_certs(out: Path, *extra: str) -> Path:
    """Run the deploy script as a deployment would."""
    subprocess.run([sys.executable, str(MAKE_CERTS), "--out", str(out), *extra], check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def certs() -> Iterator[tuple[Path, Path]]:
    """Two independent development CAs with their server certificates: `ours` and `theirs`."""
    base = Path(tempfile.mkdtemp(prefix="vnh-tls-"))
    base.chmod(0o755)  # servers run as their own users read copies inside it
    try:
        yield make_dev_certs(base / "ours"), make_dev_certs(base / "theirs")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_the_script_makes_a_ca_and_server_certificates_for_the_compose_names_and_keeps_the_ca(tmp_path: Path) -> None:
    from cryptography import x509

    out = make_dev_certs(tmp_path / "dev", "--san", "vnh.example.internal")
    ca = x509.load_pem_x509_certificate((out / "ca.crt").read_bytes())
    for server in ("postgres", "redis", "mosquitto"):
        cert = x509.load_pem_x509_certificate((out / f"{server}.crt").read_bytes())
        cert.verify_directly_issued_by(ca)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert {server, "localhost", "vnh.example.internal"} <= set(san.get_values_for_type(x509.DNSName))
        assert "127.0.0.1" in {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
        assert (out / f"{server}.key").stat().st_mode & 0o077 == 0  # private keys: owner only
    client = x509.load_pem_x509_certificate((out / "vnh-client.crt").read_bytes())
    client.verify_directly_issued_by(ca)
    # run again: the CA stays (devices trusting it keep working), the server certificates are new
    ca_before, server_before = (out / "ca.crt").read_bytes(), (out / "mosquitto.crt").read_bytes()
    make_dev_certs(out)
    assert (out / "ca.crt").read_bytes() == ca_before
    assert (out / "mosquitto.crt").read_bytes() != server_before


def test_the_keys_are_git_ignored() -> None:
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    for path in ("deploy/tls/dev/ca.key", "deploy/tls/dev/postgres.key", "deploy/tls/dev/ca.crt", "deploy/x.key"):
        assert subprocess.run([git, "-C", str(ROOT), "check-ignore", "-q", path]).returncode == 0, path


# --- PostgreSQL --------------------------------------------------------------------------------------------------

def test_sslmode_becomes_asyncpg_ssl_context_and_plain_urls_are_left_alone(certs: tuple[Path, Path]) -> None:
    ours, _ = certs
    tls = TlsSettings(ca_file=ours / "ca.crt")
    url, args = postgres_connect_args("postgresql+asyncpg://u:p@db:5432/vnh", tls)
    assert args == {} and url.render_as_string(hide_password=False) == "postgresql+asyncpg://u:p@db:5432/vnh"

    url, args = postgres_connect_args("postgresql+asyncpg://u:p@db/vnh?sslmode=verify-full&application_name=x", tls)
    context = args["ssl"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert dict(url.query) == {"application_name": "x"}  # asyncpg gets no `sslmode` keyword it does not know

    _, args = postgres_connect_args("postgresql+asyncpg://u:p@db/vnh?ssl=verify-ca", tls)
    assert args["ssl"].verify_mode == ssl.CERT_REQUIRED and not args["ssl"].check_hostname
    _, args = postgres_connect_args("postgresql+asyncpg://u:p@db/vnh?sslmode=require")  # no CA: encrypted only
    assert args["ssl"].verify_mode == ssl.CERT_NONE
    _, args = postgres_connect_args("postgresql+asyncpg://u:p@db/vnh?sslmode=require", tls)  # a CA: chain checked
    assert args["ssl"].verify_mode == ssl.CERT_REQUIRED
    assert postgres_connect_args("postgresql+asyncpg://u:p@db/vnh?sslmode=disable", tls)[1] == {"ssl": "disable"}
    with pytest.raises(ValueError, match="sslmode"):
        postgres_connect_args("postgresql+asyncpg://u:p@db/vnh?sslmode=verify-everything", tls)
    with pytest.raises(FileNotFoundError):  # a CA path that is not there fails at start-up, not at first query
        postgres_connect_args(f"postgresql+asyncpg://u:p@db/vnh?sslmode=verify-full&sslrootcert={ours}/none.crt")


@dataclass(frozen=True)
class Cluster:
    port: int

    def url(self, query: str) -> str:
        return f"postgresql://postgres:{PG_PASSWORD}@localhost:{self.port}/postgres?{query}"


def _as_postgres(command: list[str], owner: pwd.struct_passwd | None) -> list[str]:
    # initdb and postgres refuse to run as root: as root (CI), run them as the machine's postgres user
    return ["runuser", "-u", owner.pw_name, "--", *command] if owner else command


@pytest.fixture(scope="module")
def tls_postgres(certs: tuple[Path, Path]) -> Iterator[Cluster]:
    """A throw-away PostgreSQL cluster with ssl=on, our server certificate and deploy/postgres/pg_hba.conf."""
    require("PostgreSQL server binaries (postgresql-15)", PG_BIN is not None)
    assert PG_BIN is not None
    owner = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            require("a `postgres` system user to run a throw-away cluster as root", False)
    ours, _ = certs
    work = Path(tempfile.mkdtemp(prefix="vnh-pg-tls-"))
    (work / "pw").write_text(PG_PASSWORD + "\n")
    for name in ("postgres.crt", "postgres.key", "ca.crt"):
        shutil.copyfile(ours / name, work / name)
    shutil.copyfile(ROOT / "deploy" / "postgres" / "pg_hba.conf", work / "pg_hba.conf")
    (work / "postgres.key").chmod(0o600)
    if owner:
        for path in (work, *work.iterdir()):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    port = free_port()
    data = work / "data"
    try:
        subprocess.run(_as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres",
                                     f"--pwfile={work / 'pw'}", "-A", "scram-sha-256", "-N"], owner),
                       check=True, capture_output=True)
        options = " ".join([
            f"-c port={port}", "-c listen_addresses=127.0.0.1", f"-c unix_socket_directories={work}",
            "-c ssl=on", f"-c ssl_cert_file={work}/postgres.crt", f"-c ssl_key_file={work}/postgres.key",
            f"-c hba_file={work}/pg_hba.conf", "-c fsync=off",
        ])
        subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(work / "log"), "-w",
                                     "-t", "20", "-o", options, "start"], owner), check=True, capture_output=True)
        yield Cluster(port)
    finally:
        with contextlib.suppress(subprocess.CalledProcessError, FileNotFoundError):
            subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                                        owner), check=True, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


async def _ssl_in_use(url: str, tls: TlsSettings) -> bool:
    engine = create_engine(url, role=None, pool_size=1, max_overflow=0, tls=tls)
    try:
        async with engine.connect() as conn:
            return bool(await conn.scalar(text("select ssl from pg_stat_ssl where pid = pg_backend_pid()")))
    finally:
        await engine.dispose()


async def test_the_service_reaches_postgres_over_verified_tls_and_refuses_a_server_of_another_ca(
        tls_postgres: Cluster, certs: tuple[Path, Path]) -> None:
    ours, theirs = certs
    started = time.monotonic()
    assert await _ssl_in_use(tls_postgres.url("sslmode=verify-full"), TlsSettings(ca_file=ours / "ca.crt"))
    # the CA may also come with the URL, libpq's way
    assert await _ssl_in_use(tls_postgres.url(f"sslmode=verify-full&sslrootcert={ours}/ca.crt"), TlsSettings())
    # the migration check (`vnh serve` without an owner URL) goes the same way
    assert await pending_heads(tls_postgres.url("sslmode=verify-full"), tls=TlsSettings(ca_file=ours / "ca.crt"))

    with pytest.raises(ssl.SSLCertVerificationError):  # a server certificate from another CA: no password sent
        await _ssl_in_use(tls_postgres.url("sslmode=verify-full"), TlsSettings(ca_file=theirs / "ca.crt"))
    # deploy/postgres/pg_hba.conf: nothing but TLS over the network
    with pytest.raises(DBAPIError, match=r"pg_hba\.conf rejects connection .* no encryption"):
        await _ssl_in_use(tls_postgres.url("sslmode=disable"), TlsSettings())
    print(f"PostgreSQL TLS checks took {time.monotonic() - started:.2f} s")


# --- Redis -------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tls_redis(certs: tuple[Path, Path]) -> Iterator[int]:
    """redis-server with only a TLS port (`--port 0`, as compose runs it), asking clients for a certificate."""
    binary = shutil.which("redis-server")
    require("redis-server", binary is not None)
    assert binary is not None
    ours, _ = certs
    work = Path(tempfile.mkdtemp(prefix="vnh-redis-tls-"))
    port = free_port()
    command = [binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
               "--tls-cert-file", str(ours / "redis.crt"), "--tls-key-file", str(ours / "redis.key"),
               "--tls-ca-cert-file", str(ours / "ca.crt"), "--tls-auth-clients", "optional",
               "--save", "", "--appendonly", "no", "--dir", str(work), "--logfile", str(work / "redis.log")]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    log = work / "redis.log"
    while "Ready to accept connections" not in (log.read_text(errors="replace") if log.exists() else ""):
        if proc.poll() is not None:
            text_ = log.read_text(errors="replace") if log.exists() else ""
            if "tls" in text_.lower() and "not supported" in text_.lower():
                require("a redis-server built with TLS", False)
            raise RuntimeError(f"redis-server did not start: {text_[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("redis-server did not start within 10 s")
        time.sleep(0.05)
    try:
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(work, ignore_errors=True)


async def _redis_ping(url: str, tls: TlsSettings) -> bool:
    client = Redis.from_url(url, **redis_options(url, tls))
    try:
        return bool(await client.ping())
    finally:
        await client.aclose()


async def test_the_service_reaches_redis_over_verified_tls_and_refuses_a_server_of_another_ca(
        tls_redis: int, certs: tuple[Path, Path]) -> None:
    ours, theirs = certs
    url = f"rediss://localhost:{tls_redis}/0"
    assert await _redis_ping(url, TlsSettings(ca_file=ours / "ca.crt"))
    assert await _redis_ping(url, TlsSettings(ca_file=ours / "ca.crt", cert_file=ours / "vnh-client.crt",
                                              key_file=ours / "vnh-client.key"))  # mutual TLS where asked
    with pytest.raises(RedisConnectionError, match="certificate verify failed"):
        await _redis_ping(url, TlsSettings(ca_file=theirs / "ca.crt"))
    with pytest.raises(RedisConnectionError):  # the plain protocol on the TLS port gets nowhere
        await _redis_ping(f"redis://localhost:{tls_redis}/0", TlsSettings())


async def test_the_runtime_connects_to_postgres_and_redis_over_tls_from_settings(
        tls_postgres: Cluster, tls_redis: int, certs: tuple[Path, Path], tmp_path: Path) -> None:
    """The wiring: DATABASE_URL with sslmode, REDIS_URL rediss:// and VNH_TLS__CA_FILE, as compose sets them."""
    ours, _ = certs
    key = SecretStr("a2V5LWZvci10bHMtdGVzdHMta2V5LWZvci10bHMtdGU=")
    settings = Settings(
        database_url=tls_postgres.url("sslmode=verify-full"), redis_url=f"rediss://localhost:{tls_redis}/0",
        tls=TlsSettings(ca_file=ours / "ca.crt"), data_dir=tmp_path, environment="test",
        auth=AuthSettings(jwt_secret=key), crypto=CryptoSettings(keys={"k1": key}, active_key="k1",
                                                                 blind_index_key=key),
        audit=AuditSettings(key=key),
        database={"app_role": ""},  # type: ignore[arg-type]  # the throw-away cluster has no vnh_app
    )
    rt = Runtime.build(settings)
    try:
        await rt.database.ping()
        assert await rt.redis.ping()
        async with rt.database.engine.connect() as conn:
            assert await conn.scalar(text("select ssl from pg_stat_ssl where pid = pg_backend_pid()"))
    finally:
        await rt.close()
