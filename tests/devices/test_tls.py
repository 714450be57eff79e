"""Devices and the service reach Mosquitto over TLS (`mqtts://`, port 8883 in deploy/): a Mosquitto of the test's own
with deploy/mosquitto/mosquitto.conf's TLS listener and certificates from deploy/tls/make-dev-certs.py. The gateway
ingests a device's event over TLS, the dynsec pass provisions the device over TLS, and a broker whose certificate
comes from another CA, or names another host, is refused before any password is sent."""

from __future__ import annotations

import asyncio
import importlib.util
import shutil
import ssl
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from pydantic import SecretStr

from devices.mosquitto import dynsec_config
from devices.mosquitto_control import create_registered
from devices.simulator import DeviceClient
from kernel.mqtt_probe import parse_mqtt_url, probe_broker
from kernel.runtime import Runtime
from kernel.settings import TlsSettings
from tests.conftest import login_headers
from tests.devices.conftest import Broker, GatewayFactory, eventually
from tests.devices.mosquitto import dynsec_init, require_mosquitto, vnh_mosquitto
from tests.devices.test_broker_auth import count
from tests.factories import create_elder
from tests.kernel.test_tls import MAKE_CERTS, make_dev_certs
from vnh.app import create_app

SERVICE_PASSWORD = "service-secret-for-tls-tests"
ADMIN_PASSWORD = "admin-secret"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_dev_certs", MAKE_CERTS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def certs() -> Iterator[tuple[Path, Path]]:
    """Our development CA (with a broker certificate for another host name too) and an unrelated one."""
    require_mosquitto()
    base = Path(tempfile.mkdtemp(prefix="vnh-mqtt-tls-"))
    try:
        ours, theirs = make_dev_certs(base / "ours"), make_dev_certs(base / "theirs")
        script = _script()
        ca = script.load_ca(ours)
        cert, key = script.issue(*ca, "mosquitto", ["elsewhere.example"], server=True, days=1, kind="ec")
        script.write_cert(ours / "elsewhere.crt", cert)
        script.write_private(ours / "elsewhere.key", key)
        yield ours, theirs
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
async def api(committed_runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(committed_runtime, background=False)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://vnh.test") as c:
        yield c


async def test_probe_verifies_the_broker_certificate_and_its_name(certs: tuple[Path, Path], tmp_path: Path) -> None:
    ours, theirs = certs
    base = await asyncio.to_thread(dynsec_init, tmp_path / "base.json", ADMIN_PASSWORD)
    config, _ = dynsec_config([], base=base)
    with vnh_mosquitto(config, tls_certs=(ours / "ca.crt", ours / "mosquitto.crt", ours / "mosquitto.key")) as mq:
        assert mq.tls_url is not None
        url = mq.tls_url.replace("mqtts://", f"mqtts://admin:{ADMIN_PASSWORD}@")
        await probe_broker(parse_mqtt_url(url, TlsSettings(ca_file=ours / "ca.crt")))
        await probe_broker(parse_mqtt_url(f"{url}?cafile={ours}/ca.crt"))  # the URL's own CA, no settings
        with pytest.raises(ssl.SSLCertVerificationError):
            await probe_broker(parse_mqtt_url(url, TlsSettings(ca_file=theirs / "ca.crt")))
        with pytest.raises(ssl.SSLCertVerificationError):  # no CA configured: the system's store knows none of it
            await probe_broker(parse_mqtt_url(url))
    # our CA, but a certificate for another host: refused on the name
    with vnh_mosquitto(config, tls_certs=(ours / "ca.crt", ours / "elsewhere.crt", ours / "elsewhere.key")) as mq:
        assert mq.tls_url is not None
        url = mq.tls_url.replace("mqtts://", f"mqtts://admin:{ADMIN_PASSWORD}@")
        with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
            await probe_broker(parse_mqtt_url(url, TlsSettings(ca_file=ours / "ca.crt")))


async def test_devices_and_the_gateway_speak_mqtts_and_refuse_a_broker_of_another_ca(
        committed_runtime: Runtime, api: httpx.AsyncClient, gateways: GatewayFactory, certs: tuple[Path, Path],
        tmp_path: Path) -> None:
    ours, theirs = certs
    rt = committed_runtime
    elder = await create_elder(rt)
    headers = await login_headers(rt, "admin")
    base = await asyncio.to_thread(dynsec_init, tmp_path / "base.json", ADMIN_PASSWORD)
    config, _ = dynsec_config([], base=base, service_username="vnh-service", service_password=SERVICE_PASSWORD)
    with vnh_mosquitto(config, tls_certs=(ours / "ca.crt", ours / "mosquitto.crt", ours / "mosquitto.key")) as mq:
        assert mq.tls_url is not None
        devices = rt.settings.devices.model_copy(
            update={"mosquitto_admin_username": "admin", "mosquitto_admin_password": SecretStr(ADMIN_PASSWORD)})
        # as deploy/ configures the service: MQTT_URL mqtts://, VNH_TLS__CA_FILE
        rt.settings = rt.settings.model_copy(update={"mqtt_url": mq.tls_url, "devices": devices,
                                                     "tls": TlsSettings(ca_file=ours / "ca.crt")})
        gateway = await gateways(Broker(mq.tls_url, shared=True), username="vnh-service", password=SERVICE_PASSWORD)
        assert gateway.address.tls and gateway.address.port != 1883

        device_id = f"tls-{uuid.uuid4().hex[:8]}"
        response = await api.post("/v1/devices", headers=headers, json={
            "device_id": device_id, "kind": "wristband", "elder_id": str(elder.id)})
        assert response.status_code == 201, response.text
        token = str(response.json()["token"])
        assert await create_registered(rt) == 1  # the dynsec admin commands went over TLS too

        # a device with the deployment's CA gets in and its event is stored by the gateway
        device = DeviceClient(parse_mqtt_url(mq.tls_url, TlsSettings(ca_file=ours / "ca.crt")), device_id, token)
        await asyncio.to_thread(device.connect, report_online=False)
        try:
            sent = await asyncio.to_thread(device.send, "heart_rate", {"bpm": 70})

            async def stored() -> bool:
                return await count(rt, "select count(*) from device_events where device_id = :d and event_id = :e",
                                   d=device_id, e=sent["event_id"]) == 1

            await eventually(stored, what="the event sent over mqtts stored")
        finally:
            await asyncio.to_thread(device.close, report_offline=False)

        # a device (or the service) trusting another CA does not connect: the TLS handshake fails first
        stranger = DeviceClient(parse_mqtt_url(mq.tls_url, TlsSettings(ca_file=theirs / "ca.crt")), device_id, token)
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.to_thread(stranger.connect, timeout=5, report_online=False)


def test_mqtt_urls_take_tls_files_from_their_query_or_the_settings() -> None:
    settings = TlsSettings(ca_file=Path("/etc/vnh/tls/ca.crt"), cert_file=Path("/c.crt"), key_file=Path("/c.key"))
    address = parse_mqtt_url("mqtts://u:p@broker", settings)
    assert (address.port, address.ca_file, address.cert_file, address.key_file) == (
        8883, "/etc/vnh/tls/ca.crt", "/c.crt", "/c.key")
    assert parse_mqtt_url("mqtts://broker:8883?cafile=/other.crt", settings).ca_file == "/other.crt"
    plain = parse_mqtt_url("mqtt://broker", settings)  # plain MQTT carries no TLS files and no context
    assert (plain.port, plain.ca_file, plain.ssl_context()) == (1883, None, None)
    with pytest.raises(ValueError, match="cafile"):
        parse_mqtt_url("mqtts://broker?ca=/x.crt")
    with pytest.raises(ValueError, match="not mqtts"):
        parse_mqtt_url("mqtt://broker?cafile=/x.crt")
