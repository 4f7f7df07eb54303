"""What other contexts learn from the outbox: plain values, never its table."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any


class EventStatus(enum.StrEnum):
    """The stored state of an event. "In flight" is not stored: it is a pending event under a live lease."""

    PENDING = "pending"  # waiting for its `available_at`, or claimed by a worker whose lease has not run out
    DONE = "done"  # its handler's transaction committed
    DEAD = (
        "dead"  # given up after the policy's attempts; kept, with its last error, until someone requeues it
    )


class EventState(enum.StrEnum):
    """What inspection reports: the stored status, with pending split by whether a live lease holds it."""

    PENDING = "pending"
    IN_FLIGHT = "in_flight"
    DONE = "done"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    id: int
    topic: str  # what happened or what to do, dotted: "payment.received", "notification.send"
    key: str  # the emitter's deduplication key, unique per topic
    payload: dict[str, Any]
    site_id: int | None
    created_at: datetime
    available_at: datetime  # not handed out before this instant (a delayed event, or a retry's backoff)
    attempts: int  # how many times it was handed to a handler (claimed)
    status: EventStatus
    locked_by: str | None
    locked_until: datetime | None
    done_at: datetime | None
    dead_at: datetime | None
    last_error: str | None

    @property
    def idempotency_key(self) -> str:
        """The key a handler with outside effects gives the outside service (an e-mail's Message-ID, Stripe's
        `idempotency_key`), so a repeat after a crash between sending and committing is recognised there."""
        return f"openami-outbox-{self.id}"


@dataclass(frozen=True, slots=True)
class TopicCount:
    topic: str
    state: EventState
    count: int
