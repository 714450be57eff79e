"""The application factory: routers of every domain, the error renderer, middleware and background workers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from billing.endpoints import router as billing_router
from console.endpoints import STATIC as CONSOLE_STATIC
from console.endpoints import router as console_router
from devices.endpoints import router as devices_router
from dispatch.endpoints import live_router as dispatch_live_router
from dispatch.endpoints import router as dispatch_router
from kernel.auth_endpoints import router as auth_router
from kernel.http import InputHygieneMiddleware, RequestContextMiddleware, install_error_handlers
from kernel.proxies import TrustedProxyMiddleware
from kernel.runtime import Runtime
from orders.endpoints import router as orders_router
from orders.order_endpoints import router as order_flow_router
from supervision.endpoints import router as supervision_router
from vnh.accounts import router as accounts_router
from vnh.health import router as health_router
from vnh.workers import Workers


def create_app(runtime: Runtime, *, background: bool = True) -> FastAPI:
    """`background=False` leaves the relay and sealer to the caller (tests drive them step by step)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        workers = Workers(runtime) if background else None
        if workers:
            workers.start()
        app.state.workers = workers
        try:
            yield
        finally:
            if workers:
                await workers.close()

    app = FastAPI(
        title="vnh — 虚拟养老院 service dispatch",
        version="0.1.0",
        description="Orders, dispatch, visits, devices, billing and supervision of a virtual nursing home. "
        "Errors: `{\"error\": {\"code\", \"message\", \"details\"}}`. Money in fen, times RFC 3339, WGS-84.",
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    install_error_handlers(app)
    app.add_middleware(InputHygieneMiddleware)
    app.add_middleware(RequestContextMiddleware)  # the id is set before anything can refuse
    app.add_middleware(TrustedProxyMiddleware, runtime=runtime)  # outermost: the client's address, for all
    routers = (health_router, auth_router, accounts_router, dispatch_live_router, dispatch_router, orders_router,
               order_flow_router, devices_router, billing_router, supervision_router)
    for router in routers:
        app.include_router(router)
    app.include_router(console_router)
    app.mount("/console/static", StaticFiles(directory=CONSOLE_STATIC), name="console-static")
    return app
