"""Signed JSON webhooks: one POST shape for every outbound notification (alarm escalation, caregivers' mobile push).

The body is signed with HMAC-SHA256 under the receiver's shared secret in `X-VNH-Signature: sha256=<hex>`, and
carries an `Idempotency-Key`, so the receiver can check the sender and drop a retry it already handled."""

from __future__ import annotations

import hashlib
import hmac

import httpx


class SignedWebhook:
    def __init__(self, url: str, *, secret: str | None = None, timeout_s: float = 5.0,
                 client: httpx.AsyncClient | None = None) -> None:
        self.url = url
        self._secret = secret.encode() if secret else None
        self._client = client or httpx.AsyncClient(timeout=timeout_s)

    async def post_json(self, content: bytes, *, idempotency_key: str) -> None:
        """POST `content` (JSON bytes); raises on a transport error or a non-2xx answer, for the caller to retry."""
        headers = {"Content-Type": "application/json", "Idempotency-Key": idempotency_key}
        if self._secret is not None:
            headers["X-VNH-Signature"] = "sha256=" + hmac.new(self._secret, content, hashlib.sha256).hexdigest()
        response = await self._client.post(self.url, content=content, headers=headers)
        response.raise_for_status()

    async def aclose(self) -> None:
        await self._client.aclose()
