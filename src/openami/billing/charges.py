"""Pricing accounts' periods for bills: everything that decides whether an account can be billed (no overlapping
bill, meters, complete intervals, a tariff in force every day), then its lines in minor units from the pure core
(`tariffs.pricing.bill_periods`), each tariff for its days. What that needs is read for many accounts at once
(`PeriodReader`). Reads only; writes nothing.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from openami.billing.interfaces import BillLineInfo, BillStatus
from openami.billing.models import AccountTariff, BillRecord, TariffRecord
from openami.billing.usage import (
    MWH_PER_WH,
    account_step_s,
    local_midnight,
    missing_reason,
    read_usage,
    to_load,
)
from openami.common.errors import NotFoundError, ValidationError
from openami.common.obis import ACTIVE_IMPORT_INTERVAL
from openami.readings.models import IntervalReading
from openami.registry.interfaces import AccountInfo, MeterInfo, SiteInfo
from openami.tariffs.model import Component, Tariff, TierBasis
from openami.tariffs.native import parse_tariff
from openami.tariffs.pricing import Line, Load, bill_periods

_CHUNK = 1000  # accounts or meters per IN list
_METERED = (Component.ENERGY, Component.EXPORT, Component.DEMAND, Component.DYNAMIC)


@dataclass(frozen=True)
class PricedBill:
    """An account's period priced: lines in minor units, ready to be written."""

    currency: str
    lines: tuple[BillLineInfo, ...]
    import_wh: int
    export_wh: int
    estimated: int

    @property
    def total_minor(self) -> int:
        return sum(line.amount_minor for line in self.lines)


class NotBillable(Exception):  # noqa: N818  (an outcome, not a fault: the account is reported, not billed)
    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def minor_units(amount: Decimal, digits: int, where: str) -> int:
    """A line's amount (already rounded once by the pricing core) as an integer of minor units."""
    scaled = amount.scaleb(digits)
    if scaled != scaled.to_integral_value():
        raise ValidationError(f"amount {amount} is not a whole number of minor units", where)
    return int(scaled)


def line_info(line: Line, digits: int, estimated: int, where: str) -> BillLineInfo:
    """A priced line as the bill keeps it; a metered line says how many estimated intervals it includes."""
    description = line.description
    if estimated and line.component in _METERED:
        description += f" (includes {estimated} estimated intervals)"
    description = description[:300]  # as long as a stored line's description may be
    return BillLineInfo(
        component=line.component.value,
        description=description,
        period=line.period,
        tier=line.tier,
        quantity=line.quantity,
        unit=line.unit,
        unit_price=line.unit_price,
        amount_minor=minor_units(line.amount, digits, where),
    )


@dataclass(frozen=True)
class Clash:
    """An issued bill of the account overlapping the period."""

    bill_id: int
    start: date
    end: date


class PeriodReader:
    """What billing a group of accounts for one period needs from the database, read for all of them at once:
    their overlapping issued bills, their tariff assignments, their meters' intervals, and (when a tariff has
    yearly or monthly tiers) what the meters imported before a day. A billing run makes one per 500 accounts, so
    the queries are a few per batch, not a few per account.

    `read_until`: read intervals up to that instant instead of the period's end (an estimate made mid-cycle).
    `replacing`: a bill being rebilled, which is not an overlap.
    """

    def __init__(
        self,
        session: Session,
        site: SiteInfo,
        meters: Mapping[int, Sequence[MeterInfo]],
        start: date,
        end: date,
        *,
        read_until: datetime | None = None,
        replacing: int | None = None,
    ) -> None:
        self.session, self.site, self.start, self.end = session, site, start, end
        self.meters = meters
        accounts = sorted(meters)
        self.clashes: dict[int, list[Clash]] = defaultdict(list)
        self.assignments: dict[int, list[tuple[date, int]]] = defaultdict(list)
        for at in range(0, len(accounts), _CHUNK):
            chunk = accounts[at : at + _CHUNK]
            for account_id, bill_id, bill_start, bill_end in session.execute(
                select(BillRecord.account_id, BillRecord.id, BillRecord.period_start, BillRecord.period_end)
                .where(
                    BillRecord.account_id.in_(chunk),
                    BillRecord.status == BillStatus.ISSUED.value,
                    BillRecord.period_start < end,
                    BillRecord.period_end > start,
                    BillRecord.id != (replacing or 0),
                )
                .order_by(BillRecord.account_id, BillRecord.period_start, BillRecord.id)
            ):
                self.clashes[account_id].append(Clash(bill_id, bill_start, bill_end))
            for account_id, effective_from, tariff_id in session.execute(
                select(AccountTariff.account_id, AccountTariff.effective_from, AccountTariff.tariff_id)
                .where(AccountTariff.account_id.in_(chunk), AccountTariff.effective_from < end)
                .order_by(AccountTariff.account_id, AccountTariff.effective_from)
            ):
                self.assignments[account_id].append((effective_from, tariff_id))
        lo = local_midnight(start, site.timezone)
        hi = local_midnight(end, site.timezone) if read_until is None else read_until
        self.usages = read_usage(session, [m for ms in meters.values() for m in ms], lo, hi)
        self._imported: dict[tuple[date, date], dict[int, int]] = {}

    def imported_mwh(self, meter_ids: Sequence[int], start: date, end: date) -> int:
        """Energy imported (mWh) by the meters in the local days `[start, end)`, as stored. The first question
        about a span reads it for every meter of the reader."""
        if end <= start:
            return 0
        sums = self._imported.get((start, end))
        if sums is None:
            sums = self._imported[start, end] = self._read_imported(start, end)
        return sum(sums.get(m, 0) for m in meter_ids) * MWH_PER_WH

    def _read_imported(self, start: date, end: date) -> dict[int, int]:
        ids = sorted(m.id for ms in self.meters.values() for m in ms)
        ir = IntervalReading
        out: dict[int, int] = {}
        for at in range(0, len(ids), _CHUNK):
            out.update(
                (int(meter_id), int(total))
                for meter_id, total in self.session.execute(
                    select(ir.meter_id, func.sum(ir.energy_wh))
                    .where(
                        ir.meter_id.in_(ids[at : at + _CHUNK]),
                        ir.obis == ACTIVE_IMPORT_INTERVAL,
                        ir.interval_start >= local_midnight(start, self.site.timezone),
                        ir.interval_start < local_midnight(end, self.site.timezone),
                    )
                    .group_by(ir.meter_id)
                )
            )
        return out


