"""HTTP plumbing shared by every domain router: dependencies, the one error renderer, request ids, metrics."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import Counter, Histogram
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kernel.audit import SystemActor, client_var, record_audit, request_id_var
from kernel.auth import TokenClaims
from kernel.authz import Access, Principal, grant
from kernel.clock import Clock
from kernel.errors import DomainError, PermissionDenied, Unauthenticated
from kernel.personal_data import FieldCipher
from kernel.runtime import Runtime
from kernel.sessions import check_session, publish_revocations

log = logging.getLogger("vnh.http")

HTTP_REQUESTS = Counter("vnh_http_requests_total", "HTTP requests", ["method", "route", "status"])
HTTP_LATENCY = Histogram(
    "vnh_http_request_seconds", "HTTP request latency", ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_session(runtime: RuntimeDep) -> AsyncIterator[AsyncSession]:
    """One session per request, committed once when the endpoint returns.

    `scope="function"` runs the commit before the response is built, so a failed commit is the caller's error
    response; by default FastAPI would run it after the response was sent and a client would see a success for a
    change that was rolled back (tests/vnh/test_unit_of_work.py).
    """
    async with runtime.database.unit_of_work() as session:
        yield session
    await publish_revocations(runtime, session)


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


def get_clock(runtime: RuntimeDep) -> Clock:
    return runtime.clock


def get_cipher(runtime: RuntimeDep) -> FieldCipher:
    return runtime.cipher


ClockDep = Annotated[Clock, Depends(get_clock)]
CipherDep = Annotated[FieldCipher, Depends(get_cipher)]


def bearer_token(request: Request, runtime: Runtime) -> str:
    """The token of the request: the Authorization header, else the console's session cookie."""
    header = request.headers.get("authorization")
    token: str | None = None
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value:
            raise Unauthenticated("expected 'Authorization: Bearer <token>'", code="invalid_token")
        token = value.strip()
    else:
        token = request.cookies.get(runtime.settings.auth.session_cookie)
    if not token:
        raise Unauthenticated("authentication required")
    return token


# what a limited token (expired password, second factor not enrolled yet) may call
LIMITED_TOKEN_PATHS = frozenset({"/v1/auth/password", "/v1/auth/logout", "/v1/auth/me", "/v1/auth/totp",
                                 "/v1/auth/totp/confirm"})


def _route_path(request: Request) -> str:
    """The path the routes see: without the `root_path` a proxy mounting the service under a prefix adds."""
    path: str = request.scope["path"]
    root = request.scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root + "/") else path


async def current_claims(request: Request, runtime: RuntimeDep) -> TokenClaims:
    """The one place every request authenticates: signature and expiry, then whether the user still holds the
    token (`kernel.sessions.check_session`). The claims stay on `request.state.token` for logout."""
    claims = runtime.tokens.decode_claims(bearer_token(request, runtime))
    await check_session(runtime, claims)
    if claims.limited_to is not None and _route_path(request) not in LIMITED_TOKEN_PATHS:
        code = "password_change_required" if claims.limited_to == "password" else "mfa_enrolment_required"
        raise PermissionDenied("this token may only change the password or enrol a second factor", code=code)
    request.state.token = claims
    return claims


async def current_principal(claims: Annotated[TokenClaims, Depends(current_claims)]) -> Principal:
    return claims.principal


PrincipalDep = Annotated[Principal, Depends(current_principal)]


def authorize(permission: str) -> Callable[[Principal], Access]:
    """The one dependency that applies the matrix; the route walker finds `permission` on it."""

    def dependency(principal: PrincipalDep) -> Access:
        return grant(principal, permission)

    dependency.permission = permission  # type: ignore[attr-defined]
    dependency.__name__ = f"authorize[{permission}]"
    return dependency


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


_OUR_VALIDATION_CODES = frozenset(
    {"invalid_id_number", "invalid_id_birth_date", "unknown_id_region", "id_number_mismatch", "invalid_phone",
     "invalid_region_code", "invalid_coordinates", "invalid_time"}
)


def _validation_response(exc: RequestValidationError) -> JSONResponse:
    errors = []
    code = "validation_error"
    for err in exc.errors():
        # never echo the input back: it may be an ID number or a phone number
        errors.append({"loc": [str(p) for p in err.get("loc", ())], "type": err.get("type"), "msg": err.get("msg")})
        if code == "validation_error" and err.get("type") in _OUR_VALIDATION_CODES:
            code = str(err["type"])
    message = errors[0]["msg"] if len(errors) == 1 else f"{len(errors)} invalid fields"
    return JSONResponse(status_code=422, content=error_body(code, str(message), {"errors": errors}))


async def _audit_refusal(request: Request, exc: DomainError) -> None:
    """Refusals are audited in a transaction of their own (the request's was rolled back)."""
    runtime: Runtime | None = getattr(request.app.state, "runtime", None)
    if runtime is None:
        return
    actor: Any = SystemActor("anonymous")
    with contextlib.suppress(DomainError):
        actor = runtime.tokens.decode(bearer_token(request, runtime))
    try:
        async with runtime.database.unit_of_work() as session:
            await record_audit(
                session, runtime.clock, actor, "http.refused", "route", None,
                {"method": request.method, "path": request.url.path, "code": exc.code, "status": exc.status},
                outcome="denied",
            )
    except Exception:
        log.exception("could not audit a refusal")


