"""The ledger service: open ledger accounts, post and reverse journals, derive balances, check the whole ledger.

Methods take the caller's `Session` first and never commit: the caller's transaction decides, so a bill and its
journal, or a payment and its journal, are written together or not at all. Input is checked by the pure core
(`ledger.double_entry`) before anything is written; bad input raises ValidationError naming the journal, the
posting and the problem. The database checks the same rules again at commit (`ledger.guards`).

Journals are written postings first, journal row last (see `ledger.guards`); the journal's id is therefore chosen
before it is written: from its sequence on PostgreSQL, as the largest id + 1 on SQLite, whose one writer at a
time makes that safe (a concurrent writer fails with "database is locked" and retries, as elsewhere on SQLite).

A billing run writes thousands of journals and opens thousands of receivables: `post_many` and `open_accounts`
do that in a few statements per thousand, through the same paths as `post` and `open_account` (which are the
one-item case), so the rules, locks and answers are the same whichever a caller uses.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import case, func, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from openami.common.clock import Clock
from openami.common.errors import ConflictError, NotFoundError, ValidationError
from openami.ledger.double_entry import (
    CHART_OF_ACCOUNTS,
    MEMO_MAX_LEN,
    REFERENCE_MAX_LEN,
    Qualifier,
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
    NewJournal,
    NewPosting,
    PostingInfo,
    SiteDirectory,
    TrialBalance,
    TrialBalanceLine,
)
from openami.ledger.models import Journal, LedgerAccount, Posting
from openami.storage.numbered import insert_numbered, next_ids

# The first key of the ledger's PostgreSQL advisory locks ("LEDG" in ASCII); the second is a hash of what is
# locked. Two-key locks live apart from the one-key locks of the operation log.
_LOCK_CLASS = 0x4C454447

# The most values one IN list carries: few statements for a billing run, far below any database's parameter limit.
_CHUNK = 1_000

_T = TypeVar("_T")


def _chunks(values: Sequence[_T]) -> Iterator[Sequence[_T]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


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


def _postable_kind(value: Any, where: str) -> JournalKind:
    try:
        kind = JournalKind(value)
    except ValueError:
        known = ", ".join(k.value for k in JournalKind if k is not JournalKind.REVERSAL)
        raise ValidationError(f"{value!r} is not a journal kind (one of: {known})", where) from None
    if kind is JournalKind.REVERSAL:
        raise ValidationError(
            "a reversal is made by LedgerService.reverse, which links it to the journal it undoes", where
        )
    return kind


def _checked_journal(postings: Any, external_reference: Any, memo: Any, where: str) -> NewJournal:
    """One journal's own rules, before its accounts are looked at: reference, memo, postings (`check_postings`)."""
    if external_reference is not None:
        valid_text(external_reference, f"{where}: external_reference", REFERENCE_MAX_LEN)
    valid_text(memo, f"{where}: memo", MEMO_MAX_LEN, allow_empty=True)
    return NewJournal(check_postings(postings, where), external_reference, memo)


