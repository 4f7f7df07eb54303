"""Feeds control from the head-end's uplinks: a readings sink that passes every batch on, then tells control of
each relay state a meter reported (OBIS 0-0:96.3.10, saying whether it came in a reply), of each reply to a
command and of the load limit a reply reports (OBIS 0-0:17.0.0), in the same transaction.

Wire it around the readings service where the head-end is built: `HeadEnd(..., sink=RelayReportSink(readings,
control))`. A confirmation thus commits with the frame that carried it, or not at all.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from openami.common.obis import LOAD_LIMIT, RELAY_STATE
from openami.control.service import ControlService
from openami.readings.interfaces import IngestResult, MeterBatch, ReadingsSink, Source


class RelayReportSink:
    """A `ReadingsSink` that stores through `inner`, then confirms commands from what the meters reported."""

    def __init__(self, inner: ReadingsSink, control: ControlService) -> None:
        self._inner = inner
        self._control = control

    def ingest(self, session: Session, batches: list[MeterBatch]) -> IngestResult:
        result = self._inner.ingest(session, batches)
        awaiting = self._control.meters_awaiting_report(
            session, [b.meter_id for b in batches if any(i.obis == RELAY_STATE for i in b.instants)]
        )
        for batch in batches:
            in_reply = batch.source is Source.REREAD  # a reply to a command
            relay = [i for i in batch.instants if i.obis == RELAY_STATE]
            if relay and batch.meter_id in awaiting:
                # The latest value in the frame is the relay's state now; 1 connected, 0 open.
                latest = max(relay, key=lambda i: i.read_at)
                self._control.on_relay_report(
                    session, batch.meter_id, latest.value >= 0.5, batch.received_at, in_reply=in_reply
                )
            if in_reply:
                self._control.on_reply(session, batch.meter_id, batch.received_at)
                limits = [i for i in batch.instants if i.obis == LOAD_LIMIT]
                if limits:
                    latest = max(limits, key=lambda i: i.read_at)
                    self._control.on_load_limit_report(
                        session, batch.meter_id, latest.value, batch.received_at
                    )
        return result
