"""Dependencies shared by every router: the container built by bootstrap(), and a session per request."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Path, Request
from sqlalchemy.orm import Session

from openami.bootstrap import Container


def get_container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


def get_session(request: Request) -> Iterator[Session]:
    """A session for one request. Routers that change state commit explicitly; anything else is rolled back."""
    with get_container(request).session_factory() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]
ContainerDep = Annotated[Container, Depends(get_container)]
RowId = Annotated[int, Path(ge=1, le=2**31 - 1)]  # a row id in a path: a 32-bit positive integer