def install_error_handlers(app: FastAPI) -> None:
    async def on_domain_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, DomainError)
        if isinstance(exc, PermissionDenied | Unauthenticated) and exc.code != "invalid_credentials":
            await _audit_refusal(request, exc)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(status_code=exc.status, content=error_body(exc.code, exc.message, exc.details),
                            headers=headers)

    async def on_validation_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return _validation_response(exc)

    async def on_http_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthenticated", 403: "forbidden"}
        code = codes.get(exc.status_code, "http_error")
        return JSONResponse(status_code=exc.status_code, content=error_body(code, str(exc.detail)),
                            headers=getattr(exc, "headers", None))

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        runtime: Runtime | None = getattr(request.app.state, "runtime", None)
        if runtime is not None:
            try:
                async with runtime.database.unit_of_work() as session:
                    await record_audit(session, runtime.clock, SystemActor("http"), "http.failed", "route", None,
                                       {"method": request.method, "path": request.url.path,
                                        "error": type(exc).__name__}, outcome="failed",
                                       client=client_of(request.scope))
            except Exception:
                log.exception("could not audit a failure")
        return JSONResponse(
            status_code=500,
            content=error_body("internal_error", "internal error; quote the request id",
                               {"request_id": request_id_var.get() or getattr(request.state, "request_id", None)}),
        )

    app.add_exception_handler(DomainError, on_domain_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)  # errors of the outer middleware only
    app.add_middleware(UnexpectedErrorMiddleware, render=on_unexpected)


class UnexpectedErrorMiddleware:
    """Answers an unexpected error with the 500 body and ends the request there. Starlette's own handler for
    `Exception` re-raises after answering, and the server then closes the connection, so a keep-alive client's
    next request was reset; here the exception stops once answered. Installed innermost of the middleware."""

    def __init__(self, app: ASGIApp, render: Callable[[Request, Exception], Awaitable[JSONResponse]]) -> None:
        self.app = app
        self.render = render

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            if started:  # half an answer is out: only closing the connection can tell the client
                raise
            response = await self.render(Request(scope, receive), exc)
            await response(scope, receive, send)


MAX_BODY_BYTES = 1_000_000
# PostgreSQL text cannot hold NUL, and UTF-8 cannot hold a lone surrogate: such input is refused up front, as a
# 422, instead of failing in the database as a 500.
_NUL_QUERY = re.compile(rb"%00|\x00")
_BAD_JSON_TEXT = re.compile(
    rb"\x00|(?<!\\)\\u0000"
    rb"|(?<!\\)\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    rb"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})(?<!\\)\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)
# a device event's body is checked by the device protocol itself, which dead-letters it with its reason (protocol v1:
# a rejected message is stored, never only refused)
_DEVICE_EVENTS = re.compile(r"^/v1/devices/[^/]+/events$")


class InputHygieneMiddleware:
    """Refuses bodies over 1 MB (413) and text PostgreSQL cannot store (NUL, lone surrogates: 422 `invalid_text`)
    before any endpoint runs. Pure ASGI; it buffers only bodies it has to scan (JSON up to the limit)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    @staticmethod
    async def _refuse(send: Send, status: int, code: str, message: str) -> None:
        body = json.dumps(error_body(code, message)).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _NUL_QUERY.search(scope.get("query_string", b"")) or "\x00" in scope.get("path", ""):
            await self._refuse(send, 422, "invalid_text", "NUL characters are not accepted")
            return
        headers = dict(scope.get("headers") or [])
        if int(headers.get(b"content-length", b"0") or 0) > MAX_BODY_BYTES:
            await self._refuse(send, 413, "payload_too_large", f"bodies are limited to {MAX_BODY_BYTES} bytes")
            return
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                await self._refuse(send, 413, "payload_too_large", f"bodies are limited to {MAX_BODY_BYTES} bytes")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if _BAD_JSON_TEXT.search(body) and not _DEVICE_EVENTS.match(scope.get("path", "")):
            await self._refuse(send, 422, "invalid_text", "text with NUL characters or lone surrogates is not accepted")
            return
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def client_of(scope: Scope) -> tuple[str | None, str | None]:
    """The client address and user agent audit rows record. The address is the ASGI scope's `client` only: the
    server has already replaced it from `X-Forwarded-For` where the peer is a trusted proxy, and a header the
    client sends itself is never believed."""
    peer = scope.get("client")
    address = str(peer[0]) if peer and peer[0] else None
    agent = dict(scope.get("headers") or []).get(b"user-agent")
    user_agent = agent.decode("latin-1").replace("\x00", "")[:256] if agent else None
    return address, user_agent or None


class RequestContextMiddleware:
    """Request id (honoured from `X-Request-ID` or made), access metrics. Pure ASGI so streaming is untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming[:64] if incoming and incoming.isascii() and incoming.isprintable() else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        client = client_of(scope)
        client_token = client_var.set(client)
        # the 500 handler runs outside this middleware (Starlette's ServerErrorMiddleware): it reads the id here
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            HTTP_REQUESTS.labels(scope["method"], template, str(status)).inc()
            HTTP_LATENCY.labels(scope["method"], template).observe(time.perf_counter() - started)
            request_id_var.reset(token)
            client_var.reset(client_token)


