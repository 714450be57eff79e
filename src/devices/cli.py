"""`vnh devices export-mosquitto-acl`, `vnh devices ingest` and `vnh simulate devices` (wired in `vnh.cli`)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import secrets
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import select

from devices import registry
from devices.credentials import SERVICE_USERNAME
from devices.gateway import MqttGateway
from devices.membership import HEARTBEAT_S, MISSING_AFTER_S
from devices.models import Device
from devices.mosquitto import DeviceAccount, dynsec_config
from devices.schemas import DeviceCreate
from devices.simulator import run_fleet
from devices.tasks import use_embedded_service_login
from kernel.authz import Access
from kernel.mqtt_probe import parse_mqtt_url
from kernel.runtime import Runtime
from kernel.settings import TlsSettings
from orders.models import Elder


async def export_mosquitto_acl(rt: Runtime, *, output: Path | None, merge: Path | None,
                               service_username: str | None, service_password: str | None) -> list[str]:
    """Write dynamic-security.json for every registered device; answers the devices skipped (no entry)."""
    async with rt.database.unit_of_work() as session:
        rows = (await session.execute(select(Device.device_id, Device.status, Device.broker_password)
                                      .order_by(Device.device_id))).all()
    accounts = [DeviceAccount(r.device_id, r.status == "active", r.broker_password) for r in rows]
    return await asyncio.to_thread(_write_config, accounts, output, merge, service_username, service_password)


def _write_config(accounts: list[DeviceAccount], output: Path | None, merge: Path | None,
                  service_username: str | None, service_password: str | None) -> list[str]:
    base: dict[str, Any] | None = json.loads(merge.read_text()) if merge else None
    config, skipped = dynsec_config(accounts, base=base, service_username=service_username,
                                    service_password=service_password)
    text = json.dumps(config, indent=1, ensure_ascii=False) + "\n"
    if output is None:
        sys.stdout.write(text)
    else:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # password hashes
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
    return skipped


async def register_simulated(rt: Runtime, count: int, *, prefix: str | None = None) -> list[tuple[str, str]]:
    """Register `count` simulated wristbands on active elders (round robin); answers (device id, token)."""
    access = Access.system("simulator")
    tag = prefix or f"sim-{secrets.token_hex(3)}"
    async with rt.database.unit_of_work() as session:
        elders = list((await session.scalars(select(Elder.id).where(Elder.status == "active")
                                             .order_by(Elder.created_at).limit(count))).all())
        if not elders:
            raise SystemExit("no active elder to attach simulated devices to: run `vnh serve --demo` first")
        out = []
        for index in range(count):
            device, token = await registry.register_device(session, rt.clock, rt.cipher, access, DeviceCreate(
                device_id=f"{tag}-{index:05d}", kind="wristband", elder_id=str(elders[index % len(elders)])),
                keep_for_broker=bool(rt.settings.devices.mosquitto_admin_username))
            out.append((device.device_id, token))
    return out


async def retire_simulated(rt: Runtime, device_ids: list[str]) -> None:
    """Revoke the simulated devices, so that supervision does not raise their silence as offline alarms."""
    access = Access.system("simulator")
    async with rt.database.unit_of_work() as session:
        for device_id in device_ids:
            await registry.revoke_device(session, rt.clock, access, device_id)


async def simulate_devices(rt: Runtime, *, url: str, count: int, rate: float, duration: float | None,
                           sos_every: int) -> None:
    credentials = await register_simulated(rt, count)
    # simulated devices trust the service's CA for mqtts:// but present no client certificate of the service's
    address = parse_mqtt_url(url, TlsSettings(ca_file=rt.settings.tls.ca_file))
    print(f"simulating {count} devices at {rate:g} events/s against {address.display} "
          f"({'until Ctrl-C' if duration is None else f'{duration:g} s'})", flush=True)
    stop = threading.Event()
    try:
        report = await asyncio.to_thread(run_fleet, address, credentials, rate=rate, duration=duration,
                                         sos_every=sos_every, stop=stop, clear_retained=True,
                                         printer=lambda line: print(line, flush=True))
        print(f"sent {report.sent} events from {report.devices} devices in {report.seconds:.1f} s "
              f"({report.sent / max(report.seconds, 1e-9):.0f}/s); {report.commands} commands received, "
              f"{report.refused} devices refused", flush=True)
    finally:
        stop.set()
        await retire_simulated(rt, [device_id for device_id, _token in credentials])


async def run_ingest(rt: Runtime, *, client_id: str | None, share_group: str | None, heartbeat_s: float,
                     missing_after_s: float) -> None:
    """An ingest-only process: the MQTT gateway (shared subscription, persistent session, manual acks) and its
    membership heartbeat, until SIGTERM or SIGINT; then the batches in hand are committed and acknowledged."""
    use_embedded_service_login(rt)
    gateway = MqttGateway(rt, client_id=client_id, share_group=share_group, member_heartbeat_s=heartbeat_s,
                          member_missing_after_s=missing_after_s)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await gateway.start()
    logging.getLogger("vnh.devices.ingest").info(
        "ingest %s on %s (share group %s)", gateway.client_id, gateway.address.display, gateway.share_group)
    # as `vnh serve` does: what start-up built lives as long as the process, so keep it out of the collector's full
    # passes, whose pauses set the SOS path's tail latency (bench/README.md)
    gc.collect()
    gc.freeze()
    try:
        await stop.wait()
    finally:
        await gateway.stop()


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """`vnh devices …` and `vnh simulate devices …`."""
    devices = sub.add_parser("devices", help="device tools")
    devices_sub = devices.add_subparsers(dest="devices_command", required=True)
    export = devices_sub.add_parser(
        "export-mosquitto-acl", parents=[common],
        help="write Mosquitto's dynamic-security.json: a role and a client per device (revoked ones disabled)")
    export.add_argument("--output", type=Path, default=None, help="default: standard output")
    export.add_argument("--merge", type=Path, default=None,
                        help="an existing dynamic-security.json whose other clients and roles are kept (admin)")
    export.add_argument("--service-username", default=None, help="default: VNH_MQTT__USERNAME or vnh-service")
    export.add_argument("--service-password-stdin", action="store_true",
                        help="also write the service account, its password read from one line of stdin")

    ingest = devices_sub.add_parser(
        "ingest", parents=[common],
        help="run only the MQTT ingest (one member of the share group; e.g. a StatefulSet pod)")
    ingest.add_argument("--client-id", default=None,
                        help="a fixed id per instance (default: VNH_MQTT__CLIENT_ID); reuse it after a restart")
    ingest.add_argument("--share-group", default=None, help="default: VNH_MQTT__SHARE_GROUP")
    ingest.add_argument("--heartbeat-s", type=float, default=HEARTBEAT_S,
                        help="how often the instance reports itself in the share group's member list")
    ingest.add_argument("--missing-after-s", type=float, default=MISSING_AFTER_S,
                        help="a member silent this long is reported missing (its share waits in the broker)")

    simulate = sub.add_parser("simulate", help="simulators")
    simulate_sub = simulate.add_subparsers(dest="simulate_command", required=True)
    fleet = simulate_sub.add_parser("devices", parents=[common],
                                    help="run N devices speaking protocol v1 against the broker")
    fleet.add_argument("--count", type=int, default=10)
    fleet.add_argument("--rate", type=float, default=5.0, help="events per second, all devices together")
    fleet.add_argument("--duration", type=float, default=None, help="seconds (default: until Ctrl-C)")
    fleet.add_argument("--sos-every", type=int, default=0, help="an SOS every N events (0: none)")
    fleet.add_argument("--broker", default=None, help="mqtt://host:port (default: MQTT_URL or the embedded one)")


async def run(rt: Runtime, args: argparse.Namespace) -> int:
    if args.command == "devices" and args.devices_command == "ingest":
        await run_ingest(rt, client_id=args.client_id, share_group=args.share_group, heartbeat_s=args.heartbeat_s,
                         missing_after_s=args.missing_after_s)
        return 0
    if args.command == "devices":
        password = sys.stdin.readline().rstrip("\n") if args.service_password_stdin else None
        username = args.service_username or rt.settings.mqtt.username or SERVICE_USERNAME
        skipped = await export_mosquitto_acl(rt, output=args.output, merge=args.merge, service_username=username,
                                             service_password=password)
        if skipped:
            print(f"skipped {len(skipped)} device(s) registered without a Mosquitto password entry: "
                  f"{', '.join(skipped[:10])}", file=sys.stderr)
        return 0
    url = args.broker or rt.settings.mqtt_url
    if url is None:
        raise SystemExit("no broker: set MQTT_URL or --broker")
    await simulate_devices(rt, url=url, count=args.count, rate=args.rate, duration=args.duration,
                           sos_every=args.sos_every)
    return 0
