"""Every route of the assembled API, with the permission it declares and a way to call it with chosen ids."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from httpx import Response

from openami.api.auth import Public, Require
from openami.security.permissions import Permission

_PARAM = re.compile(r"{(\w+)}")
# The documentation pages the framework serves (not in the OpenAPI schema): public by design, they hold no data.
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc"})


def _declarations(dependant: Dependant) -> Iterator[Require | Public]:
    for sub in dependant.dependencies:
        if isinstance(sub.call, Require | Public):
            yield sub.call
        yield from _declarations(sub)


@dataclass(frozen=True)
class RouteInfo:
    method: str
    path: str
    declared: tuple[Require | Public, ...]

    @property
    def permission(self) -> Permission | None:
        """The permission the route needs (None: public). Only meaningful when exactly one is declared."""
        return self.declared[0].permission if self.declared else None

    @property
    def public(self) -> bool:
        return any(isinstance(d, Public) for d in self.declared)

    def __str__(self) -> str:
        return f"{self.method} {self.path}"

    def url(self, values: Mapping[str, Any]) -> str:
        """The route's path with its parameters taken from `values` (by name)."""
        return _PARAM.sub(lambda m: str(values[m.group(1)]), self.path)

    def call(self, client: TestClient, values: Mapping[str, Any], body: Any = None) -> Response:
        """Call the route with its path parameters taken from `values`; `{}` as body for writes."""
        url = self.url(values)
        if self.method in ("POST", "PUT", "PATCH"):
            return client.request(self.method, url, json={} if body is None else body)
        return client.request(self.method, url)


def _all_routes(routes: list[Any]) -> Iterator[APIRoute]:
    """The APIRoutes of `routes`, looking into included routers (FastAPI keeps those as `_IncludedRouter`s)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "original_router"):
            yield from _all_routes(route.original_router.routes)


def api_routes(app: FastAPI) -> list[RouteInfo]:
    """Every API route (one entry per method), in a stable order; not the documentation pages."""
    found = []
    for route in _all_routes(app.routes):
        if route.path in DOCS_PATHS and not route.include_in_schema:
            continue
        declared = tuple(_declarations(route.dependant))
        for method in sorted(route.methods - {"HEAD"}):
            found.append(RouteInfo(method, route.path, declared))
    return sorted(found, key=lambda r: (r.path, r.method))
