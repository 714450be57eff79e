"""A Mosquitto of the test's own with vnh's configuration (deploy/mosquitto/mosquitto.conf), on a free port.

The same rewrite as deploy/mosquitto/check-config.sh: loopback listener on the chosen port, the machine's dynsec
plugin path, a temporary data directory, logs to a file; the TLS listener (8883) on a second free loopback port with
the certificates of a directory made by deploy/tls/make-dev-certs.py, or left out when the test gives none. Fails
(never skips) when CI=true and the binary is missing.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = ("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
           "/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so",
           "/usr/lib/mosquitto_dynamic_security.so", "/usr/local/lib/mosquitto_dynamic_security.so")


def require_mosquitto() -> str:
    binary = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
    plugin = next((p for p in PLUGINS if os.path.exists(p)), None)
    if binary is None or plugin is None:
        reason = "mosquitto or its dynamic-security plugin is not installed"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{reason} (CI=true: install the Debian package mosquitto)")
        pytest.skip(reason)
    return binary


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# the TLS listener's block in deploy/mosquitto/mosquitto.conf, from its `listener` line to its last option
TLS_BLOCK = re.compile(r"^listener 8883\n(?:.+\n)*?require_certificate false\n", re.MULTILINE)


def vnh_config(port: int, workdir: Path, *, tls_port: int | None = None) -> str:
    """deploy/mosquitto/mosquitto.conf for this machine; with `tls_port`, its TLS listener there with the certificates
    in `workdir/tls` (ca.crt, server.crt, server.key), else without it."""
    plugin = next(p for p in PLUGINS if os.path.exists(p))
    text = (ROOT / "deploy" / "mosquitto" / "mosquitto.conf").read_text()
    assert len(TLS_BLOCK.findall(text)) == 1, "mosquitto.conf's TLS listener block is not where the rewrite expects"
    if tls_port is None:
        text = TLS_BLOCK.sub("", text)
    else:
        text = text.replace("\nlistener 8883\n", f"\nlistener {tls_port} 127.0.0.1\n")
    replaced = (text.replace("\nlistener 1883 127.0.0.1\n", f"\nlistener {port} 127.0.0.1\n")
                .replace("\nplugin /usr/lib/mosquitto_dynamic_security.so\n", f"\nplugin {plugin}\n")
                .replace("/mosquitto/data/", f"{workdir}/")
                .replace("/mosquitto/tls/", f"{workdir}/tls/")
                .replace("\nlog_dest stdout\n", f"\nlog_dest file {workdir}/broker.log\n"))
    expected_lines = [f"listener {port} 127.0.0.1", f"plugin {plugin}", f"persistence_location {workdir}/",
                      f"log_dest file {workdir}/broker.log"]
    if tls_port is not None:
        expected_lines += [f"listener {tls_port} 127.0.0.1", f"certfile {workdir}/tls/server.crt",
                           f"keyfile {workdir}/tls/server.key", f"cafile {workdir}/tls/ca.crt"]
    for expected in expected_lines:
        assert expected in replaced.splitlines(), f"the rewrite of mosquitto.conf missed {expected!r}"
    return replaced


def open_config(port: int, workdir: Path) -> str:
    """vnh's configuration (persistence, queue and in-flight limits, retained status) with anonymous access instead of
    the dynamic-security plugin: the broker the MQTT delivery tests need when MQTT_URL is not a Mosquitto of the
    machine's (its authentication is tested on `vnh_mosquitto`, with dynsec)."""
    text = vnh_config(port, workdir)
    lines = [line for line in text.splitlines() if not line.startswith(("plugin ", "plugin_opt_config_file "))]
    assert "allow_anonymous false" in lines, "mosquitto.conf no longer says allow_anonymous false"
    return "\n".join("allow_anonymous true" if line == "allow_anonymous false" else line for line in lines) + "\n"


