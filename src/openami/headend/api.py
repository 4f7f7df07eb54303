"""The head-end's counts for operators: which frames were refused, and why."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import AwareDatetime, BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from openami.api.auth import Access, require
from openami.api.deps import get_session
from openami.headend.queries import rejection_counts
from openami.headend.stats import REASONS
from openami.registry.models import Site
from openami.security.permissions import Permission

router = APIRouter(prefix="/api/v1/headend", tags=["head-end"])


class RejectionCounts(BaseModel):
    since: datetime | None = Field(
        description="counted from this instant (UTC), or over all time when absent"
    )
    total: int
    by_reason: dict[str, int] = Field(description=f"frames refused per reason, one of {', '.join(REASONS)}")


@router.get("/rejections", response_model=RejectionCounts)
def rejections(
    session: Annotated[Session, Depends(get_session)],
    access: Annotated[Access, require(Permission.HEADEND_READ)],
    since: Annotated[
        AwareDatetime | None, Query(description="ISO-8601 instant with offset, e.g. 2026-03-01T00:00:00Z")
    ] = None,
) -> RejectionCounts:
    """Frames refused by the head-end (malformed, unknown meter, bad signature, replayed, impossible values,
    time out of range), from the persisted rejection log: those whose topic names one of the caller's sites."""
    codes = session.scalars(select(Site.code).where(Site.id.in_(access.reach.site_ids))).all()
    counts = rejection_counts(session, since=since, site_codes=codes)
    return RejectionCounts(since=since, total=sum(counts.values()), by_reason=dict(sorted(counts.items())))
