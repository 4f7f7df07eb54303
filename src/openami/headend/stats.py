"""What the head-end did: one batch's result and the running totals, as plain values."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from openami.readings.interfaces import IngestResult

# Stable rejection codes, used as metric labels and in the frame_rejection table (docs/protocol.md).
REASONS = ("malformed", "unknown_meter", "bad_signature", "replayed", "impossible_value", "time_out_of_range")


@dataclass(frozen=True, slots=True)
class Rejection:
    received_at: datetime
    serial: str | None
    topic: str
    reason: str  # one of REASONS
    detail: str


@dataclass(slots=True)
class HandleResult:
    """What one committed batch did."""

    frames: int = 0
    accepted: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    ingest: IngestResult = field(default_factory=IngestResult)


@dataclass(slots=True)
class HeadEndStats:
    """Running totals since the head-end started (committed batches only), for the demo and the API."""

    frames_received: int = 0
    frames_accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)  # reason -> frames
    batches_committed: int = 0
    batches_failed: int = 0
    intervals_stored: int = 0
    registers_stored: int = 0
    duplicates: int = 0
    conflicts: int = 0
    estimates_replaced: int = 0
    values_rejected_by_readings: dict[str, int] = field(default_factory=dict)
    commands_sent: int = 0

    @property
    def frames_rejected(self) -> int:
        return sum(self.rejected.values())

    def add(self, result: HandleResult) -> None:
        self.batches_committed += 1
        self.frames_received += result.frames
        self.frames_accepted += result.accepted
        for rejection in result.rejections:
            self.rejected[rejection.reason] = self.rejected.get(rejection.reason, 0) + 1
        ingest = result.ingest
        self.intervals_stored += ingest.intervals_stored
        self.registers_stored += ingest.registers_stored
        self.duplicates += ingest.duplicates
        self.conflicts += ingest.conflicts
        self.estimates_replaced += ingest.estimates_replaced
        for reason, n in ingest.rejected.items():
            self.values_rejected_by_readings[reason] = self.values_rejected_by_readings.get(reason, 0) + n