@contextmanager
def open_mosquitto() -> Iterator[RunningMosquitto]:
    """Mosquitto with `open_config` on a free loopback port, in a directory of its own under /tmp."""
    binary = require_mosquitto()
    port = _free_port()
    workdir = Path(tempfile.mkdtemp(prefix="vnh-mosquitto-open-"))
    try:
        with _run(binary, port, workdir, {}, False, config=open_config(port, workdir)) as running:
            yield running
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@dataclass(frozen=True)
class RunningMosquitto:
    url: str
    workdir: Path
    tls_url: str | None = None  # mqtts://127.0.0.1:<port> when started with certificates

    def log(self) -> str:
        path = self.workdir / "broker.log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextmanager
def vnh_mosquitto(dynsec: dict[str, Any], *, port: int | None = None, verbose: bool = True,
                  tls_certs: tuple[Path, Path, Path] | None = None, log_subscriptions: bool = False
                  ) -> Iterator[RunningMosquitto]:
    """Run Mosquitto with vnh's configuration and this dynamic-security file, in a directory of its own under /tmp
    (run as root, Mosquitto drops to its own user, which cannot enter pytest's private temporary directories).
    `tls_certs` (CA, server certificate, server key) also opens the TLS listener on a free port; `log_subscriptions`
    logs each subscription taken (`<client id> <qos> <topic>`), for tests to wait on."""
    binary = require_mosquitto()
    port = port or _free_port()
    workdir = Path(tempfile.mkdtemp(prefix="vnh-mosquitto-"))
    tls_port = None
    if tls_certs is not None:
        tls_port = _free_port()
        (workdir / "tls").mkdir(mode=0o700)
        for source, name in zip(tls_certs, ("ca.crt", "server.crt", "server.key"), strict=True):
            shutil.copyfile(source, workdir / "tls" / name)
        (workdir / "tls" / "server.key").chmod(0o600)
    try:
        config = vnh_config(port, workdir, tls_port=tls_port) + ("log_type subscribe\n" if log_subscriptions else "")
        with _run(binary, port, workdir, dynsec, verbose, tls_port, config=config) as running:
            yield running
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def _run(binary: str, port: int, workdir: Path, dynsec: dict[str, Any], verbose: bool, tls_port: int | None = None,
         *, config: str | None = None) -> Iterator[RunningMosquitto]:
    (workdir / "mosquitto.conf").write_text(config or vnh_config(port, workdir, tls_port=tls_port))
    security = workdir / "dynamic-security.json"
    security.write_text(json.dumps(dynsec))
    security.chmod(0o600)
    if os.geteuid() == 0:  # run as root, mosquitto drops to its own user: it must own its directory
        try:
            user = pwd.getpwnam("mosquitto")
        except KeyError:
            user = None
        if user is not None:
            for path in (workdir, *workdir.rglob("*")):
                os.chown(path, user.pw_uid, user.pw_gid)
    log = workdir / "broker.log"
    # -v as check-config.sh: refused publishes ("Denied PUBLISH") are logged only at that level
    command = [binary, "-c", str(workdir / "mosquitto.conf"), *(["-v"] if verbose else [])]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                            stderr=open(workdir / "stderr.log", "wb"))  # noqa: SIM115
    deadline = time.monotonic() + 15
    while "running" not in (log.read_text(errors="replace") if log.exists() else ""):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"mosquitto did not start:\n{(workdir / 'stderr.log').read_text()}\n"
                               f"{log.read_text() if log.exists() else ''}")
        time.sleep(0.05)
    try:
        yield RunningMosquitto(f"mqtt://127.0.0.1:{port}", workdir,
                               f"mqtts://127.0.0.1:{tls_port}" if tls_port is not None else None)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def dynsec_init(path: Path, admin_password: str) -> dict[str, Any]:
    """What `mosquitto_ctrl dynsec init` makes (the admin client and role)."""
    ctrl = shutil.which("mosquitto_ctrl")
    if ctrl is None:
        return {"clients": [], "roles": [], "groups": []}
    subprocess.run([ctrl, "dynsec", "init", str(path), "admin", admin_password], check=True,
                   capture_output=True)
    return dict(json.loads(path.read_text()))