def price_period(reader: PeriodReader, account: AccountInfo, tariffs: dict[int, Tariff]) -> PricedBill:
    """Everything that decides whether the account can be billed for the reader's period, then its lines."""
    start, end = reader.start, reader.end
    clashes = reader.clashes.get(account.id)
    if clashes:
        clash = clashes[0]
        raise NotBillable(
            f"the period overlaps bill {clash.bill_id} ({clash.start.isoformat()} to "
            f"{clash.end.isoformat()}); correct that bill with rebill instead"
        )
    meters = reader.meters.get(account.id, ())
    if not meters:
        raise NotBillable("no meters at the account's service points")
    lo, hi = local_midnight(start, reader.site.timezone), local_midnight(end, reader.site.timezone)
    usages = [reader.usages[m.id] for m in meters]
    for usage in usages:
        reason = missing_reason(usage, lo, hi)
        if reason is not None:
            raise NotBillable(reason)
    load = to_load(usages, account_step_s(usages))
    estimated = sum(u.estimated for u in usages)
    return price_load(reader, account, load, start, end, tariffs, estimated)


def price_load(
    reader: PeriodReader,
    account: AccountInfo,
    load: Load,
    start: date,
    end: date,
    tariffs: dict[int, Tariff],
    estimated: int,
) -> PricedBill:
    """`load` priced for `[start, end)` (inside the reader's period) with the tariffs the account is on, each
    for its days."""
    meter_ids = [m.id for m in reader.meters.get(account.id, ())]
    lines: list[BillLineInfo] = []
    for seg_start, seg_end, tariff_id in tariff_segments(reader.assignments.get(account.id, []), start, end):
        tariff = tariffs.get(tariff_id)
        if tariff is None:
            tariff = tariffs[tariff_id] = load_tariff(reader.session, tariff_id)
        bases = {v.tiers.basis for v in tariff.versions if v.tiers is not None}
        # The consumption before the segment that yearly and monthly tiers count from (1 January, the 1st).
        year_mwh = month_mwh = 0
        if TierBasis.YEARLY in bases:
            year_mwh = reader.imported_mwh(meter_ids, seg_start.replace(month=1, day=1), seg_start)
        if TierBasis.MONTHLY in bases:
            month_mwh = reader.imported_mwh(meter_ids, seg_start.replace(day=1), seg_start)
        try:
            (bill,) = bill_periods(
                tariff,
                load,
                [(seg_start, seg_end)],
                year_to_date_mwh=year_mwh,
                month_to_date_mwh=month_mwh,
            )
        except ValidationError as exc:
            raise NotBillable(f"tariff {tariff.name!r} cannot price the period: {exc}") from None
        where = f"bill of account {account.number!r}"
        lines += [line_info(line, tariff.rounding_digits, estimated, where) for line in bill.lines]
    return PricedBill(
        currency=reader.site.currency,
        lines=tuple(lines),
        import_wh=int(load.import_mwh.sum()) // MWH_PER_WH,
        export_wh=0 if load.export_mwh is None else int(load.export_mwh.sum()) // MWH_PER_WH,
        estimated=estimated,
    )


def tariff_segments(
    assignments: Sequence[tuple[date, int]], start: date, end: date
) -> list[tuple[date, date, int]]:
    """`[start, end)` cut where the account's tariff changes: (from, to, tariff id) for each part.
    `assignments`: the account's (effective from, tariff id), by date."""
    rows = [(d, t) for d, t in assignments if d < end]
    in_force = [(d, t) for d, t in rows if d <= start]
    if not in_force:
        later = f" (its first tariff starts {rows[0][0].isoformat()})" if rows else ""
        raise NotBillable(f"no tariff in force on {start.isoformat()}{later}")
    changes = [(in_force[-1][0], in_force[-1][1])] + [(d, t) for d, t in rows if d > start]
    out = []
    for i, (day, tariff_id) in enumerate(changes):
        seg_start = max(day, start)
        seg_end = changes[i + 1][0] if i + 1 < len(changes) else end
        out.append((seg_start, seg_end, tariff_id))
    return out


def load_tariff(session: Session, tariff_id: int) -> Tariff:
    """A stored tariff, compiled from its document."""
    row = session.get(TariffRecord, tariff_id)
    if row is None:  # pragma: no cover - account_tariff's foreign key keeps it
        raise NotFoundError(f"no tariff with id {tariff_id}")
    return parse_tariff(json.loads(row.document), f"tariff {row.code!r}")
