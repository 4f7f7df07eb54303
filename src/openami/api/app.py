"""Builds the FastAPI application around a container from bootstrap()."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from sqlalchemy.exc import DataError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openami import __version__
from openami.api.auth import PUBLIC
from openami.billing.api import router as billing_router
from openami.bootstrap import Container
from openami.common.errors import ConflictError, NotFoundError, ValidationError
from openami.control.api import router as control_router
from openami.headend.api import router as headend_router
from openami.notifications.api import router as notifications_router
from openami.prepayment.payments_api import router as payments_router
from openami.prepayment.tokens_api import router as tokens_router
from openami.prepayment.wallet_api import router as wallets_router
from openami.readings.api import router as readings_router
from openami.registry.api import router as registry_router
from openami.security.api import router as security_router

log = structlog.get_logger(__name__)

# Sent with every response. The API serves JSON and the bundled docs page; nothing is framed or sniffed.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    # The docs page (Swagger UI, served from this origin) needs inline styles and scripts.
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
        "script-src 'self' 'unsafe-inline'; frame-ancestors 'none'"
    ),
}


# No request the API takes needs more: a registry import file goes through the CLI, not the API.
MAX_BODY_BYTES = 1024 * 1024


class BodyLimit:
    """Refuses (413) a request whose body is larger than `limit` bytes, by its Content-Length or, for a body sent
    in chunks without one, as soon as the bytes read pass the limit: nothing of it reaches a route."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            if not declared.isdigit() or int(declared) > self.limit:
                await self._refuse(scope, send)
                return
            await self.app(scope, receive, send)
            return
        # No length given (a chunked body): read it here, up to the limit, then hand it on whole.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._refuse(scope, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        log.warning("request_refused", status=413, reason="body_too_large", path=scope.get("path"))
        response = JSONResponse(
            {"detail": f"the request body is larger than the {self.limit} bytes this API accepts"},
            status_code=413,
            headers=SECURITY_HEADERS,
        )
        await response(scope, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


def create_app(container: Container) -> FastAPI:
    # The interactive docs are served from bundled files: a rural site's operator may have no internet.
    app = FastAPIOffline(
        title="openami",
        version=__version__,
        description="Smart electricity metering: registry, readings and their quality.",
    )
    app.state.container = container
    app.state.payments = container.payments

    @app.middleware("http")
    async def _security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    app.add_middleware(BodyLimit)
    app.include_router(security_router)
    app.include_router(registry_router)
    app.include_router(readings_router)
    app.include_router(headend_router)
    app.include_router(billing_router)
    app.include_router(payments_router)
    app.include_router(control_router)
    app.include_router(wallets_router)
    app.include_router(tokens_router)
    app.include_router(notifications_router)

    @app.get("/healthz", tags=["ops"], dependencies=[PUBLIC])
    def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @app.exception_handler(NotFoundError)
    def _not_found(_request: Request, exc: NotFoundError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(ConflictError)
    def _conflict(_request: Request, exc: ConflictError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(OverflowError)
    @app.exception_handler(DataError)
    def _out_of_range(_request: Request, exc: Exception) -> JSONResponse:
        # A number no column can hold (an id of 10**30, say) names nothing: the request is wrong, not the server.
        return JSONResponse(
            {"detail": "a number in the request is out of range for what it names"}, status_code=422
        )

    @app.exception_handler(ValidationError)
    def _invalid(_request: Request, exc: ValidationError) -> JSONResponse:
        return JSONResponse({"detail": exc.message, "location": exc.location}, status_code=422)

    return app
