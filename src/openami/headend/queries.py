"""Read-only queries over the head-end's tables, for the API and the demo."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from openami.headend.models import FrameRejection


def _like_literal(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def rejection_counts(
    session: Session, *, since: datetime | None = None, site_codes: Collection[str] | None = None
) -> dict[str, int]:
    """Rejected frames per reason from the persisted log (all time, or since `since`); only of frames whose
    topic names one of `site_codes` when given (a frame naming no site of those is none of their business)."""
    stmt = select(FrameRejection.reason, func.count()).group_by(FrameRejection.reason)
    if site_codes is not None:
        if not site_codes:
            return {}
        stmt = stmt.where(
            or_(*(FrameRejection.topic.like(f"%/{_like_literal(c)}/up/%", escape="\\") for c in site_codes))
        )
    if since is not None:
        stmt = stmt.where(FrameRejection.received_at >= since)
    return {str(reason): int(n) for reason, n in session.execute(stmt)}
