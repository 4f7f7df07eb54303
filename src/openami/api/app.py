"""Builds the FastAPI application around a container from bootstrap()."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from sqlalchemy.exc import DataError
from starlette.requests import Request
from starlette.responses import Response

from openami import __version__
from openami.bootstrap import Container
from openami.common.errors import ConflictError, NotFoundError, ValidationError
from openami.headend.api import router as headend_router
from openami.readings.api import router as readings_router
from openami.registry.api import router as registry_router

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


def create_app(container: Container) -> FastAPI:
    # The interactive docs are served from bundled files: a rural site's operator may have no internet.
    app = FastAPIOffline(
        title="openami",
        version=__version__,
        description="Smart electricity metering: registry, readings and their quality.",
    )
    app.state.container = container

    @app.middleware("http")
    async def _security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    app.include_router(registry_router)
    app.include_router(readings_router)
    app.include_router(headend_router)

    @app.get("/healthz", tags=["ops"])
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
