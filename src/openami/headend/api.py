"""The head-end's counts for operators: which frames were refused, and why."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import AwareDatetime, BaseModel, Field
from sqlalchemy.orm import Session

from openami.api.deps import get_session
from openami.headend.queries import rejection_counts
from openami.headend.stats import REASONS

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
    since: Annotated[
        AwareDatetime | None, Query(description="ISO-8601 instant with offset, e.g. 2026-03-01T00:00:00Z")
    ] = None,
) -> RejectionCounts:
    """Frames refused by the head-end (malformed, unknown meter, bad signature, replayed, impossible values,
    time out of range), from the persisted rejection log."""
    counts = rejection_counts(session, since=since)
    return RejectionCounts(since=since, total=sum(counts.values()), by_reason=dict(sorted(counts.items())))
