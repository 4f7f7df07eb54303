"""Pricing one account's period for a bill: everything that decides whether it can be billed (no overlapping bill,
meters, complete intervals, a tariff in force every day), then its lines in minor units from the pure core
(`tariffs.pricing.bill_periods`), each tariff for its days. Reads only; writes nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from openami.billing.interfaces import BillLineInfo, BillStatus
from openami.billing.models import AccountTariff, BillRecord, TariffRecord
from openami.billing.usage import (
    MWH_PER_WH,
    MeterUsage,
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


def price_period(
    session: Session,
    site: SiteInfo,
    account: AccountInfo,
    meters: list[MeterInfo],
    start: date,
    end: date,
    tariffs: dict[int, Tariff],
    replacing: int | None = None,
    usages: dict[int, MeterUsage] | None = None,
) -> PricedBill:
    """Everything that decides whether the account can be billed for `[start, end)`, then its lines.
    `usages`: the meters' intervals of the period when the caller read them already (a run reads many at once)."""
    clash = session.scalar(
        select(BillRecord)
        .where(
            BillRecord.account_id == account.id,
            BillRecord.status == BillStatus.ISSUED.value,
            BillRecord.period_start < end,
            BillRecord.period_end > start,
            BillRecord.id != (replacing or 0),
        )
        .order_by(BillRecord.period_start)
    )
    if clash is not None:
        raise NotBillable(
            f"the period overlaps bill {clash.id} ({clash.period_start.isoformat()} to "
            f"{clash.period_end.isoformat()}); correct that bill with rebill instead"
        )
    if not meters:
        raise NotBillable("no meters at the account's service points")
    lo, hi = local_midnight(start, site.timezone), local_midnight(end, site.timezone)
    usages = read_usage(session, meters, lo, hi) if usages is None else {m.id: usages[m.id] for m in meters}
    for usage in usages.values():
        reason = missing_reason(usage, lo, hi)
        if reason is not None:
            raise NotBillable(reason)
    load = to_load(list(usages.values()), account_step_s(list(usages.values())))
    estimated = sum(u.estimated for u in usages.values())
    return price_load(session, site, account, [m.id for m in meters], load, start, end, tariffs, estimated)


def price_load(
    session: Session,
    site: SiteInfo,
    account: AccountInfo,
    meter_ids: list[int],
    load: Load,
    start: date,
    end: date,
    tariffs: dict[int, Tariff],
    estimated: int,
) -> PricedBill:
    """`load` priced for `[start, end)` with the tariffs the account is on, each for its days."""
    segments = tariff_segments(session, account, start, end)
    lines: list[BillLineInfo] = []
    for seg_start, seg_end, tariff_id in segments:
        tariff = tariffs.get(tariff_id)
        if tariff is None:
            tariff = tariffs[tariff_id] = load_tariff(session, tariff_id)
        before = tier_history(session, site, meter_ids, tariff, seg_start)
        try:
            (bill,) = bill_periods(
                tariff,
                load,
                [(seg_start, seg_end)],
                year_to_date_mwh=before.get("year", 0),
                month_to_date_mwh=before.get("month", 0),
            )
        except ValidationError as exc:
            raise NotBillable(f"tariff {tariff.name!r} cannot price the period: {exc}") from None
        where = f"bill of account {account.number!r}"
        lines += [line_info(line, tariff.rounding_digits, estimated, where) for line in bill.lines]
    return PricedBill(
        currency=site.currency,
        lines=tuple(lines),
        import_wh=int(load.import_mwh.sum()) // MWH_PER_WH,
        export_wh=0 if load.export_mwh is None else int(load.export_mwh.sum()) // MWH_PER_WH,
        estimated=estimated,
    )


def tariff_segments(
    session: Session, account: AccountInfo, start: date, end: date
) -> list[tuple[date, date, int]]:
    """`[start, end)` cut where the account's tariff changes: (from, to, tariff id) for each part."""
    rows = session.execute(
        select(AccountTariff.effective_from, AccountTariff.tariff_id)
        .where(AccountTariff.account_id == account.id, AccountTariff.effective_from < end)
        .order_by(AccountTariff.effective_from)
    ).all()
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


def tier_history(
    session: Session, site: SiteInfo, meter_ids: list[int], tariff: Tariff, day: date
) -> dict[str, int]:
    """The consumption before `day` that yearly and monthly tiers count from (1 January, the 1st)."""
    bases = {v.tiers.basis for v in tariff.versions if v.tiers is not None}
    out: dict[str, int] = {}
    if TierBasis.YEARLY in bases:
        out["year"] = imported_mwh(session, site, meter_ids, day.replace(month=1, day=1), day)
    if TierBasis.MONTHLY in bases:
        out["month"] = imported_mwh(session, site, meter_ids, day.replace(day=1), day)
    return out


def imported_mwh(session: Session, site: SiteInfo, meter_ids: list[int], start: date, end: date) -> int:
    """Energy imported (mWh) by the meters in the local days `[start, end)`, as stored."""
    if end <= start:
        return 0
    total = session.scalar(
        select(func.coalesce(func.sum(IntervalReading.energy_wh), 0)).where(
            IntervalReading.meter_id.in_(meter_ids),
            IntervalReading.obis == ACTIVE_IMPORT_INTERVAL,
            IntervalReading.interval_start >= local_midnight(start, site.timezone),
            IntervalReading.interval_start < local_midnight(end, site.timezone),
        )
    )
    return int(total or 0) * MWH_PER_WH


def load_tariff(session: Session, tariff_id: int) -> Tariff:
    """A stored tariff, compiled from its document."""
    row = session.get(TariffRecord, tariff_id)
    if row is None:  # pragma: no cover - account_tariff's foreign key keeps it
        raise NotFoundError(f"no tariff with id {tariff_id}")
    return parse_tariff(json.loads(row.document), f"tariff {row.code!r}")
