"""The embedded MQTT broker (amqtt, MQTT 3.1.1), run as a child process by `vnh.embedded`.

    python -m vnh.embedded_broker --host 127.0.0.1 --port 1884 --data-dir .vnh/mqtt

It runs in its own process so that a busy broker never competes with the service's event loop, and so that
the service can be restarted while devices stay connected. It prints one line
(`vnh embedded mqtt broker listening on host:port`) once the listener is bound; the parent waits for it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path
from typing import Any

from amqtt.broker import Broker
from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import Session

from vnh.embedded import LISTENING_LINE

logger = logging.getLogger("vnh.embedded_broker")


class OpenAccessPlugin(BaseAuthPlugin):  # type: ignore[misc]  # amqtt ships no type information
    """Let every client in, without marking its session anonymous.

    amqtt's own AnonymousAuthPlugin flags every session it admits as anonymous, and amqtt drops an anonymous
    session as soon as it disconnects and queues nothing for it: a `clean_session=False` subscriber (vnh
    ingest) would lose every QoS 1 message published while it reconnects. This plugin is the stand-in until
    device authentication exists.
    """

    async def authenticate(self, *, session: Session) -> bool | None:
        return True


# Dotted path, not `__name__`: under `python -m` this module is `__main__`, and amqtt imports plugins by path.
OPEN_ACCESS: dict[str, dict[str, Any]] = {"vnh.embedded_broker.OpenAccessPlugin": {}}


def broker_config(
    host: str, port: int, auth_plugins: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """amqtt's BrokerConfig as a dict.

    `auth_plugins` maps a plugin's dotted class path to its config. Device authentication (a BaseAuthPlugin
    that refuses unknown or revoked devices before amqtt takes over a client id's session) is passed in here.
    Naming any plugins replaces amqtt's defaults, which is what we want: no $SYS publisher, no packet logger.
    """
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": dict(OPEN_ACCESS if auth_plugins is None else auth_plugins),
    }


async def serve(host: str, port: int, auth_plugins: dict[str, dict[str, Any]] | None = None) -> None:
    broker = Broker(broker_config(host, port, auth_plugins))
    await broker.start()
    print(f"{LISTENING_LINE} {host}:{port}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logger.info("shutting down")
    await broker.shutdown()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m vnh.embedded_broker", description="vnh embedded MQTT broker"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--data-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    # Holds the broker log for now. amqtt keeps sessions in memory only: its contrib SessionDBPlugin is meant
    # for crash recovery, re-delivers already delivered queued messages after every restart and cannot store
    # binary payloads, so it is not used. Persistent sessions therefore live as long as this process.
    args.data_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("transitions").setLevel(logging.WARNING)  # amqtt's state machine logs every transition
    # Device authentication and topic ACL (src/devices/amqtt_auth.py): it refuses before amqtt touches a session
    from devices.amqtt_auth import embedded_plugins

    asyncio.run(serve(args.host, args.port, embedded_plugins(args.data_dir)))


if __name__ == "__main__":
    main()
