"""The embedded default: `vnh serve` with no URLs starts real servers from pip wheels, never on the machine's
standard ports when those are taken, and keeps its data across a restart."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import psutil

from tests.conftest import TEST_PASSWORD

METRICS_TOKEN = "serve-test-metrics-token"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _taken(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "REDIS_URL", "MQTT_URL") and not k.startswith("VNH_")}
    env["PYTHONUNBUFFERED"] = "1"
    env["VNH_METRICS_TOKEN"] = METRICS_TOKEN  # /readyz shows where each server runs only to it (or an admin)
    env["VNH_AUTH__MFA_ROLES"] = "[]"  # the admin logs in with a password alone here (no authenticator at hand)
    return env


def _vnh(*args: str) -> list[str]:
    return [sys.executable, "-m", "vnh.cli", *args]


def _start(data_dir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(_vnh("serve", "--data-dir", str(data_dir), "--port", str(port)),
                                stdout=out, stderr=subprocess.STDOUT, env=_env())


def _wait_ready(proc: subprocess.Popen[bytes], port: int, log: Path, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"vnh serve exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            response = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5,
                                 headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
            if response.status_code == 200:
                return dict(response.json())
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"not ready after {timeout}s:\n{log.read_text()[-4000:]}")


def _stop(proc: subprocess.Popen[bytes], log: Path) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"vnh serve did not stop on SIGTERM:\n{log.read_text()[-4000:]}") from None
    assert code == 0, log.read_text()[-4000:]


def _servers_of(data_dir: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(str(data_dir) in part for part in proc.info["cmdline"] or []):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def test_serve_boots_embedded_servers_and_keeps_data_across_a_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "vnh-data"
    log = tmp_path / "serve.log"
    port = _free_port()
    proc = _start(data_dir, port, log)
    try:
        started = time.monotonic()
        ready = _wait_ready(proc, port, log)
        first_boot_s = time.monotonic() - started
        checks = ready["checks"]
        assert all(c["ok"] for c in checks.values()), ready
        redis_port = int(checks["redis"]["url"].rsplit(":", 1)[1].split("/")[0])
        mqtt_port = int(checks["mqtt"]["url"].rsplit(":", 1)[1])
        assert redis_port != 6379 or not _taken_by_other(6379, data_dir)
        assert mqtt_port != 1883 or not _taken_by_other(1883, data_dir)
        assert str(data_dir.resolve()) in unquote(checks["database"]["url"])  # a socket in the data directory
        assert ready["embedded"]["database"]["started_here"] is True

        # another command attaches to the running embedded servers instead of starting its own
        created = subprocess.run(
            _vnh("create-user", "--data-dir", str(data_dir), "--username", "first-admin", "--role", "admin"),
            input=TEST_PASSWORD + "\n", capture_output=True, text=True, env=_env(), timeout=120)
        assert created.returncode == 0, created.stdout + created.stderr
        base = f"http://127.0.0.1:{port}"
        token = httpx.post(f"{base}/v1/auth/token",
                           json={"username": "first-admin", "password": TEST_PASSWORD}).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        org = httpx.post(f"{base}/v1/organizations", headers=headers,
                         json={"name": "杭锦旗锡尼镇居家养老服务中心", "region_code": "150625"})
        assert org.status_code == 201, org.text
    finally:
        _stop(proc, log)
    assert _servers_of(data_dir.resolve()) == [], "embedded servers outlived vnh serve"

    proc = _start(data_dir, port, log)
    try:
        _wait_ready(proc, port, log)
        login = httpx.post(f"http://127.0.0.1:{port}/v1/auth/token",
                           json={"username": "first-admin", "password": TEST_PASSWORD})
        assert login.status_code == 200, login.text
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        orgs = httpx.get(f"http://127.0.0.1:{port}/v1/organizations", headers=headers).json()["items"]
        assert [o["name"] for o in orgs] == ["杭锦旗锡尼镇居家养老服务中心"]
    finally:
        _stop(proc, log)
    assert _servers_of(data_dir.resolve()) == []
    print(f"first boot to ready: {first_boot_s:.1f}s")


def _taken_by_other(port: int, data_dir: Path) -> bool:
    """Whether something other than our embedded servers listens on the port."""
    for conn in psutil.net_connections(kind="tcp"):
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
            try:
                cmdline = " ".join(psutil.Process(conn.pid).cmdline())
            except psutil.NoSuchProcess:
                continue
            if str(data_dir) not in cmdline and "vnh.embedded_broker" not in cmdline:
                return True
    return False
