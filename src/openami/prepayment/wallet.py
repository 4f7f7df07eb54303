"""The wallet service: a wallet per prepaid account, charged continuously from its validated readings, and the
credit decisions (warn, cut off, reconnect) that relay control and notifications act on.

Methods take the caller's `Session` first and never commit. The balance is the ledger's: payments credit the
account's `prepayment` ledger account, charges debit it, and `balance_minor` is that account's balance negated.

A charge prices the account's current bill cycle, from its first day up to the instant charged to, with the
account's tariff and billing's pricing core (`billing.charges.PeriodReader` and `price_load`, hence
`tariffs.pricing.bill_periods`), and posts the difference between that cost and what the cycle's earlier
charges posted, per ledger account: revenue per component, tax payable per tax. Once a cycle is charged to its
end, its charges therefore add up, account by account, to the bill billing would issue for the same readings;
readings arriving late in a cycle are charged by the next charge of it. See docs/prepayment.md.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from openami.billing.charges import NotBillable, PeriodReader, price_load
from openami.billing.service import BillingService, add_months, cycle_of
from openami.billing.usage import account_step_s, drop_unfinished, local_midnight, to_load
from openami.common.clock import Clock
from openami.common.errors import ConflictError, NotFoundError, ValidationError
from openami.ledger.interfaces import AccountPurpose, JournalKind, NewJournal, NewPosting
from openami.ledger.service import LedgerService
from openami.prepayment import credit
from openami.prepayment.credit import CreditAction, CreditRules, FriendlyHours
from openami.prepayment.interfaces import (
    ChargeOutcome,
    ChargeResult,
    ChargeRunReport,
    DueAction,
    TopUpResult,
    WalletInfo,
)
from openami.prepayment.models import PrepaidCharge, PrepaidChargeLine, PrepaidCreditRules, PrepaidWallet
from openami.registry.interfaces import AccountInfo, MeterInfo, SiteInfo
from openami.registry.service import RegistryService
from openami.security.audit import AuditLog
from openami.storage.numbered import insert_numbered
from openami.tariffs.model import Component, Tariff

_BATCH = 500  # wallets a site's charge run reads, prices and posts at once
_TICK = timedelta(microseconds=1)
_REVENUE = {
    Component.ENERGY: AccountPurpose.REVENUE_ENERGY,
    Component.DYNAMIC: AccountPurpose.REVENUE_ENERGY,
    Component.FIXED: AccountPurpose.REVENUE_FIXED,
    Component.DEMAND: AccountPurpose.REVENUE_DEMAND,
    Component.MINIMUM: AccountPurpose.REVENUE_MINIMUM,
    Component.EXPORT: AccountPurpose.EXPORT_CREDIT,
}
_Key = tuple[str, str]  # (ledger account purpose, tax name or "")


@dataclass(frozen=True)
class _Span:
    """One bill cycle of a wallet to price: `[price_from, price_to)` local days, intervals read to `read_until`."""

    cycle_start: date
    cycle_end: date
    price_from: date
    price_to: date
    read_until: datetime


def _local_day(instant: datetime, zone: str) -> date:
    return instant.astimezone(ZoneInfo(zone)).date()


def _rules_from_row(row: PrepaidCreditRules | None) -> CreditRules:
    if row is None:
        return CreditRules()
    weekdays = frozenset(int(d) for d in row.friendly_weekdays.split(",") if d)
    return CreditRules(
        low_credit_minor=row.low_credit_minor,
        disconnect_below_minor=row.disconnect_below_minor,
        reconnect_at_minor=row.reconnect_at_minor,
        emergency_credit_minor=row.emergency_credit_minor,
        debt_recovery_bp=row.debt_recovery_bp,
        friendly=FriendlyHours(
            daily_from=None if row.friendly_from is None else time.fromisoformat(row.friendly_from),
            daily_to=None if row.friendly_to is None else time.fromisoformat(row.friendly_to),
            weekdays=weekdays,
            holidays=row.friendly_holidays,
        ),
    )


def _rules_json(rules: CreditRules) -> dict[str, object]:
    friendly = rules.friendly
    return {
        "low_credit_minor": rules.low_credit_minor,
        "disconnect_below_minor": rules.disconnect_below_minor,
        "reconnect_at_minor": rules.reconnect_at_minor,
        "emergency_credit_minor": rules.emergency_credit_minor,
        "debt_recovery_bp": rules.debt_recovery_bp,
        "friendly_from": None if friendly.daily_from is None else friendly.daily_from.strftime("%H:%M"),
        "friendly_to": None if friendly.daily_to is None else friendly.daily_to.strftime("%H:%M"),
        "friendly_weekdays": sorted(friendly.weekdays),
        "friendly_holidays": friendly.holidays,
    }


class WalletService:
    """Prepaid wallets: opened per prepaid account, charged from readings, topped up by payments. Never commits."""

    def __init__(
        self,
        clock: Clock,
        registry: RegistryService,
        ledger: LedgerService,
        billing: BillingService,
        audit: AuditLog | None = None,
    ) -> None:
        self.clock = clock
        self.registry = registry
        self.ledger = ledger
        self.billing = billing
        self.audit = audit if audit is not None else AuditLog(clock)

    # -- wallets and rules ------------------------------------------------------------------------------------

    def open_wallet(
        self, session: Session, account_id: int, *, charge_from: date, actor: str, role: str
    ) -> WalletInfo:
        """Open the wallet of a prepaid account, charging its consumption from local day `charge_from`, with its
        prepayment and receivable ledger accounts. Opening it again with the same day returns it; with another
        day is a ConflictError (charges already posted counted from the first). In the operation log."""
        account = self._account(session, account_id)
        if account.kind != "prepaid":
            raise ValidationError(
                f"account {account.number!r} is {account.kind}: only a prepaid account has a wallet",
                "account_id",
            )
        if not isinstance(charge_from, date) or isinstance(charge_from, datetime):
            raise ValidationError(f"must be a local date, got {charge_from!r}", "charge_from")
        found = session.get(PrepaidWallet, account_id)
        if found is not None:
            if found.charge_from != charge_from:
                raise ConflictError(
                    f"the wallet of account {account.number!r} charges from {found.charge_from.isoformat()}, "
                    f"not {charge_from.isoformat()}"
                )
            return self._info(session, found)
        site = self.registry.get_site(session, account.site_id)
        prepayment = self.ledger.open_account(
            session, site_id=site.id, purpose=AccountPurpose.PREPAYMENT, customer_account_id=account_id
        )
        receivable = self.ledger.open_account(
            session, site_id=site.id, purpose=AccountPurpose.RECEIVABLE, customer_account_id=account_id
        )
        now = self.clock.now()
        row = PrepaidWallet(
            account_id=account_id,
            site_id=site.id,
            ledger_account_id=prepayment.id,
            receivable_ledger_account_id=receivable.id,
            currency=site.currency,
            charge_from=charge_from,
            charged_until=None,
            charges=0,
            emergency_granted_at=None,
            supply_connected=True,
            supply_changed_at=now,
            opened_at=now,
        )
        session.add(row)
        session.flush()
        self.audit.append(
            session, actor=actor, role=role, action="prepayment.wallet_opened", object_type="account",
            object_id=str(account_id), after={"charge_from": charge_from.isoformat()}, site_id=site.id,
        )  # fmt: skip
        return self._info(session, row)

    def get_wallet(self, session: Session, account_id: int) -> WalletInfo:
        return self._info(session, self._wallet(session, account_id))

    def balance_minor(self, session: Session, account_id: int, as_of: datetime | None = None) -> int:
        """The wallet's credit: its prepayment ledger account's balance, negated (a liability is a credit)."""
        return -self.ledger.balance(session, self._wallet(session, account_id).ledger_account_id, as_of)

    def set_credit_rules(
        self, session: Session, site_id: int, rules: CreditRules, *, actor: str, role: str
    ) -> CreditRules:
        """Set the site's credit rules (checked when `rules` was made). In the operation log, before and after."""
        if not isinstance(rules, CreditRules):
            raise ValidationError(f"expected CreditRules, got {rules!r}", "rules")
        site = self._site(session, site_id)
        row = session.get(PrepaidCreditRules, site.id)
        before = None if row is None else _rules_json(_rules_from_row(row))
        if row is None:
            row = PrepaidCreditRules(site_id=site.id)
            session.add(row)
        friendly = rules.friendly
        row.low_credit_minor = rules.low_credit_minor
        row.disconnect_below_minor = rules.disconnect_below_minor
        row.reconnect_at_minor = rules.reconnect_at_minor
        row.emergency_credit_minor = rules.emergency_credit_minor
        row.debt_recovery_bp = rules.debt_recovery_bp
        row.friendly_from = None if friendly.daily_from is None else friendly.daily_from.strftime("%H:%M")
        row.friendly_to = None if friendly.daily_to is None else friendly.daily_to.strftime("%H:%M")
        row.friendly_weekdays = ",".join(str(d) for d in sorted(friendly.weekdays))
        row.friendly_holidays = friendly.holidays
        row.updated_at = self.clock.now()
        session.flush()
        self.audit.append(
            session, actor=actor, role=role, action="prepayment.credit_rules_set", object_type="site",
            object_id=str(site.id), before=before, after=_rules_json(rules), site_id=site.id,
        )  # fmt: skip
        return _rules_from_row(row)

    def credit_rules(self, session: Session, site_id: int) -> CreditRules:
        """The site's credit rules; the defaults of `CreditRules` when none were set."""
        return _rules_from_row(session.get(PrepaidCreditRules, site_id))

    # -- charging ---------------------------------------------------------------------------------------------

    def charge_to(self, session: Session, account_id: int, until: datetime) -> ChargeResult:
        """Charge the wallet's consumption up to `until` (aware, not after the clock's now): each bill cycle from
        the one last charged to the one holding `until` is priced from its first day, and the difference to what
        its charges posted before is posted as one journal (reference `prepaid:{account_id}:{n}`). Charging to
        an instant already charged to, or with no new cost, posts nothing."""
        wallet = self._wallet(session, account_id, lock=True)
        until = self._until(until)
        site = self._site(session, wallet.site_id)
        account = self._account(session, account_id)
        meters = self.registry.meters_for_account(session, site.code, account.number)
        [result] = self._charge(session, site, [(wallet, account)], {account_id: meters}, until, {})
        return result

    def charge_site(
        self,
        session: Session,
        site_id: int,
        until: datetime,
        *,
        after_batch: Callable[[Sequence[ChargeResult]], None] | None = None,
    ) -> ChargeRunReport:
        """`charge_to` for every wallet of the site, 500 at a time: a few queries per batch, not per wallet.
        `after_batch` is called with each batch's results once it is posted: a caller charging thousands of
        wallets commits there (the ledger's advisory locks are held until the commit, see docs/ledger.md)."""
        until = self._until(until)
        site = self._site(session, site_id)
        ids = list(session.scalars(select(PrepaidWallet.account_id).where(PrepaidWallet.site_id == site.id)))
        accounts = {a.id: a for a in self.registry.list_accounts(session, site_id=site.id)}
        meters: dict[int, list[MeterInfo]] = defaultdict(list)
        for meter in self.registry.meter_infos(session, site.id):
            if meter.account_id is not None:
                meters[meter.account_id].append(meter)
        opened: dict[_Key, int] = {}
        results: list[ChargeResult] = []
        for at in range(0, len(ids), _BATCH):
            chunk = sorted(ids[at : at + _BATCH])
            stmt = select(PrepaidWallet).where(PrepaidWallet.account_id.in_(chunk))
            wallets = session.scalars(stmt.order_by(PrepaidWallet.account_id).with_for_update()).all()
            batch = self._charge(
                session, site, [(w, accounts[w.account_id]) for w in wallets], meters, until, opened
            )
            results += batch
            if after_batch is not None:
                after_batch(batch)
        return ChargeRunReport(site.id, until, tuple(results))

    def _charge(
        self,
        session: Session,
        site: SiteInfo,
        wallets: Sequence[tuple[PrepaidWallet, AccountInfo]],
        meters: dict[int, list[MeterInfo]],
        until: datetime,
        opened: dict[_Key, int],
    ) -> list[ChargeResult]:
        """Price and post the charges of some wallets of one site to `until`."""
        spans: dict[int, list[_Span]] = {}
        results: dict[int, ChargeResult] = {}
        for wallet, account in wallets:
            found = self._spans(session, site, wallet, until)
            if not found:
                results[wallet.account_id] = ChargeResult(
                    wallet.account_id, ChargeOutcome.UP_TO_DATE, charged_until=wallet.charged_until
                )
            elif not meters.get(account.id):
                results[wallet.account_id] = ChargeResult(
                    wallet.account_id,
                    ChargeOutcome.NOT_CHARGED,
                    reason="no meters at the account's service points",
                )
            else:
                spans[wallet.account_id] = found
        # Wallets charging the same days share one reader: one set of queries for all of them.
        groups: dict[tuple[date, date, datetime], list[int]] = defaultdict(list)
        for account_id, found in spans.items():
            for span in found:
                groups[span.price_from, span.cycle_end, span.read_until].append(account_id)
        by_id = {w.account_id: (w, a) for w, a in wallets}
        tariffs: dict[int, Tariff] = {}
        targets: dict[tuple[int, date], dict[_Key, int]] = {}
        refused: dict[int, str] = {}
        for (price_from, cycle_end, read_until), members in groups.items():
            reader = PeriodReader(
                session, site, {a: meters[a] for a in members}, price_from, cycle_end, read_until=read_until
            )
            for account_id in members:
                if account_id in refused:
                    continue
                span = next(
                    s
                    for s in spans[account_id]
                    if (s.price_from, s.cycle_end, s.read_until) == (price_from, cycle_end, read_until)
                )
                usages = [reader.usages[m.id] for m in meters[account_id]]
                for usage in usages:
                    drop_unfinished(usage, read_until)
                load = to_load(usages, account_step_s(usages))
                estimated = sum(u.estimated for u in usages)
                try:
                    priced = price_load(
                        reader, by_id[account_id][1], load, price_from, span.price_to, tariffs, estimated
                    )
                except NotBillable as exc:
                    refused[account_id] = exc.reason
                    continue
                target: dict[_Key, int] = defaultdict(int)
                for line in priced.lines:
                    component = Component(line.component)
                    if component is Component.TAX:
                        target[AccountPurpose.TAX_PAYABLE.value, line.description] += line.amount_minor
                    else:
                        target[_REVENUE[component].value, ""] += line.amount_minor
                targets[account_id, span.cycle_start] = target
        for account_id, reason in refused.items():
            results[account_id] = ChargeResult(account_id, ChargeOutcome.NOT_CHARGED, reason=reason)
        to_post = [a for a in spans if a not in refused]
        since = min((spans[a][0].cycle_start for a in to_post), default=date.min)
        charged = self._charged(session, to_post, since)
        return self._post(session, site, wallets, spans, targets, charged, results, until, opened)

    def _post(
        self,
        session: Session,
        site: SiteInfo,
        wallets: Sequence[tuple[PrepaidWallet, AccountInfo]],
        spans: dict[int, list[_Span]],
        targets: dict[tuple[int, date], dict[_Key, int]],
        charged: dict[tuple[int, date], dict[_Key, int]],
        results: dict[int, ChargeResult],
        until: datetime,
        opened: dict[_Key, int],
    ) -> list[ChargeResult]:
        """Post each priced cycle's difference to what was charged, record the charges, move the wallets on."""
        now = self.clock.now()
        pending: dict[datetime, list[tuple[PrepaidWallet, _Span, dict[_Key, int], NewJournal, int]]] = (
            defaultdict(list)
        )
        for wallet, account in wallets:
            if wallet.account_id in results:
                continue
            for span in spans[wallet.account_id]:
                target = targets[wallet.account_id, span.cycle_start]
                before = charged.get((wallet.account_id, span.cycle_start), {})
                diff = {k: target.get(k, 0) - before.get(k, 0) for k in set(target) | set(before)}
                diff = {k: v for k, v in diff.items() if v}
                if not diff:
                    continue
                postings = [
                    NewPosting(self._ledger_account(session, site, key, opened), -v)
                    for key, v in diff.items()
                ]
                total = sum(diff.values())
                if total:
                    postings.append(NewPosting(wallet.ledger_account_id, total))
                wallet.charges += 1
                reference = f"prepaid:{wallet.account_id}:{wallet.charges}"
                memo = (
                    f"prepaid charge of account {account.number}, cycle from {span.cycle_start.isoformat()}, "
                    f"to {span.read_until.isoformat()}"
                )
                journal = NewJournal(tuple(postings), reference, memo[:500])
                pending[span.read_until].append((wallet, span, diff, journal, wallet.charges))
        posted: dict[int, list[tuple[int, int]]] = defaultdict(list)  # account -> (journal id, amount)
        for occurred_at, items in sorted(pending.items()):
            written = self.ledger.post_many(
                session, site_id=site.id, kind=JournalKind.BILL, currency=site.currency, occurred_at=occurred_at,
                journals=[item[3] for item in items],
            )  # fmt: skip
            rows = [
                {
                    "account_id": wallet.account_id,
                    "site_id": site.id,
                    "seq": seq,
                    "cycle_start": span.cycle_start,
                    "charged_from": wallet.charged_until or local_midnight(wallet.charge_from, site.timezone),
                    "charged_until": span.read_until,
                    "amount_minor": sum(diff.values()),
                    "journal_id": info.id,
                    "created_at": now,
                }
                for (wallet, span, diff, _, seq), info in zip(items, written, strict=True)
            ]
            charge_ids = insert_numbered(session, PrepaidCharge, rows)
            session.add_all(
                PrepaidChargeLine(charge_id=charge_id, purpose=key[0], name=key[1], amount_minor=amount)
                for charge_id, (_, _, diff, _, _) in zip(charge_ids, items, strict=True)
                for key, amount in diff.items()
            )
            for (wallet, _, diff, _, _), info in zip(items, written, strict=True):
                posted[wallet.account_id].append((info.id, sum(diff.values())))
        for wallet, _ in wallets:
            if wallet.account_id in results:
                continue
            wallet.charged_until = until
            mine = posted.get(wallet.account_id, [])
            results[wallet.account_id] = ChargeResult(
                wallet.account_id,
                ChargeOutcome.CHARGED if mine else ChargeOutcome.UP_TO_DATE,
                amount_minor=sum(amount for _, amount in mine),
                journal_ids=tuple(journal_id for journal_id, _ in mine),
                charged_until=until,
            )
        session.flush()
        return [results[w.account_id] for w, _ in wallets]

    def _spans(self, session: Session, site: SiteInfo, wallet: PrepaidWallet, until: datetime) -> list[_Span]:
        """The bill cycles to price for charging the wallet to `until`: from the one its last charge was in (late
        readings in it are charged too) to the one holding `until`. None when `until` is already charged."""
        zone = site.timezone
        start_at = local_midnight(wallet.charge_from, zone)
        charged = wallet.charged_until
        if until <= (charged if charged is not None else start_at):
            return []
        first_day = (
            wallet.charge_from
            if charged is None
            else max(wallet.charge_from, _local_day(charged - _TICK, zone))
        )
        last_day = _local_day(until - _TICK, zone)
        cycle_start, cycle_end = cycle_of(first_day, self.billing.cycle_day(session, wallet.account_id))
        out = []
        while cycle_start <= last_day:
            ends_at = local_midnight(cycle_end, zone)
            closed = until >= ends_at
            out.append(
                _Span(
                    cycle_start=cycle_start,
                    cycle_end=cycle_end,
                    price_from=max(cycle_start, wallet.charge_from),
                    price_to=cycle_end if closed else last_day + timedelta(days=1),
                    read_until=ends_at if closed else until,
                )
            )
            cycle_start, cycle_end = cycle_end, add_months(cycle_end, 1)
        return out

    def _charged(
        self, session: Session, account_ids: Sequence[int], since: date
    ) -> dict[tuple[int, date], dict[_Key, int]]:
        """What the wallets' charges posted so far, per bill cycle (those from `since` on) and ledger account."""
        out: dict[tuple[int, date], dict[_Key, int]] = defaultdict(dict)
        for at in range(0, len(account_ids), 1000):
            chunk = account_ids[at : at + 1000]
            stmt = (
                select(
                    PrepaidCharge.account_id,
                    PrepaidCharge.cycle_start,
                    PrepaidChargeLine.purpose,
                    PrepaidChargeLine.name,
                    func.sum(PrepaidChargeLine.amount_minor),
                )
                .join(PrepaidChargeLine, PrepaidChargeLine.charge_id == PrepaidCharge.id)
                .where(PrepaidCharge.account_id.in_(chunk), PrepaidCharge.cycle_start >= since)
                .group_by(
                    PrepaidCharge.account_id,
                    PrepaidCharge.cycle_start,
                    PrepaidChargeLine.purpose,
                    PrepaidChargeLine.name,
                )
            )
            for account_id, cycle_start, purpose, name, amount in session.execute(stmt):
                out[account_id, cycle_start][purpose, name] = int(amount)
        return out

    def _ledger_account(self, session: Session, site: SiteInfo, key: _Key, opened: dict[_Key, int]) -> int:
        if key not in opened:
            purpose, name = key
            opened[key] = self.ledger.open_account(
                session, site_id=site.id, purpose=AccountPurpose(purpose), name=name or None
            ).id
        return opened[key]

    # -- top-ups and supply -----------------------------------------------------------------------------------

    def record_top_up(
        self,
        session: Session,
        account_id: int,
        *,
        amount_minor: int,
        payment_reference: str,
        occurred_at: datetime,
    ) -> TopUpResult:
        """What follows a top-up the payments context has just credited to the wallet (in the same transaction):
        the site's share of it repays the account's debt (a journal moving it from the prepayment to the
        receivable, reference `debt-recovery:{payment_reference}`, so recording the same payment twice recovers
        once), and emergency credit is re-armed when the balance is back at the disconnect threshold."""
        if isinstance(amount_minor, bool) or not isinstance(amount_minor, int) or amount_minor <= 0:
            raise ValidationError(
                f"must be a positive integer of minor units, got {amount_minor!r}", "amount_minor"
            )
        if not isinstance(payment_reference, str) or not 1 <= len(payment_reference) <= 180:
            raise ValidationError(f"must be 1-180 characters, got {payment_reference!r}", "payment_reference")
        if occurred_at.tzinfo is None or occurred_at.utcoffset() is None:
            raise ValidationError(f"must be timezone-aware, got {occurred_at.isoformat()}", "occurred_at")
        wallet = self._wallet(session, account_id, lock=True)
        rules = self.credit_rules(session, wallet.site_id)
        reference = f"debt-recovery:{payment_reference}"
        journal = self.ledger.journal_by_reference(session, wallet.site_id, reference)
        if journal is None:
            debt = self.ledger.balance(session, wallet.receivable_ledger_account_id)
            recovered = credit.debt_recovery_minor(amount_minor, debt, rules.debt_recovery_bp)
            if recovered:
                journal = self.ledger.post(
                    session, site_id=wallet.site_id, kind=JournalKind.ADJUSTMENT, currency=wallet.currency,
                    occurred_at=occurred_at, external_reference=reference,
                    postings=[NewPosting(wallet.ledger_account_id, recovered),
                              NewPosting(wallet.receivable_ledger_account_id, -recovered)],
                    memo=f"debt recovery from top-up {payment_reference}"[:500],
                )  # fmt: skip
        recovered = 0 if journal is None else next(
            p.amount_minor for p in journal.postings if p.ledger_account_id == wallet.ledger_account_id)  # fmt: skip
        balance = -self.ledger.balance(session, wallet.ledger_account_id)
        rearmed = wallet.emergency_granted_at is not None and credit.emergency_rearmed(balance, rules)
        if rearmed:
            wallet.emergency_granted_at = None
            session.flush()
        return TopUpResult(account_id, recovered, None if journal is None else journal.id, balance, rearmed)

    def record_supply(self, session: Session, account_id: int, *, connected: bool, at: datetime) -> None:
        """Record the supply's state as relay control last confirmed it (the meter reported its relay)."""
        if at.tzinfo is None or at.utcoffset() is None:
            raise ValidationError(f"must be timezone-aware, got {at.isoformat()}", "at")
        wallet = self._wallet(session, account_id, lock=True)
        if wallet.supply_connected != connected:
            wallet.supply_connected, wallet.supply_changed_at = connected, at
            session.flush()

    # -- decisions --------------------------------------------------------------------------------------------

    def days_left(self, session: Session, account_id: int, now: datetime) -> Decimal | None:
        """Days the credit lasts at the mean daily cost of the last 7-14 whole local days charged."""
        wallet = self._wallet(session, account_id)
        site = self._site(session, wallet.site_id)
        balance = -self.ledger.balance(session, wallet.ledger_account_id)
        return credit.days_of_credit_left(
            balance, self._daily_costs(session, site, [wallet], now)[account_id]
        )

    def due_actions(self, session: Session, site_id: int, now: datetime) -> list[DueAction]:
        """Every wallet of the site whose credit calls for something at `now`: a low-credit warning, a cut-off
        (outside friendly hours), a reconnection; with the reason, by account id. Emergency credit granted by
        this evaluation is recorded on the wallet. Acts on nothing else: relay control and notifications do."""
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValidationError(f"must be timezone-aware, got {now.isoformat()}", "now")
        site = self._site(session, site_id)
        rules = self.credit_rules(session, site.id)
        local_year = _local_day(now, site.timezone).year
        holidays = credit.public_holidays(
            site.holiday_country, site.holiday_subdivision, [local_year, local_year + 1]
        )
        wallets = session.scalars(
            select(PrepaidWallet).where(PrepaidWallet.site_id == site.id).order_by(PrepaidWallet.account_id)
        ).all()
        balances = self.ledger.balances(session, site.id, site.currency)
        numbers = {a.id: a.number for a in self.registry.list_accounts(session, site_id=site.id)}
        costs = self._daily_costs(session, site, wallets, now)
        out = []
        for wallet in wallets:
            balance = -balances.get(wallet.ledger_account_id, 0)
            decision = credit.decide(
                balance, now, rules, timezone=site.timezone, holiday_dates=holidays,
                connected=wallet.supply_connected, emergency_granted=wallet.emergency_granted_at is not None,
            )  # fmt: skip
            if decision.emergency_granted and wallet.emergency_granted_at is None:
                wallet.emergency_granted_at = now
            if decision.action in (CreditAction.OK, CreditAction.AWAITING_PAYMENT):
                continue
            episode = wallet.supply_changed_at.astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")
            out.append(
                DueAction(
                    account_id=wallet.account_id,
                    account_number=numbers[wallet.account_id],
                    action=decision.action,
                    reason=decision.reason,
                    balance_minor=balance,
                    days_left=credit.days_of_credit_left(balance, costs[wallet.account_id]),
                    friendly_until=decision.friendly_until,
                    request_key=f"prepaid:{decision.action.value}:{wallet.account_id}:{episode}",
                )
            )
        session.flush()
        return out

    def _daily_costs(
        self, session: Session, site: SiteInfo, wallets: Sequence[PrepaidWallet], now: datetime
    ) -> dict[int, list[Decimal]]:
        """Per wallet, what was charged on each of the last (up to 14) whole local days before `now`'s day, oldest
        first, counting only days wholly charged (from `charge_from` to the day before `charged_until`'s): each
        charge is spread over its span in proportion to time."""
        zone = site.timezone
        today = _local_day(now, zone)
        days = [today - timedelta(days=n) for n in range(credit.MAX_HISTORY_DAYS, 0, -1)]
        edges = [local_midnight(d, zone) for d in [*days, today]]
        costs = {w.account_id: [Decimal(0)] * len(days) for w in wallets}
        ids = list(costs)
        for at in range(0, len(ids), 1000):
            rows = session.execute(
                select(
                    PrepaidCharge.account_id,
                    PrepaidCharge.charged_from,
                    PrepaidCharge.charged_until,
                    PrepaidCharge.amount_minor,
                ).where(
                    PrepaidCharge.account_id.in_(ids[at : at + 1000]),
                    PrepaidCharge.charged_until > edges[0],
                    PrepaidCharge.charged_from < edges[-1],
                )
            )
            for account_id, start, end, amount in rows:
                span = (end - start) / _TICK
                if span <= 0:
                    continue
                for n in range(len(days)):
                    overlap = (min(end, edges[n + 1]) - max(start, edges[n])) / _TICK
                    if overlap > 0:
                        costs[account_id][n] += Decimal(amount) * Decimal(overlap) / Decimal(span)
        out: dict[int, list[Decimal]] = {}
        for wallet in wallets:
            # Only whole days charged count: a day not charged yet would pass for a day of no consumption.
            charged = wallet.charged_until
            last = None if charged is None else _local_day(charged, zone)
            out[wallet.account_id] = [
                cost
                for day, cost in zip(days, costs[wallet.account_id], strict=True)
                if last is not None and wallet.charge_from <= day < last
            ]
        return out

    # -- helpers ----------------------------------------------------------------------------------------------

    def _until(self, until: datetime) -> datetime:
        if not isinstance(until, datetime) or until.tzinfo is None or until.utcoffset() is None:
            raise ValidationError(f"must be a timezone-aware instant, got {until!r}", "until")
        until = until.astimezone(UTC)
        now = self.clock.now()
        if until > now:
            raise ValidationError(
                f"{until.isoformat()} is after now ({now.isoformat()}): consumption is charged once measured",
                "until",
            )
        return until

    def _wallet(self, session: Session, account_id: int, *, lock: bool = False) -> PrepaidWallet:
        stmt = select(PrepaidWallet).where(PrepaidWallet.account_id == account_id)
        row = session.scalars(stmt.with_for_update() if lock else stmt).one_or_none()
        if row is None:
            raise NotFoundError(f"account {account_id} has no wallet (open one with open_wallet)")
        return row

    def _info(self, session: Session, row: PrepaidWallet) -> WalletInfo:
        return WalletInfo(
            account_id=row.account_id,
            site_id=row.site_id,
            currency=row.currency,
            ledger_account_id=row.ledger_account_id,
            balance_minor=-self.ledger.balance(session, row.ledger_account_id),
            debt_minor=max(0, self.ledger.balance(session, row.receivable_ledger_account_id)),
            charge_from=row.charge_from,
            charged_until=row.charged_until,
            emergency_granted=row.emergency_granted_at is not None,
            supply_connected=row.supply_connected,
            supply_changed_at=row.supply_changed_at,
        )

    def _site(self, session: Session, site_id: int) -> SiteInfo:
        return self.registry.site_named_by_input(session, site_id)

    def _account(self, session: Session, account_id: int) -> AccountInfo:
        return self.registry.account_named_by_input(session, account_id)
