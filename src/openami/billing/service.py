"""The billing service: tariffs per account, bill cycles, billing runs, corrections, cost so far and projection.

Methods take the caller's `Session` first and never commit: the caller's transaction decides. A billing run
reads each account's intervals (`billing.usage`), prices them with the pure core (`tariffs.pricing
.bill_periods`), then writes the bill, its lines and one ledger journal. Everything that can refuse an account
(no tariff in force, missing intervals, a tariff the pricing cannot apply, an overlapping bill) is found before
anything is written for it, so an account is billed whole or not at all; a database error aborts the caller's
transaction. See docs/billing.md.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import insert, select, text
from sqlalchemy.orm import Session

from openami.billing.charges import NotBillable, PeriodReader, PricedBill, price_load, price_period
from openami.billing.interfaces import (
    AccountOutcome,
    BillInfo,
    BillingRunReport,
    BillLineInfo,
    BillStatus,
    CostEstimate,
    Outcome,
    TariffInfo,
)
from openami.billing.models import AccountTariff, BillCycle, BillLineRecord, BillRecord, TariffRecord
from openami.billing.usage import account_step_s, drop_unfinished, filled_to, local_midnight, to_load
from openami.common.clock import Clock, ensure_aware
from openami.common.errors import ConflictError, NotFoundError, ValidationError
from openami.ledger.interfaces import AccountPurpose, JournalKind, NewJournal, NewPosting
from openami.ledger.service import LedgerService
from openami.registry.interfaces import AccountInfo, MeterInfo, SiteInfo
from openami.registry.models import AccountKind
from openami.registry.service import RegistryService
from openami.storage.numbered import insert_numbered
from openami.tariffs.model import Component, Tariff
from openami.tariffs.native import parse_tariff

_BATCH = 500  # accounts a run reads, prices and writes at once: few statements, bounded memory
_RECEIVABLE = (AccountPurpose.RECEIVABLE, None)
_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}")
_REVENUE = {
    Component.ENERGY: AccountPurpose.REVENUE_ENERGY,
    Component.DYNAMIC: AccountPurpose.REVENUE_ENERGY,
    Component.FIXED: AccountPurpose.REVENUE_FIXED,
    Component.DEMAND: AccountPurpose.REVENUE_DEMAND,
    Component.MINIMUM: AccountPurpose.REVENUE_MINIMUM,
    Component.EXPORT: AccountPurpose.EXPORT_CREDIT,
}


def add_months(day: date, months: int) -> date:
    """The same day `months` later (days up to 28 exist in every month, which is all cycles use)."""
    index = day.year * 12 + day.month - 1 + months
    return day.replace(year=index // 12, month=index % 12 + 1)


def cycle_of(day: date, cycle_day: int) -> tuple[date, date]:
    """The bill cycle `[start, end)` holding local date `day`, for bills from `cycle_day` to `cycle_day`."""
    start = day.replace(day=cycle_day) if day.day >= cycle_day else add_months(day.replace(day=cycle_day), -1)
    return start, add_months(start, 1)


def _jsonable(value: Any) -> Any:
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} has no JSON form")


@dataclass(frozen=True)
class _NewBill:
    """A bill priced and about to be written."""

    account: AccountInfo
    start: date
    end: date
    priced: PricedBill
    reference: str  # the journal's external reference
    replaces: int | None = None


def _bill_info(row: BillRecord, lines: Sequence[BillLineRecord]) -> BillInfo:
    return BillInfo(
        id=row.id,
        account_id=row.account_id,
        site_id=row.site_id,
        period_start=row.period_start,
        period_end=row.period_end,
        currency=row.currency,
        total_minor=row.total_minor,
        import_wh=row.import_wh,
        export_wh=row.export_wh,
        intervals_estimated=row.intervals_estimated,
        status=BillStatus(row.status),
        journal_id=row.journal_id,
        replaces_bill_id=row.replaces_bill_id,
        created_at=row.created_at,
        lines=tuple(
            BillLineInfo(
                ln.component,
                ln.description,
                ln.period,
                ln.tier,
                ln.quantity,
                ln.unit,
                ln.unit_price,
                ln.amount_minor,
            )
            for ln in lines
        ),
    )


class BillingService:
    """Bills accounts from their stored intervals and posts them to the ledger. Never commits."""

    def __init__(self, clock: Clock, registry: RegistryService, ledger: LedgerService) -> None:
        self.clock = clock
        self.registry = registry
        self.ledger = ledger

    # -- tariffs, assignments, cycles ------------------------------------------------------------------------

    def store_tariff(
        self, session: Session, *, site_id: int, code: str, document: Mapping[str, Any] | str
    ) -> TariffInfo:
        """Store a tariff of the site from a native document (as YAML or JSON load it, or JSON text).

        The document is checked whole by `tariffs.native.parse_tariff`, and its currency and time zone must be
        the site's. A stored tariff never changes (bills were priced with it): storing the same code again with
        the same document returns it, with another document is a ConflictError; store new prices under a new
        code, or as a new version of the document under a new code, and assign it from a date.
        """
        if not isinstance(code, str) or not _CODE.fullmatch(code):
            raise ValidationError(
                f"must be 1-40 letters, digits, '.', '_' or '-', starting with a letter or digit, got {code!r}",
                "tariff code",
            )
        where = f"tariff {code!r}"
        site = self._site(session, site_id)
        if isinstance(document, str):
            try:
                document = json.loads(document)
            except json.JSONDecodeError as exc:
                raise ValidationError(f"not valid JSON: {exc}", where) from exc
        try:
            text = json.dumps(document, default=_jsonable, ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise ValidationError(f"the document has no JSON form: {exc}", where) from exc
        tariff = parse_tariff(json.loads(text), where)
        if tariff.currency != site.currency:
            raise ValidationError(
                f"the tariff is in {tariff.currency}, site {site.code!r} bills in {site.currency}",
                f"{where}.currency",
            )
        if tariff.timezone != site.timezone:
            raise ValidationError(
                f"the tariff reads its schedules in {tariff.timezone}, site {site.code!r} is in {site.timezone}",
                f"{where}.timezone",
            )
        found = session.scalar(
            select(TariffRecord).where(TariffRecord.site_id == site_id, TariffRecord.code == code)
        )
        if found is not None:
            if json.loads(found.document) != json.loads(text):
                raise ConflictError(
                    f"site {site.code!r} already has tariff {code!r} with another document; a stored tariff "
                    "never changes: store the new one under a new code and assign it from a date"
                )
        else:
            found = TariffRecord(
                site_id=site_id, code=code, name=tariff.name[:200], document=text, created_at=self.clock.now()
            )
            session.add(found)
            session.flush()
        return TariffInfo(found.id, found.site_id, found.code, found.name, found.created_at)

    def assign_tariff(
        self, session: Session, *, account_id: int, tariff_id: int, effective_from: date
    ) -> None:
        """Put the account on the tariff from local date `effective_from` (until a later assignment).

        The tariff must be of the account's site. Assigning the same tariff on the same date again changes
        nothing; another tariff on a date already assigned is a ConflictError."""
        account = self._account(session, account_id)
        tariff = session.get(TariffRecord, tariff_id)
        if tariff is None or tariff.site_id != account.site_id:
            raise ValidationError(f"no tariff with id {tariff_id} in site {account.site_id}", "tariff_id")
        if not isinstance(effective_from, date) or isinstance(effective_from, datetime):
            raise ValidationError(f"must be a local date, got {effective_from!r}", "effective_from")
        found = session.scalar(
            select(AccountTariff).where(
                AccountTariff.account_id == account_id, AccountTariff.effective_from == effective_from
            )
        )
        if found is not None:
            if found.tariff_id != tariff_id:
                raise ConflictError(
                    f"account {account.number!r} is already on tariff {found.tariff_id} from "
                    f"{effective_from.isoformat()}"
                )
            return
        session.add(
            AccountTariff(
                account_id=account_id,
                tariff_id=tariff_id,
                effective_from=effective_from,
                created_at=self.clock.now(),
            )
        )
        session.flush()

    def set_bill_cycle(self, session: Session, *, account_id: int, cycle_day: int) -> None:
        """Bill the account from `cycle_day` (1-28) of one month to the same day of the next; 1 is the calendar
        month, which is also what an account without a cycle gets."""
        self._account(session, account_id)
        if isinstance(cycle_day, bool) or not isinstance(cycle_day, int) or not 1 <= cycle_day <= 28:
            raise ValidationError(f"must be a day from 1 to 28, got {cycle_day!r}", "cycle_day")
        row = session.get(BillCycle, account_id)
        if row is None:
            session.add(BillCycle(account_id=account_id, cycle_day=cycle_day, set_at=self.clock.now()))
        else:
            row.cycle_day, row.set_at = cycle_day, self.clock.now()
        session.flush()

    def cycle_day(self, session: Session, account_id: int) -> int:
        row = session.get(BillCycle, account_id)
        return 1 if row is None else row.cycle_day

    # -- bills ----------------------------------------------------------------------------------------------

    def get_bill(self, session: Session, bill_id: int) -> BillInfo:
        row = session.get(BillRecord, bill_id)
        if row is None:
            raise NotFoundError(f"no bill with id {bill_id}")
        lines = session.scalars(
            select(BillLineRecord).where(BillLineRecord.bill_id == bill_id).order_by(BillLineRecord.line_no)
        ).all()
        return _bill_info(row, lines)

    def bills_for_account(self, session: Session, account_id: int) -> list[BillInfo]:
        """Every bill of the account, issued and reversed, by period and id."""
        ids = session.scalars(
            select(BillRecord.id)
            .where(BillRecord.account_id == account_id)
            .order_by(BillRecord.period_start, BillRecord.id)
        ).all()
        return [self.get_bill(session, i) for i in ids]

    def run_billing(
        self,
        session: Session,
        site_id: int,
        period_start: date,
        period_end: date,
        *,
        account_ids: Collection[int] | None = None,
        after_batch: Callable[[Sequence[AccountOutcome]], None] | None = None,
    ) -> BillingRunReport:
        """Bill every account of the site for the local days `[period_start, period_end)`.

        An account is billed when a tariff is in force on every day of the period (a change of tariff inside
        it prices each part with its own tariff) and each of its meters has stored every import interval of
        the period (and every export interval, once it reported any). Its bill and lines are stored, and one
        journal is posted with the external reference `bill:{account_id}:{period_start}`. An account that
        already has an issued bill from `period_start` is reported as already billed (running twice bills
        once); one that cannot be billed is reported with the reason, and nothing is written for it.
        Prepaid accounts are not billed (their wallets are charged as readings arrive, `prepayment.wallet`).
        `account_ids` narrows the run to those accounts of the site. ValidationError for a period that is
        empty or not over yet.

        Accounts are taken 500 at a time; `after_batch` is called with each batch's outcomes once its bills are
        written. A caller billing thousands of accounts commits there (with its operation-log entry for the
        batch): one transaction for a whole site of 100,000 accounts would hold one PostgreSQL lock per new
        journal reference and receivable to its end, more than the server's lock table holds. A run broken off
        between batches is finished by running it again (the batches written are already billed).
        """
        site = self._site(session, site_id)
        self._check_period(site, period_start, period_end)
        meters: dict[int, list[MeterInfo]] = defaultdict(list)
        for meter in self.registry.meter_infos(session, site_id):
            if meter.account_id is not None:
                meters[meter.account_id].append(meter)
        chosen = [
            a
            for a in self.registry.list_accounts(session, site_id=site_id)
            if a.kind == AccountKind.POSTPAID.value and (account_ids is None or a.id in account_ids)
        ]
        tariffs: dict[int, Tariff] = {}
        opened: dict[
            tuple[AccountPurpose, str | None], int
        ] = {}  # revenue and tax accounts opened in this run
        outcomes: list[AccountOutcome] = []
        for at in range(0, len(chosen), _BATCH):
            batch = chosen[at : at + _BATCH]
            reader = PeriodReader(
                session, site, {a.id: meters[a.id] for a in batch}, period_start, period_end
            )
            billable: list[tuple[int, _NewBill]] = []  # (place in outcomes, bill)
            for account in batch:
                same = [
                    c
                    for c in reader.clashes.get(account.id, ())
                    if (c.start, c.end) == (period_start, period_end)
                ]
                if same:
                    outcomes.append(
                        AccountOutcome(
                            account.id, account.number, Outcome.ALREADY_BILLED, f"bill {same[0].bill_id}"
                        )
                    )
                    continue
                try:
                    priced = price_period(reader, account, tariffs)
                except NotBillable as refused:
                    outcomes.append(
                        AccountOutcome(account.id, account.number, Outcome.NOT_BILLED, refused.reason)
                    )
                    continue
                reference = f"bill:{account.id}:{period_start.isoformat()}"
                billable.append(
                    (len(outcomes), _NewBill(account, period_start, period_end, priced, reference))
                )
                outcomes.append(AccountOutcome(account.id, account.number, Outcome.BILLED))
            issued = self._issue(session, site, [b for _, b in billable], opened)
            for (place, new), bill in zip(billable, issued, strict=True):
                outcomes[place] = AccountOutcome(
                    new.account.id, new.account.number, Outcome.BILLED, bill=bill
                )
            if at == 0 and len(chosen) > _BATCH and session.get_bind().dialect.name == "postgresql":
                # Many batches to come: the planner must know the tables are growing (LedgerService
                # .refresh_statistics says why); ANALYZE counts this transaction's own new rows.
                self.ledger.refresh_statistics(session)
                session.execute(text("ANALYZE bill, bill_line"))
            if after_batch is not None:
                after_batch(outcomes[at:])
        return BillingRunReport(site_id, period_start, period_end, tuple(outcomes))

    def run_month(
        self,
        session: Session,
        site_id: int,
        year: int,
        month: int,
        *,
        after_batch: Callable[[Sequence[AccountOutcome]], None] | None = None,
    ) -> list[BillingRunReport]:
        """The billing run of a month: every account of the site billed for its cycle whose last day falls in
        the month (a calendar-month account: the month itself; cycle day 15: the 15th of the month before to the
        14th). One report per distinct cycle of the postpaid accounts; a cycle not over yet reports its accounts
        as not billed.
        `after_batch`: as for `run_billing`."""
        if not 1 <= month <= 12 or not 1 <= year <= 9999:
            raise ValidationError(f"no such month {year}-{month:02d}", "month")
        site = self._site(session, site_id)
        numbers = {
            a.id: a.number
            for a in self.registry.list_accounts(session, site_id=site_id)
            if a.kind == AccountKind.POSTPAID.value
        }
        accounts = list(numbers)
        days = dict(
            session.execute(
                select(BillCycle.account_id, BillCycle.cycle_day).where(BillCycle.account_id.in_(accounts))
            ).all()
        )
        groups: dict[int, list[int]] = defaultdict(list)
        for account_id in accounts:
            groups[days.get(account_id, 1)].append(account_id)
        reports = []
        for cycle_day, members in sorted(groups.items()):
            end = add_months(date(year, month, 1), 1 if cycle_day == 1 else 0).replace(day=cycle_day)
            start = add_months(end, -1)
            ends_at = local_midnight(end, site.timezone)
            if ends_at > self.clock.now():
                reason = f"the cycle {start.isoformat()} to {end.isoformat()} is not over until {ends_at.isoformat()}"
                outcomes = tuple(AccountOutcome(a, numbers[a], Outcome.NOT_BILLED, reason) for a in members)
                reports.append(BillingRunReport(site_id, start, end, outcomes))
                continue
            reports.append(
                self.run_billing(
                    session, site_id, start, end, account_ids=set(members), after_batch=after_batch
                )
            )
        return reports

    def rebill(self, session: Session, bill_id: int, reason: str) -> BillInfo:
        """Correct a bill by reversal: reverse its journal, mark it reversed, and bill its period again from the
        readings stored now; the new bill names the one it replaces. All or nothing: when the period cannot be
        billed now (ValidationError with the reason), nothing is reversed. ConflictError for a bill already
        reversed."""
        if not isinstance(reason, str) or not reason.strip() or len(reason) > 500:
            raise ValidationError("must be 1-500 characters saying why", "reason")
        row = session.get(BillRecord, bill_id)
        if row is None:
            raise NotFoundError(f"no bill with id {bill_id}")
        if row.status != BillStatus.ISSUED.value:
            raise ConflictError(f"bill {bill_id} was already reversed ({row.reversal_reason})")
        site = self._site(session, row.site_id)
        account = self._account(session, row.account_id)
        meters = self.registry.meters_for_account(session, site.code, account.number)
        reader = PeriodReader(
            session, site, {account.id: meters}, row.period_start, row.period_end, replacing=row.id
        )
        try:
            priced = price_period(reader, account, {})
        except NotBillable as refused:
            raise ValidationError(refused.reason, f"rebill of bill {bill_id}") from None
        now = self.clock.now()
        if row.journal_id is not None:
            memo = f"rebill of bill {bill_id}: {reason}"[:500]
            reversal = self.ledger.reverse(
                session, row.journal_id, occurred_at=now, memo=memo, external_reference=f"rebill:{bill_id}"
            )
            row.reversal_journal_id = reversal.id
        row.status, row.reversal_reason, row.reversed_at = BillStatus.REVERSED.value, reason, now
        session.flush()
        reference = f"bill:{account.id}:{row.period_start.isoformat()}:replaces:{bill_id}"
        new = _NewBill(account, row.period_start, row.period_end, priced, reference, replaces=bill_id)
        (bill,) = self._issue(session, site, [new], {})
        return bill

    # -- cost so far and projection -------------------------------------------------------------------------

    def cost_so_far(self, session: Session, account_id: int, now: datetime) -> CostEstimate:
        """The account's current bill cycle (the one holding `now`'s local date) priced up to `now`.

        Every stored interval that has ended by `now` counts (missing ones count as nothing); the days are the
        cycle's first to today, so charges per day and per month count the days begun. ValidationError when no
        tariff is in force on a day of it."""
        return self._estimate(session, account_id, now, project=False)

    def projected_bill(self, session: Session, account_id: int, now: datetime) -> CostEstimate:
        """What the current cycle's bill will come to if the account goes on as it has so far.

        How: every interval of the cycle with no stored value (those still to come, and gaps so far) is given
        the mean energy of the account's stored intervals of the cycle at the same local time of day (the mean
        of all of them where that time of day has not been seen yet; nothing at all when none is stored), and
        the whole cycle is priced with its tariff. So energy is scaled by the consumption of the days so far,
        while time-of-use periods, tiers, fixed and minimum charges and taxes come out as on the real bill.
        Demand charges count the highest demand so far (the means are flatter than real days)."""
        return self._estimate(session, account_id, now, project=True)

    def _estimate(self, session: Session, account_id: int, now: datetime, *, project: bool) -> CostEstimate:
        now = ensure_aware(now, "now")
        account = self._account(session, account_id)
        site = self._site(session, account.site_id)
        today = now.astimezone(ZoneInfo(site.timezone)).date()
        start, end = cycle_of(today, self.cycle_day(session, account_id))
        meters = self.registry.meters_for_account(session, site.code, account.number)
        reader = PeriodReader(session, site, {account.id: meters}, start, end, read_until=now)
        usages = [reader.usages[m.id] for m in meters]
        for usage in usages:
            drop_unfinished(usage, now)
        load = to_load(usages, account_step_s(usages))
        last_day = end if project else today + timedelta(days=1)
        if project:
            load = filled_to(
                load,
                int(local_midnight(start, site.timezone).timestamp()),
                int(local_midnight(end, site.timezone).timestamp()),
                site.timezone,
            )
        estimated = sum(u.estimated for u in usages)
        try:
            priced = price_load(reader, account, load, start, last_day, {}, estimated)
        except NotBillable as refused:
            raise ValidationError(refused.reason, f"account {account.number!r}") from None
        return CostEstimate(
            account_id=account_id,
            cycle_start=start,
            cycle_end=end,
            as_of=now,
            currency=priced.currency,
            total_minor=priced.total_minor,
            import_wh=priced.import_wh,
            intervals_measured=sum(len(u.import_start_s) + len(u.export_start_s) for u in usages),
            intervals_estimated=estimated,
            lines=priced.lines,
        )

    # -- writing --------------------------------------------------------------------------------------------

    def _issue(
        self,
        session: Session,
        site: SiteInfo,
        bills: Sequence[_NewBill],
        opened: dict[tuple[AccountPurpose, str | None], int],
    ) -> list[BillInfo]:
        """Post the bills' journals, then store the bills and their lines: a few statements for any number of
        bills. `opened`: the revenue and tax ledger accounts already opened in this transaction (a run opens
        them once, not once a bill)."""
        if not bills:
            return []
        now = self.clock.now()
        sums = [self._sums(b.priced) for b in bills]
        debtors = sorted({b.account.id for b, s in zip(bills, sums, strict=True) if s.get(_RECEIVABLE)})
        receivables = self.ledger.open_accounts(
            session, site_id=site.id, purpose=AccountPurpose.RECEIVABLE, customer_account_ids=debtors
        )
        journals: list[NewJournal] = []
        posted: list[int] = []  # which bills post a journal (a bill of nothing posts nothing)
        for n, (new, amounts) in enumerate(zip(bills, sums, strict=True)):
            postings = []
            for key, amount in amounts.items():
                if not amount:
                    continue
                if key == _RECEIVABLE:
                    ledger_account = receivables[new.account.id].id
                else:
                    if key not in opened:
                        purpose, name = key
                        opened[key] = self.ledger.open_account(
                            session, site_id=site.id, purpose=purpose, name=name
                        ).id
                    ledger_account = opened[key]
                postings.append(NewPosting(ledger_account, amount))
            if postings:
                memo = (
                    f"bill of account {new.account.number}, {new.start.isoformat()} to {new.end.isoformat()}"
                )
                journals.append(NewJournal(tuple(postings), new.reference, memo[:500]))
                posted.append(n)
        journal_ids: list[int | None] = [None] * len(bills)
        written = self.ledger.post_many(
            session, site_id=site.id, kind=JournalKind.BILL, currency=site.currency, occurred_at=now,
            journals=journals,
        )  # fmt: skip
        for n, journal in zip(posted, written, strict=True):
            journal_ids[n] = journal.id
        rows = [
            {
                "account_id": new.account.id,
                "site_id": site.id,
                "period_start": new.start,
                "period_end": new.end,
                "currency": new.priced.currency,
                "total_minor": new.priced.total_minor,
                "import_wh": new.priced.import_wh,
                "export_wh": new.priced.export_wh,
                "intervals_estimated": new.priced.estimated,
                "status": BillStatus.ISSUED.value,
                "journal_id": journal_id,
                "replaces_bill_id": new.replaces,
                "created_at": now,
            }
            for new, journal_id in zip(bills, journal_ids, strict=True)
        ]
        bill_ids = insert_numbered(session, BillRecord, rows)
        lines = [
            {
                "bill_id": bill_id,
                "line_no": n,
                "component": line.component,
                "description": line.description,
                "period": line.period,
                "tier": line.tier,
                "quantity": line.quantity,
                "unit": line.unit,
                "unit_price": line.unit_price,
                "amount_minor": line.amount_minor,
            }
            for bill_id, new in zip(bill_ids, bills, strict=True)
            for n, line in enumerate(new.priced.lines, start=1)
        ]
        if lines:
            session.execute(insert(BillLineRecord).execution_options(render_nulls=True), lines)
        return [
            BillInfo(
                id=bill_id,
                account_id=new.account.id,
                site_id=site.id,
                period_start=new.start,
                period_end=new.end,
                currency=new.priced.currency,
                total_minor=new.priced.total_minor,
                import_wh=new.priced.import_wh,
                export_wh=new.priced.export_wh,
                intervals_estimated=new.priced.estimated,
                status=BillStatus.ISSUED,
                journal_id=journal_id,
                replaces_bill_id=new.replaces,
                created_at=now,
                lines=new.priced.lines,
            )
            for bill_id, new, journal_id in zip(bill_ids, bills, journal_ids, strict=True)
        ]

    @staticmethod
    def _sums(priced: PricedBill) -> dict[tuple[AccountPurpose, str | None], int]:
        """The bill's journal as sums per ledger account: debit the receivable the total; credit revenue per
        component and tax payable per tax (export credit, contra-revenue, is debited). Zero sums stay in; the
        caller leaves them out, so a bill of nothing posts nothing."""
        sums: dict[tuple[AccountPurpose, str | None], int] = defaultdict(int)
        for line in priced.lines:
            component = Component(line.component)
            key = (AccountPurpose.TAX_PAYABLE, line.description) if component is Component.TAX else (
                _REVENUE[component], None)  # fmt: skip
            sums[key] -= line.amount_minor
        sums[_RECEIVABLE] += priced.total_minor
        return sums

    # -- helpers --------------------------------------------------------------------------------------------

    def _site(self, session: Session, site_id: int) -> SiteInfo:
        return self.registry.site_named_by_input(session, site_id)

    def _account(self, session: Session, account_id: int) -> AccountInfo:
        return self.registry.account_named_by_input(session, account_id)

    def _check_period(self, site: SiteInfo, start: date, end: date) -> None:
        for name, value in (("period_start", start), ("period_end", end)):
            if not isinstance(value, date) or isinstance(value, datetime):
                raise ValidationError(f"must be a local date, got {value!r}", name)
        if end <= start:
            raise ValidationError(
                f"the period must end after it starts ({start.isoformat()} to {end.isoformat()})",
                "period_end",
            )
        ends_at = local_midnight(end, site.timezone)
        if ends_at > self.clock.now():
            raise ValidationError(
                f"the period ends at {ends_at.isoformat()} ({end.isoformat()} 00:00 in {site.timezone}), which is "
                "not over yet: bill a period once it is over",
                "period_end",
            )
