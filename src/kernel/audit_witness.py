"""Witnesses of the audit chain's head, outside the database.

The chain proves that no sealed row was edited, deleted or reordered — except the newest ones: deleting the last
rows together with their seals (as the database superuser, triggers off) leaves a shorter chain that is intact in
itself. So after each sealing transaction commits, the sealer hands the new head (chain position, audit id, hash,
count, time) to witnesses the database superuser cannot rewrite alone:

- `FileWitness`: an append-only JSON-lines file outside PostgreSQL's data directory (`VNH_AUDIT__WITNESS_FILE`,
  default `<data_dir>/audit-witness.jsonl`; the embedded server's data are in `<data_dir>/postgres`), opened with
  `O_APPEND` and fsynced. Each line carries an HMAC under the audit key, so a line cannot be forged without it.
- `LogWitness`: one structured log line per head (`audit.head`), for whatever collects the service's logs.
- `HttpWitness` (optional, `VNH_AUDIT__WITNESS_URL`): a POST of the signed line to a remote service; a failure is
  logged and the newest head retried on the sealer's next tick, never blocking sealing longer than its timeout.

`verify` reads the newest witnessed head from the file and answers `truncated` when the chain no longer reaches it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import httpx

from kernel.audit import ChainHead
from kernel.settings import Settings

log = logging.getLogger("vnh.audit.witness")

_MAC_CONTEXT = b"vnh-audit-witness\x00"


class Witness(Protocol):
    async def record(self, head: ChainHead) -> None: ...

    async def retry(self) -> None:
        """Deliver what an earlier `record` could not (called on every sealer tick)."""


def _canonical(head: ChainHead) -> bytes:
    return json.dumps(head.as_dict(), sort_keys=True, separators=(",", ":")).encode()


def sign(key: bytes, head: ChainHead) -> dict[str, Any]:
    """The witnessed line: the head's fields and an HMAC-SHA256 of their canonical JSON under the audit key."""
    mac = hmac.new(key, _MAC_CONTEXT + _canonical(head), hashlib.sha256).hexdigest()
    return {**head.as_dict(), "mac": mac}


def parse(key: bytes, line: dict[str, Any]) -> ChainHead | None:
    """The head a signed line carries, or None when it is malformed or its HMAC does not match."""
    try:
        at = datetime.fromisoformat(line["at"]) if line.get("at") else None
        head = ChainHead(chain_seq=int(line["chain_seq"]), audit_id=int(line["audit_id"]), hash=str(line["hash"]),
                         count=int(line["count"]), at=at)
        mac = str(line["mac"])
    except (KeyError, TypeError, ValueError):
        return None
    expected = hmac.new(key, _MAC_CONTEXT + _canonical(head), hashlib.sha256).hexdigest()
    return head if hmac.compare_digest(mac, expected) else None


class FileWitness:
    def __init__(self, path: Path, key: bytes) -> None:
        self.path = path
        self._key = key
        self._pending: ChainHead | None = None

    def _append(self, head: ChainHead) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(sign(self._key, head), separators=(",", ":")) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    async def record(self, head: ChainHead) -> None:
        try:
            await asyncio.to_thread(self._append, head)
            self._pending = None
        except OSError:
            self._pending = head
            log.exception("could not append the audit head to %s; retrying", self.path)

    async def retry(self) -> None:
        if self._pending is not None:
            await self.record(self._pending)

    def newest(self) -> tuple[ChainHead | None, int]:
        """The witnessed head of the highest chain position, and how many lines failed their HMAC or were
        malformed (a sign that someone wrote to the file without the key)."""
        best: ChainHead | None = None
        invalid = 0
        try:
            with self.path.open("rb") as fh:
                for raw in fh:
                    if not raw.strip():
                        continue
                    try:
                        head = parse(self._key, json.loads(raw))
                    except ValueError:
                        head = None
                    if head is None:
                        invalid += 1
                    elif best is None or head.chain_seq > best.chain_seq:
                        best = head
        except FileNotFoundError:
            return None, 0
        return best, invalid


class LogWitness:
    async def record(self, head: ChainHead) -> None:
        log.info("audit.head %s", json.dumps(head.as_dict(), separators=(",", ":")))

    async def retry(self) -> None:
        return None


class HttpWitness:
    """POSTs the signed head as JSON; only the newest undelivered head is kept (it implies every older one).

    A failed POST costs the sealer at most `timeout_s`; further attempts back off (1 s doubling to `max_backoff_s`)
    so an unreachable witness slows no sealing batch after the first."""

    def __init__(self, url: str, key: bytes, *, timeout_s: float = 5.0, max_backoff_s: float = 60.0) -> None:
        self.url = url
        self._key = key
        self._timeout = timeout_s
        self._max_backoff = max_backoff_s
        self._pending: ChainHead | None = None
        self._failures = 0
        self._next_try = 0.0

    async def record(self, head: ChainHead) -> None:
        self._pending = head
        await self.retry()

    async def retry(self) -> None:
        head = self._pending
        if head is None or time.monotonic() < self._next_try:
            return
        try:
            async with httpx.AsyncClient(timeout=self._timeout) as client:
                response = await client.post(self.url, json=sign(self._key, head))
                response.raise_for_status()
        except (httpx.HTTPError, OSError) as exc:
            self._failures += 1
            self._next_try = time.monotonic() + min(self._max_backoff, 2.0 ** (self._failures - 1))
            log.warning("audit head witness %s failed (%s, %d in a row); retrying", self.url, type(exc).__name__,
                        self._failures)
            return
        self._failures = 0
        self._next_try = 0.0
        if self._pending is head:
            self._pending = None


class Witnesses:
    """Every configured witness; the sealer calls `record` after its transaction commits."""

    def __init__(self, witnesses: Sequence[Witness], file: FileWitness | None) -> None:
        self.witnesses = list(witnesses)
        self.file = file

    @classmethod
    def from_settings(cls, settings: Settings) -> Witnesses:
        if settings.audit.key is None:
            raise RuntimeError("VNH_AUDIT__KEY is not configured")
        key = base64.b64decode(settings.audit.key.get_secret_value())
        path = settings.audit.witness_file or settings.data_dir / "audit-witness.jsonl"
        file = FileWitness(path, key)
        witnesses: list[Witness] = [file, LogWitness()]
        if settings.audit.witness_url:
            witnesses.append(HttpWitness(settings.audit.witness_url, key,
                                         timeout_s=settings.audit.witness_timeout_s))
        return cls(witnesses, file)

    async def record(self, head: ChainHead) -> None:
        for witness in self.witnesses:
            try:
                await witness.record(head)
            except Exception:
                log.exception("audit witness %s failed", type(witness).__name__)

    async def retry(self) -> None:
        for witness in self.witnesses:
            try:
                await witness.retry()
            except Exception:
                log.exception("audit witness %s failed", type(witness).__name__)

    def newest(self) -> ChainHead | None:
        if self.file is None:
            return None
        head, invalid = self.file.newest()
        if invalid:
            log.warning("%d audit witness lines in %s are malformed or fail their HMAC", invalid, self.file.path)
        return head