def _differences(
    earlier: JournalInfo,
    kind: JournalKind,
    currency: str,
    postings: Sequence[NewPosting],
    reverses_journal_id: int | None,
) -> list[str]:
    """What a journal written under an external reference and a new one under the same reference disagree on."""
    return [
        what
        for what, same in (
            ("kind", earlier.kind is kind),
            ("currency", earlier.currency == currency),
            ("postings", same_postings(_new_postings(earlier), postings)),
            ("reversed journal", earlier.reverses_journal_id == reverses_journal_id),
        )
        if not same
    ]


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
        currency = self._currency(session, site_id, currency)
        if customer_account_id is not None:
            try:
                account = self.directory.get_account(session, customer_account_id)
            except NotFoundError:
                account = None
            if account is None or account.site_id != site_id:
                raise ValidationError(
                    f"no account with id {customer_account_id} in site {site_id}", "customer_account_id"
                )
        return self._open(session, site_id, currency, purpose, {code: (customer_account_id, name)})[code]

    def open_accounts(
        self,
        session: Session,
        *,
        site_id: int,
        purpose: AccountPurpose | str,
        customer_account_ids: Sequence[int],
        currency: str | None = None,
    ) -> dict[int, LedgerAccountInfo]:
        """The site's ledger accounts for `purpose` of every customer account in `customer_account_ids`, by
        customer account id (in the order given), opening those that are not open yet.

        `open_account` for a whole billing run: the same rules and answers, in a few statements per thousand
        accounts. Idempotent; concurrent openings on PostgreSQL take turns per account (the locks `open_account`
        takes) and end with one account each. `purpose` is one kept per customer account (receivable,
        prepayment); `currency` defaults to the site's. Raises ValidationError, before writing anything, for an
        unknown purpose or site, a purpose not kept per customer account, or an id that is not an account of
        the site (naming it).
        """
        purpose = valid_purpose(purpose)
        if CHART_OF_ACCOUNTS[purpose][1] is not Qualifier.CUSTOMER_ACCOUNT:
            raise ValidationError(
                f"a {purpose.value} account is not kept per customer account: open it with open_account",
                "purpose",
            )
        if isinstance(customer_account_ids, str | bytes) or not isinstance(customer_account_ids, Sequence):
            raise ValidationError(
                f"must be a list of customer account ids, got {customer_account_ids!r}",
                "customer_account_ids",
            )
        codes: dict[int, str] = {}
        for index, customer_account_id in enumerate(customer_account_ids):
            try:
                codes[customer_account_id] = account_code(purpose, customer_account_id, None)
            except ValidationError as exc:
                raise ValidationError(exc.message, f"customer_account_ids[{index}]") from None
        currency = self._currency(session, site_id, currency)
        ids = list(codes)
        of_site = self.directory.accounts_in_site(session, site_id, ids)
        for index, customer_account_id in enumerate(customer_account_ids):
            if customer_account_id not in of_site:
                raise ValidationError(
                    f"no account with id {customer_account_id} in site {site_id}",
                    f"customer_account_ids[{index}]",
                )
        opened = self._open(session, site_id, currency, purpose, {codes[i]: (i, None) for i in ids})
        return {i: opened[codes[i]] for i in ids}

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

    def _currency(self, session: Session, site_id: int, currency: str | None) -> str:
        """`currency` checked, or the site's when None; ValidationError for an unknown site."""
        try:
            site = self.directory.get_site(session, site_id)
        except NotFoundError as exc:
            raise ValidationError(f"no site with id {site_id}", "site_id") from exc
        return site.currency if currency is None else valid_currency(currency)

    def _open(
        self,
        session: Session,
        site_id: int,
        currency: str,
        purpose: AccountPurpose,
        wanted: Mapping[str, tuple[int | None, str | None]],
    ) -> dict[str, LedgerAccountInfo]:
        """The site's accounts in `currency` with the codes of `wanted` (each with its customer account id and
        name, both checked), by code, opened where they are not yet: a select, the locks of the codes not found
        (one statement), a second select of those (a concurrent opener may have written them meanwhile), one
        insert of the rest."""
        found = self._accounts_by_code(session, site_id, currency, list(wanted))
        missing = [code for code in wanted if code not in found]
        if missing:
            self._lock(session, [f"account:{site_id}:{currency}:{code}" for code in missing])
            found.update(self._accounts_by_code(session, site_id, currency, missing))
            missing = [code for code in missing if code not in found]
        if not missing:
            return found
        kind = kind_of(purpose)
        opened_at = self.clock.now()
        rows = [
            {
                "site_id": site_id,
                "code": code,
                "purpose": purpose.value,
                "kind": kind.value,
                "currency": currency,
                "customer_account_id": wanted[code][0],
                "name": wanted[code][1],
                "opened_at": opened_at,
            }
            for code in missing
        ]
        what = f"ledger account {missing[0]}" if len(missing) == 1 else f"{len(missing)} ledger accounts"
        with self._conflicts(f"{what} ({currency}) of site {site_id}"):
            new_ids = insert_numbered(session, LedgerAccount, rows)
        for new_id, code in zip(new_ids, missing, strict=True):
            found[code] = LedgerAccountInfo(
                id=new_id,
                site_id=site_id,
                code=code,
                purpose=purpose,
                kind=kind,
                currency=currency,
                customer_account_id=wanted[code][0],
                name=wanted[code][1],
                opened_at=opened_at,
            )
        return found

    @staticmethod
    def _accounts_by_code(
        session: Session, site_id: int, currency: str, codes: Sequence[str]
    ) -> dict[str, LedgerAccountInfo]:
        found: dict[str, LedgerAccountInfo] = {}
        for chunk in _chunks(codes):
            rows = session.scalars(
                select(LedgerAccount).where(
                    LedgerAccount.site_id == site_id,
                    LedgerAccount.currency == currency,
                    LedgerAccount.code.in_(chunk),
                )
            )
            found.update((row.code, _account_info(row)) for row in rows)
        return found

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
        kind = _postable_kind(kind, f"{where}: kind")
        currency = valid_currency(currency, f"{where}: currency")
        occurred_at = _aware(occurred_at, f"{where}: occurred_at")
        journal = _checked_journal(postings, external_reference, memo, where)
        self._check_on_accounts(session, site_id, currency, [(journal, where)])
        [written] = self._write(
            session,
            site_id=site_id,
            kind=kind,
            currency=currency,
            occurred_at=occurred_at,
            journals=[journal],
            reverses_journal_id=None,
        )
        return written

    def post_many(
        self,
        session: Session,
        *,
        site_id: int,
        kind: JournalKind | str,
        currency: str,
        occurred_at: datetime,
        journals: Sequence[NewJournal],
    ) -> list[JournalInfo]:
        """Write `journals`, all of one site, kind, currency and `occurred_at`, as `post` writes each one, in a
        few statements per thousand journals; returns them in the order given.

        Every journal is checked before any is written, with `post`'s rules: ValidationError names the journal
        (by its external reference, else as `journals[i]`) and the posting. An external reference given twice in
        one call is refused too. A journal whose reference was already used in the site is answered with the
        journal written then (ConflictError if it differs, as in `post`); the others are written with increasing
        ids. When anything is refused, nothing is written.
        """
        kind = _postable_kind(kind, "kind")
        currency = valid_currency(currency)
        occurred_at = _aware(occurred_at, "occurred_at")
        if isinstance(journals, str | bytes) or not isinstance(journals, Sequence):
            raise ValidationError(f"must be a list of NewJournal, got {journals!r}", "journals")
        checked: list[tuple[NewJournal, str]] = []
        index_of: dict[str, int] = {}  # each external reference, and the journal that first gave it
        for index, journal in enumerate(journals):
            if not isinstance(journal, NewJournal):
                raise ValidationError(f"expected a NewJournal, got {journal!r}", f"journals[{index}]")
            reference = journal.external_reference
            where = f"journals[{index}]" if reference is None else f"journal {reference!r}"
            new = _checked_journal(journal.postings, reference, journal.memo, where)
            if reference is not None:
                if reference in index_of:
                    raise ValidationError(
                        f"external reference {reference!r} is also that of journals[{index_of[reference]}]: "
                        "one call writes each reference once",
                        f"journals[{index}]: external_reference",
                    )
                index_of[reference] = index
            checked.append((new, where))
        self._check_on_accounts(session, site_id, currency, checked)
        return self._write(
            session,
            site_id=site_id,
            kind=kind,
            currency=currency,
            occurred_at=occurred_at,
            journals=[journal for journal, _ in checked],
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
        self._lock(session, [f"reversal:{journal_id}"])
        earlier = session.scalar(select(Journal.id).where(Journal.reverses_journal_id == journal_id))
        if earlier is not None:
            first = self.get_journal(session, earlier)
            if external_reference is not None and first.external_reference == external_reference:
                return first
            raise ConflictError(f"journal {journal_id} was already reversed by journal {earlier}")
        [written] = self._write(
            session,
            site_id=original.site_id,
            kind=JournalKind.REVERSAL,
            currency=original.currency,
            occurred_at=occurred_at,
            journals=[NewJournal(reversal_of(_new_postings(original)), external_reference, memo)],
            reverses_journal_id=journal_id,
        )
        return written

    def get_journal(self, session: Session, journal_id: int) -> JournalInfo:
        row = session.get(Journal, journal_id)
        if row is None:
            raise NotFoundError(f"no journal with id {journal_id}")
        [journal] = self._with_postings(session, [row])
        return journal

    def journal_by_reference(
        self, session: Session, site_id: int, external_reference: str
    ) -> JournalInfo | None:
        return self._journals_by_reference(session, site_id, [external_reference]).get(external_reference)

    def _check_on_accounts(
        self, session: Session, site_id: int, currency: str, journals: Sequence[tuple[NewJournal, str]]
    ) -> None:
        """Every posting of `journals` (each with the name errors give it) is on an account of the site in
        `currency` (`check_accounts`), from one fetch of all the accounts they name."""
        accounts = self._accounts(session, {p.ledger_account_id for j, _ in journals for p in j.postings})
        for journal, where in journals:
            check_accounts(journal.postings, accounts, site_id, currency, where)

    def _write(
        self,
        session: Session,
        *,
        site_id: int,
        kind: JournalKind,
        currency: str,
        occurred_at: datetime,
        journals: Sequence[NewJournal],
        reverses_journal_id: int | None,
    ) -> list[JournalInfo]:
        """Write checked `journals` (references distinct; a reversal alone, with the journal it reverses) and
        return them in order: a journal whose external reference was used before is the journal written then,
        unless the two differ (ConflictError); the others are written now, postings first, journal rows last."""
        earlier = self._used_references(
            session, site_id, [j.external_reference for j in journals if j.external_reference is not None]
        )
        for journal in journals:
            first = None if journal.external_reference is None else earlier.get(journal.external_reference)
            if first is None:
                continue
            differs = _differences(first, kind, currency, journal.postings, reverses_journal_id)
            if differs:
                raise ConflictError(
                    f"external reference {journal.external_reference!r} was already used in site {site_id} by "
                    f"journal {first.id}, whose {', '.join(differs)} differ"
                )
        new = [j for j in journals if j.external_reference is None or j.external_reference not in earlier]
        written = iter(self._insert(session, site_id, kind, currency, occurred_at, new, reverses_journal_id))
        return [
            earlier[j.external_reference]
            if j.external_reference is not None and j.external_reference in earlier
            else next(written)
            for j in journals
        ]

    def _insert(
        self,
        session: Session,
        site_id: int,
        kind: JournalKind,
        currency: str,
        occurred_at: datetime,
        journals: Sequence[NewJournal],
        reverses_journal_id: int | None,
    ) -> list[JournalInfo]:
        """Insert `journals`: the ids first, then every posting in one executemany, then every journal row."""
        if not journals:
            return []
        journal_ids = next_ids(session, Journal, len(journals))
        recorded_at = self.clock.now()
        if len(journals) == 1:
            what = f"journal {journals[0].external_reference or journal_ids[0]}"
        else:
            what = f"{len(journals)} journals (ids {journal_ids[0]} to {journal_ids[-1]})"
        with self._conflicts(what):
            # The postings first, the journal rows last: the database checks a journal when its row arrives
            # (SQLite) or at commit (PostgreSQL), and refuses postings added to a journal already written.
            posting_ids = insert_numbered(
                session,
                Posting,
                [
                    {
                        "journal_id": journal_id,
                        "ledger_account_id": p.ledger_account_id,
                        "site_id": site_id,
                        "currency": currency,
                        "amount_minor": p.amount_minor,
                    }
                    for journal_id, journal in zip(journal_ids, journals, strict=True)
                    for p in journal.postings
                ],
            )
            session.execute(
                insert(Journal),
                [
                    {
                        "id": journal_id,
                        "site_id": site_id,
                        "currency": currency,
                        "kind": kind.value,
                        "occurred_at": occurred_at,
                        "recorded_at": recorded_at,
                        "external_reference": journal.external_reference,
                        "memo": journal.memo,
                        "reverses_journal_id": reverses_journal_id,
                        "posting_count": len(journal.postings),
                    }
                    for journal_id, journal in zip(journal_ids, journals, strict=True)
                ],
            )
        next_posting_id = iter(posting_ids)
        return [
            JournalInfo(
                id=journal_id,
                site_id=site_id,
                currency=currency,
                kind=kind,
                occurred_at=occurred_at,
                recorded_at=recorded_at,
                external_reference=journal.external_reference,
                memo=journal.memo,
                reverses_journal_id=reverses_journal_id,
                postings=tuple(
                    PostingInfo(next(next_posting_id), p.ledger_account_id, p.amount_minor)
                    for p in journal.postings
                ),
            )
            for journal_id, journal in zip(journal_ids, journals, strict=True)
        ]

    def _used_references(
        self, session: Session, site_id: int, references: Sequence[str]
    ) -> dict[str, JournalInfo]:
        """The journals written under `references` in the site, by reference. The references not used yet are
        locked (one statement) and looked up again, so that a transaction writing one of them concurrently is
        waited for and its journal found."""
        used = self._journals_by_reference(session, site_id, references)
        unused = [r for r in references if r not in used]
        if unused:
            self._lock(session, [f"reference:{site_id}:{r}" for r in unused])
            used.update(self._journals_by_reference(session, site_id, unused))
        return used

    def _journals_by_reference(
        self, session: Session, site_id: int, references: Sequence[str]
    ) -> dict[str, JournalInfo]:
        rows: list[Journal] = []
        for chunk in _chunks(references):
            rows.extend(
                session.scalars(
                    select(Journal).where(Journal.site_id == site_id, Journal.external_reference.in_(chunk))
                )
            )
        return {
            reference: journal
            for journal in self._with_postings(session, rows)
            if (reference := journal.external_reference) is not None
        }

    @staticmethod
    def _with_postings(session: Session, rows: Sequence[Journal]) -> list[JournalInfo]:
        """The journals of `rows`, each with its postings in the order written, read a thousand journals a query."""
        postings: dict[int, list[PostingInfo]] = {row.id: [] for row in rows}
        for chunk in _chunks(list(postings)):
            found = session.execute(
                select(Posting.journal_id, Posting.id, Posting.ledger_account_id, Posting.amount_minor)
                .where(Posting.journal_id.in_(chunk))
                .order_by(Posting.journal_id, Posting.id)
            )
            for journal_id, posting_id, account_id, amount_minor in found:
                postings[journal_id].append(PostingInfo(posting_id, account_id, amount_minor))
        return [_journal_info(row, postings[row.id]) for row in rows]

    def _accounts(self, session: Session, ids: set[int]) -> dict[int, LedgerAccountInfo]:
        found: dict[int, LedgerAccountInfo] = {}
        for chunk in _chunks(sorted(ids)):
            rows = session.scalars(select(LedgerAccount).where(LedgerAccount.id.in_(chunk)))
            found.update((r.id, _account_info(r)) for r in rows)
        return found

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

    @staticmethod
    def refresh_statistics(session: Session) -> None:
        """Bring PostgreSQL's planner statistics of the ledger's tables up to date (ANALYZE), in the caller's
        transaction, which holds ANALYZE's lock (it excludes only other ANALYZE and VACUUM) to its end.

        For a caller about to grow the ledger a lot, such as a billing run of many batches: the commit-time
        guards and the foreign-key checks run plans cached by each connection, and a plan made while a table was
        nearly empty scans it whole; without fresh statistics, committing 500 bills took 0.06 s with 500 bills in
        the ledger and 1.0 s with 10,000 (0.03 s throughout once analysed). Autovacuum would catch up later;
        this makes it now. Nothing to do on SQLite."""
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("ANALYZE ledger_account, journal, posting"))

    # -- helpers -----------------------------------------------------------------------------------------------

    @staticmethod
    def _lock(session: Session, keys: Collection[str]) -> None:
        """Take turns on PostgreSQL with other transactions writing the same `keys` (account codes, external
        references, a reversal), to the end of the transaction: the second then finds what the first wrote. SQLite
        has one writer at a time; the unique constraints back both up.

        All of `keys` are locked in one statement, in the order of their lock numbers, so that two transactions
        locking overlapping sets wait for one another rather than deadlock. Each key holds a slot of PostgreSQL's
        shared lock table to the commit (`max_locks_per_transaction` x `max_connections`, 6,400 by default)."""
        if not keys or session.get_bind().dialect.name != "postgresql":
            return
        numbers = sorted(
            {
                int.from_bytes(
                    hashlib.blake2b(key.encode("utf-8"), digest_size=4).digest(), "big", signed=True
                )
                for key in keys
            }
        )
        # unnest yields the array in order, and the aggregate takes each lock as its row arrives.
        session.execute(
            text(
                "SELECT count(pg_advisory_xact_lock(CAST(:cls AS integer), number)) "
                "FROM unnest(CAST(:numbers AS integer[])) AS locked(number)"
            ),
            {"cls": _LOCK_CLASS, "numbers": numbers},
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
