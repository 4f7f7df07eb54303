"""Checking the stored ledger as a whole: what `openami ledger check` runs (through `LedgerService.check`).

The database refuses an unbalanced or altered journal as it is written (`ledger.guards`); this check proves, after
the fact, that nothing got past them (triggers dropped by the database owner, foreign keys switched off on SQLite).
It only reads: one aggregate query per rule, except reversals, whose postings (and their originals') it
compares in memory.
"""

from __future__ import annotations

from sqlalchemy import exists, func, or_, select
from sqlalchemy.orm import Session, aliased

from openami.ledger.double_entry import journal_problem, reversal_problem
from openami.ledger.interfaces import LedgerCheckReport, NewPosting
from openami.ledger.models import Journal, LedgerAccount, Posting


def check_ledger(session: Session) -> LedgerCheckReport:
    """Check the whole ledger, every site: each journal has its declared postings (at least two) summing to
    zero, all in its site and currency and on accounts of that site and currency; each reversal negates its
    journal; no posting lacks its journal; each site's postings in each currency sum to zero.

    The report names the fault of the lowest journal id, or else the first (site, currency) out of balance.
    """
    faults: list[tuple[int, str]] = []
    posting_count = func.count(Posting.id)
    strangers = func.count(Posting.id).filter(
        or_(
            Posting.site_id != Journal.site_id,
            Posting.currency != Journal.currency,
            LedgerAccount.site_id != Posting.site_id,
            LedgerAccount.currency != Posting.currency,
            LedgerAccount.id.is_(None),
        )
    )
    total = func.coalesce(func.sum(Posting.amount_minor), 0)
    bad = session.execute(
        select(Journal.id, Journal.posting_count, posting_count, total, strangers)
        .outerjoin(Posting, Posting.journal_id == Journal.id)
        .outerjoin(LedgerAccount, LedgerAccount.id == Posting.ledger_account_id)
        .group_by(Journal.id, Journal.posting_count)
        .having(or_(posting_count != Journal.posting_count, posting_count < 2, total != 0, strangers > 0))
        .order_by(Journal.id)
        .limit(1)
    ).first()
    if bad is not None:
        jid, declared, found, summed, foreign = bad
        problem = journal_problem(declared, found, int(summed))
        if problem is None:
            problem = f"has {foreign} posting(s) outside its site or currency, or on such an account"
        faults.append((jid, f"journal {jid} {problem}"))
    orphan = session.scalar(
        select(func.min(Posting.journal_id)).where(~exists().where(Journal.id == Posting.journal_id))
    )
    if orphan is not None:
        faults.append((orphan, f"journal {orphan} was never written, yet postings name it"))
    faults.extend(_reversal_faults(session))
    journals = session.scalar(select(func.count()).select_from(Journal)) or 0
    postings = session.scalar(select(func.count()).select_from(Posting)) or 0
    sums = tuple(
        (site_id, currency, int(summed))
        for site_id, currency, summed in session.execute(
            select(Posting.site_id, Posting.currency, func.sum(Posting.amount_minor))
            .group_by(Posting.site_id, Posting.currency)
            .order_by(Posting.site_id, Posting.currency)
        )
    )
    if faults:
        jid, problem = min(faults)
        return LedgerCheckReport(journals, postings, sums, jid, problem)
    for site_id, currency, summed in sums:
        if summed != 0:
            problem = f"site {site_id}: the postings in {currency} sum to {summed} minor units, not 0"
            return LedgerCheckReport(journals, postings, sums, None, problem)
    return LedgerCheckReport(journals, postings, sums)


def _reversal_faults(session: Session) -> list[tuple[int, str]]:
    original = aliased(Journal)
    pairs: dict[int, int] = {}
    for reversal_id, original_id in session.execute(
        select(Journal.id, original.id)
        .join(original, original.id == Journal.reverses_journal_id)
        .order_by(Journal.id)
    ):
        pairs[reversal_id] = original_id
    if not pairs:
        return []
    involved = set(pairs) | set(pairs.values())
    lines: dict[int, list[NewPosting]] = {jid: [] for jid in involved}
    reversals = select(Journal.id).where(Journal.reverses_journal_id.is_not(None))
    originals = select(Journal.reverses_journal_id).where(Journal.reverses_journal_id.is_not(None))
    for jid, account_id, amount in session.execute(
        select(Posting.journal_id, Posting.ledger_account_id, Posting.amount_minor).where(
            Posting.journal_id.in_(reversals.union(originals))
        )
    ):
        lines[jid].append(NewPosting(account_id, amount))
    for reversal_id, original_id in pairs.items():
        problem = reversal_problem(lines[original_id], lines[reversal_id])
        if problem is not None:
            return [(reversal_id, f"journal {reversal_id}, the reversal of journal {original_id}, {problem}")]
    return []
