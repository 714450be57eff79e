"""A push provider's webhook as a real local HTTP server: records each POST (headers, raw body); can refuse the
first ones with 503 to exercise retries."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class PushReceiver:
    def __init__(self, *, refuse_first: int = 0) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.refused: list[tuple[dict[str, str], bytes]] = []
        self._refuse = refuse_first
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver._lock:
                    refuse = receiver._refuse > 0
                    if refuse:
                        receiver._refuse -= 1
                        receiver.refused.append((headers, body))
                    else:
                        receiver.received.append((headers, body))
                    receiver._arrived.notify_all()
                self.send_response(503 if refuse else 200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *_args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/push"
        self._thread = threading.Thread(target=self.server.serve_forever, name="push-receiver", daemon=True)
        self._thread.start()

    def pushes(self) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(body) for _headers, body in self.received]

    def wait_for(self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float) -> bool:
        """Block (in a thread) until the received pushes satisfy `predicate`, at most `timeout` seconds."""
        with self._arrived:
            return self._arrived.wait_for(
                lambda: predicate([json.loads(body) for _headers, body in self.received]), timeout)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def signed_by(secret: str, headers: dict[str, str], body: bytes) -> bool:
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers.get("x-vnh-signature", ""), expected)
