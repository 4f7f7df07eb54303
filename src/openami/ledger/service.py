"""The ledger service: open ledger accounts, post and reverse journals, derive balances, check the whole ledger.

Methods take the caller's `Session` first and never commit: the caller's transaction decides, so a bill and its
journal, or a payment and its journal, are written together or not at all. Input is checked by the pure core
(`ledger.double_entry`) before anything is written; bad input raises ValidationError naming the journal, the
posting and the problem. The database checks the same rules again at commit (`ledger.guards`).

Journals are written postings first, journal row last (see `ledger.guards`); the journal's id is therefore chosen
before it is written: from its sequence on PostgreSQL, as the largest id + 1 on SQLite, whose one writer at a
time makes that safe (a concurrent writer fails with "database is locked" and retries, as elsewhere on SQLite).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from openami.common.clock import Clock
from openami.common.errors import ConflictError, NotFoundError, ValidationError
from openami.ledger.double_entry import (
    MEMO_MAX_LEN,
    REFERENCE_MAX_LEN,
    account_code,
    check_accounts,
    check_postings,
    kind_of,
    reversal_of,
    same_postings,
    valid_currency,
    valid_purpose,
    valid_text,
)
from openami.ledger.integrity import check_ledger
from openami.ledger.interfaces import (
    AccountKind,
    AccountPurpose,
    JournalInfo,
    JournalKind,
    LedgerAccountInfo,
    LedgerCheckReport,
    NewPosting,
    PostingInfo,
    SiteDirectory,
    TrialBalance,
    TrialBalanceLine,
)
from openami.ledger.models import Journal, LedgerAccount, Posting

# The first key of the ledger's PostgreSQL advisory locks ("LEDG" in ASCII); the second is a hash of what is
# locked. Two-key locks live apart from the one-key locks of the operation log.
_LOCK_CLASS = 0x4C454447


def _account_info(row: LedgerAccount) -> LedgerAccountInfo:
    return LedgerAccountInfo(
        id=row.id,
        site_id=row.site_id,
        code=row.code,
        purpose=AccountPurpose(row.purpose),
        kind=AccountKind(row.kind),
        currency=row.currency,
        customer_account_id=row.customer_account_id,
        name=row.name,
        opened_at=row.opened_at,
    )


def _journal_info(row: Journal, postings: Sequence[PostingInfo]) -> JournalInfo:
    return JournalInfo(
        id=row.id,
        site_id=row.site_id,
        currency=row.currency,
        kind=JournalKind(row.kind),
        occurred_at=row.occurred_at,
        recorded_at=row.recorded_at,
        external_reference=row.external_reference,
        memo=row.memo,
        reverses_journal_id=row.reverses_journal_id,
        postings=tuple(postings),
    )


def _new_postings(journal: JournalInfo) -> list[NewPosting]:
    return [NewPosting(p.ledger_account_id, p.amount_minor) for p in journal.postings]


def _aware(value: Any, where: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(f"must be a timezone-aware datetime, got {value!r}", where)
    return value


class LedgerService:
    """Double-entry journals in integer minor units. Never commits: the caller's transaction decides."""

    def __init__(self, clock: Clock, directory: SiteDirectory) -> None:
        self.clock = clock
        self.directory = directory

    # -- accounts ----------------------------------------------------------------------------------------------

    def open_account(
        self,
        session: Session,
        *,
        site_id: int,
        purpose: AccountPurpose | str,
        customer_account_id: int | None = None,
        name: str | None = None,
        currency: str | None = None,
    ) -> LedgerAccountInfo:
        """The site's ledger account for `purpose` (and its customer account or name), opened if it is not yet.

        Idempotent: opening an account that exists returns it. `currency` defaults to the site's. Raises
        ValidationError for an unknown purpose or site, a missing or superfluous qualifier, or a customer account
        of another site.
        """
        purpose = valid_purpose(purpose)
        code = account_code(purpose, customer_account_id, name)
        try:
            site = self.directory.get_site(session, site_id)
        except NotFoundError as exc:
            raise ValidationError(f"no site with id {site_id}", "site_id") from exc
        currency = site.currency if currency is None else valid_currency(currency)
        if customer_account_id is not None:
            try:
                account = self.directory.get_account(session, customer_account_id)
            except NotFoundError:
                account = None
            if account is None or account.site_id != site_id:
                raise ValidationError(
                    f"no account with id {customer_account_id} in site {site_id}", "customer_account_id"
                )
        found = self._account_by_code(session, site_id, currency, code)
        if found is None:
            self._lock(session, f"account:{site_id}:{currency}:{code}")
            found = self._account_by_code(session, site_id, currency, code)
        if found is not None:
            return _account_info(found)
        row = LedgerAccount(
            site_id=site_id,
            code=code,
            purpose=purpose.value,
            kind=kind_of(purpose).value,
            currency=currency,
            customer_account_id=customer_account_id,
            name=name,
            opened_at=self.clock.now(),
        )
        session.add(row)
        with self._conflicts(f"ledger account {code} ({currency}) of site {site_id}"):
            session.flush()
        return _account_info(row)

    def get_account(self, session: Session, ledger_account_id: int) -> LedgerAccountInfo:
        row = session.get(LedgerAccount, ledger_account_id)
        if row is None:
            raise NotFoundError(f"no ledger account with id {ledger_account_id}")
        return _account_info(row)

    def list_accounts(
        self, session: Session, site_id: int, currency: str | None = None
    ) -> list[LedgerAccountInfo]:
        """The site's ledger accounts (in one currency, when given), by code."""
        stmt = select(LedgerAccount).where(LedgerAccount.site_id == site_id)
        if currency is not None:
            stmt = stmt.where(LedgerAccount.currency == currency)
        rows = session.scalars(stmt.order_by(LedgerAccount.currency, LedgerAccount.code, LedgerAccount.id))
        return [_account_info(r) for r in rows]

    @staticmethod
    def _account_by_code(session: Session, site_id: int, currency: str, code: str) -> LedgerAccount | None:
        return session.scalar(
            select(LedgerAccount).where(
                LedgerAccount.site_id == site_id,
                LedgerAccount.currency == currency,
                LedgerAccount.code == code,
            )
        )

    # -- journals ----------------------------------------------------------------------------------------------

    def post(
        self,
        session: Session,
        *,
        site_id: int,
        kind: JournalKind | str,
        currency: str,
        occurred_at: datetime,
        postings: Sequence[NewPosting | tuple[int, int]],
        external_reference: str | None = None,
        memo: str = "",
    ) -> JournalInfo:
        """Write one journal: `postings` (ledger account id, amount in minor units: debit > 0, credit < 0).

        Everything is checked before anything is written: at least two postings, each a non-zero integer, summing
        to zero, each on an account of the site in `currency`; else ValidationError naming the posting. With an
        `external_reference` already used in the site, the journal written then is returned and nothing is
        written; ConflictError if that journal differs (kind, currency or postings). Reversals are made by
        `reverse`, not here.
        """
        where = "journal" if external_reference is None else f"journal {external_reference!r}"
        try:
            kind = JournalKind(kind)
        except ValueError:
            known = ", ".join(k.value for k in JournalKind if k is not JournalKind.REVERSAL)
            raise ValidationError(
                f"{kind!r} is not a journal kind (one of: {known})", f"{where}: kind"
            ) from None
        if kind is JournalKind.REVERSAL:
            raise ValidationError(
                "a reversal is made by LedgerService.reverse, which links it to the journal it undoes",
                f"{where}: kind",
            )
        currency = valid_currency(currency, f"{where}: currency")
        occurred_at = _aware(occurred_at, f"{where}: occurred_at")
        if external_reference is not None:
            valid_text(external_reference, f"{where}: external_reference", REFERENCE_MAX_LEN)
        valid_text(memo, f"{where}: memo", MEMO_MAX_LEN, allow_empty=True)
        checked = check_postings(postings, where)
        accounts = self._accounts(session, {p.ledger_account_id for p in checked})
        check_accounts(checked, accounts, site_id, currency, where)
        return self._write(
            session,
            site_id=site_id,
            kind=kind,
            currency=currency,
            occurred_at=occurred_at,
            postings=checked,
            external_reference=external_reference,
            memo=memo,
            reverses_journal_id=None,
        )

    def reverse(
        self,
        session: Session,
        journal_id: int,
        *,
        occurred_at: datetime | None = None,
        memo: str | None = None,
        external_reference: str | None = None,
    ) -> JournalInfo:
        """Write the reversal of journal `journal_id`: every posting negated, linked by `reverses_journal_id`.

        `occurred_at` defaults to now. A journal is reversed once: a second reversal raises ConflictError (unless
        it repeats the first one's `external_reference`, which returns the first); so does reversing a reversal
        (post the original again instead). NotFoundError when there is no such journal.
        """
        original = self.get_journal(session, journal_id)
        where = f"reversal of journal {journal_id}"
        if original.reverses_journal_id is not None:
            raise ConflictError(
                f"journal {journal_id} is itself the reversal of journal {original.reverses_journal_id}: "
                "post the original journal again rather than reversing its reversal"
            )
        occurred_at = (
            self.clock.now() if occurred_at is None else _aware(occurred_at, f"{where}: occurred_at")
        )
        memo = f"reversal of journal {journal_id}" if memo is None else memo
        valid_text(memo, f"{where}: memo", MEMO_MAX_LEN, allow_empty=True)
        if external_reference is not None:
            valid_text(external_reference, f"{where}: external_reference", REFERENCE_MAX_LEN)
        self._lock(session, f"reversal:{journal_id}")
        earlier = session.scalar(select(Journal.id).where(Journal.reverses_journal_id == journal_id))
        if earlier is not None:
            first = self.get_journal(session, earlier)
            if external_reference is not None and first.external_reference == external_reference:
                return first
            raise ConflictError(f"journal {journal_id} was already reversed by journal {earlier}")
        return self._write(
            session,
            site_id=original.site_id,
            kind=JournalKind.REVERSAL,
            currency=original.currency,
            occurred_at=occurred_at,
            postings=reversal_of(_new_postings(original)),
            external_reference=external_reference,
            memo=memo,
            reverses_journal_id=journal_id,
        )

    def get_journal(self, session: Session, journal_id: int) -> JournalInfo:
        row = session.get(Journal, journal_id)
        if row is None:
            raise NotFoundError(f"no journal with id {journal_id}")
        postings = session.execute(
            select(Posting.id, Posting.ledger_account_id, Posting.amount_minor)
            .where(Posting.journal_id == journal_id)
            .order_by(Posting.id)
        )
        return _journal_info(row, [PostingInfo(*p) for p in postings])

    def journal_by_reference(
        self, session: Session, site_id: int, external_reference: str
    ) -> JournalInfo | None:
        found = session.scalar(
            select(Journal.id).where(
                Journal.site_id == site_id, Journal.external_reference == external_reference
            )
        )
        return None if found is None else self.get_journal(session, found)

    def _write(
        self,
        session: Session,
        *,
        site_id: int,
        kind: JournalKind,
        currency: str,
        occurred_at: datetime,
        postings: Sequence[NewPosting],
        external_reference: str | None,
        memo: str,
        reverses_journal_id: int | None,
    ) -> JournalInfo:
        if external_reference is not None:
            earlier = self.journal_by_reference(session, site_id, external_reference)
            if earlier is None:
                self._lock(session, f"reference:{site_id}:{external_reference}")
                earlier = self.journal_by_reference(session, site_id, external_reference)
            if earlier is not None:
                differs = [
                    what
                    for what, same in (
                        ("kind", earlier.kind is kind),
                        ("currency", earlier.currency == currency),
                        ("postings", same_postings(_new_postings(earlier), postings)),
                        ("reversed journal", earlier.reverses_journal_id == reverses_journal_id),
                    )
                    if not same
                ]
                if differs:
                    raise ConflictError(
                        f"external reference {external_reference!r} was already used in site {site_id} by journal "
                        f"{earlier.id}, whose {', '.join(differs)} differ"
                    )
                return earlier
        journal_id = self._next_journal_id(session)
        recorded_at = self.clock.now()
        with self._conflicts(f"journal {external_reference or journal_id}"):
            # The postings first, the journal row last: the database checks the journal when that row arrives
            # (SQLite) or at commit (PostgreSQL), and refuses postings added to a journal already written.
            posting_ids = session.scalars(
                insert(Posting).returning(Posting.id, sort_by_parameter_order=True),
                [
                    {
                        "journal_id": journal_id,
                        "ledger_account_id": p.ledger_account_id,
                        "site_id": site_id,
                        "currency": currency,
                        "amount_minor": p.amount_minor,
                    }
                    for p in postings
                ],
            ).all()
            session.execute(
                insert(Journal).values(
                    id=journal_id,
                    site_id=site_id,
                    currency=currency,
                    kind=kind.value,
                    occurred_at=occurred_at,
                    recorded_at=recorded_at,
                    external_reference=external_reference,
                    memo=memo,
                    reverses_journal_id=reverses_journal_id,
                    posting_count=len(postings),
                )
            )
        return JournalInfo(
            id=journal_id,
            site_id=site_id,
            currency=currency,
            kind=kind,
            occurred_at=occurred_at,
            recorded_at=recorded_at,
            external_reference=external_reference,
            memo=memo,
            reverses_journal_id=reverses_journal_id,
            postings=tuple(
                PostingInfo(pid, p.ledger_account_id, p.amount_minor)
                for pid, p in zip(posting_ids, postings, strict=True)
            ),
        )

    @staticmethod
    def _next_journal_id(session: Session) -> int:
        if session.get_bind().dialect.name == "postgresql":
            next_id = session.scalar(text("SELECT nextval(pg_get_serial_sequence('journal', 'id'))"))
        else:
            next_id = session.scalar(select(func.coalesce(func.max(Journal.id), 0) + 1))
        if next_id is None:  # pragma: no cover - both statements always return a row
            raise ConflictError("could not choose the next journal id")
        return int(next_id)

    def _accounts(self, session: Session, ids: set[int]) -> dict[int, LedgerAccountInfo]:
        rows = session.scalars(select(LedgerAccount).where(LedgerAccount.id.in_(sorted(ids))))
        return {r.id: _account_info(r) for r in rows}

    # -- balances ----------------------------------------------------------------------------------------------

    def balance(self, session: Session, ledger_account_id: int, as_of: datetime | None = None) -> int:
        """The account's balance in minor units (debit positive): the sum of its postings, of the journals that
        occurred at or before `as_of` when given. NotFoundError for an unknown account."""
        self.get_account(session, ledger_account_id)
        stmt = select(func.coalesce(func.sum(Posting.amount_minor), 0)).where(
            Posting.ledger_account_id == ledger_account_id
        )
        if as_of is not None:
            stmt = stmt.join(Journal, Journal.id == Posting.journal_id).where(
                Journal.occurred_at <= _aware(as_of, "as_of")
            )
        return int(session.scalar(stmt) or 0)

    def balances(
        self, session: Session, site_id: int, currency: str | None = None, as_of: datetime | None = None
    ) -> dict[int, int]:
        """Every ledger account of the site (in `currency`, when given) and its balance, zero ones included."""
        return {
            line.account.id: line.balance_minor for line in self._lines(session, site_id, currency, as_of)
        }

    def trial_balance(
        self, session: Session, site_id: int, currency: str | None = None, as_of: datetime | None = None
    ) -> TrialBalance:
        """The site's trial balance in `currency` (default: the site's), up to `as_of` when given."""
        if currency is None:
            try:
                currency = self.directory.get_site(session, site_id).currency
            except NotFoundError as exc:
                raise ValidationError(f"no site with id {site_id}", "site_id") from exc
        currency = valid_currency(currency)
        return TrialBalance(site_id, currency, as_of, tuple(self._lines(session, site_id, currency, as_of)))

    def _lines(
        self, session: Session, site_id: int, currency: str | None, as_of: datetime | None
    ) -> list[TrialBalanceLine]:
        postings = select(Posting.ledger_account_id, Posting.amount_minor).where(Posting.site_id == site_id)
        if as_of is not None:
            postings = postings.join(Journal, Journal.id == Posting.journal_id).where(
                Journal.occurred_at <= _aware(as_of, "as_of")
            )
        sub = postings.subquery()
        amount = sub.c.amount_minor
        debit = func.coalesce(func.sum(case((amount > 0, amount), else_=0)), 0)
        credit = func.coalesce(func.sum(case((amount < 0, amount), else_=0)), 0)
        stmt = (
            select(LedgerAccount, debit, credit)
            .outerjoin(sub, sub.c.ledger_account_id == LedgerAccount.id)
            .where(LedgerAccount.site_id == site_id)
            .group_by(LedgerAccount.id)
            .order_by(LedgerAccount.currency, LedgerAccount.code, LedgerAccount.id)
        )
        if currency is not None:
            stmt = stmt.where(LedgerAccount.currency == currency)
        return [TrialBalanceLine(_account_info(row), int(d), int(c)) for row, d, c in session.execute(stmt)]

    # -- checking ----------------------------------------------------------------------------------------------

    def check(self, session: Session) -> LedgerCheckReport:
        """Check the whole stored ledger, every site (`ledger.integrity.check_ledger`)."""
        return check_ledger(session)

    # -- helpers -----------------------------------------------------------------------------------------------

    @staticmethod
    def _lock(session: Session, key: str) -> None:
        """Take turns on PostgreSQL with other transactions writing the same `key` (an account code, an external
        reference, a reversal), to the end of the transaction: the second then finds what the first wrote. SQLite
        has one writer at a time; the unique constraints back both up."""
        if session.get_bind().dialect.name != "postgresql":
            return
        digest = hashlib.blake2b(key.encode("utf-8"), digest_size=4).digest()
        session.execute(
            text("SELECT pg_advisory_xact_lock(CAST(:cls AS integer), CAST(:obj AS integer))"),
            {"cls": _LOCK_CLASS, "obj": int.from_bytes(digest, "big", signed=True)},
        )

    @staticmethod
    @contextmanager
    def _conflicts(what: str) -> Iterator[None]:
        try:
            yield
        except IntegrityError as exc:
            detail = str(exc.orig).splitlines()[0] if exc.orig is not None else str(exc)
            raise ConflictError(
                f"{what} contradicts what is stored ({detail}); roll back and retry the transaction"
            ) from exc
