"""Read-only queries over the head-end's tables, for the API and the demo."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from openami.headend.models import FrameRejection


def rejection_counts(session: Session, *, since: datetime | None = None) -> dict[str, int]:
    """Rejected frames per reason from the persisted log (all time, or since `since`)."""
    stmt = select(FrameRejection.reason, func.count()).group_by(FrameRejection.reason)
    if since is not None:
        stmt = stmt.where(FrameRejection.received_at >= since)
    return {str(reason): int(n) for reason, n in session.execute(stmt)}
