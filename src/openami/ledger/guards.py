"""The ledger's rules kept by the database itself, so that no code path (nor a raw SQL session) can break them.

`install_guards` (called by migration 0007) makes the database refuse:
- a journal whose postings do not sum to zero, or that has not exactly its `posting_count` (>= 2) postings;
- a posting in another site or currency than its journal (also declared by a composite foreign key);
- a posting added to a journal already written: a journal is written after its postings, and closed by it;
- UPDATE and DELETE on ledger accounts, journals and postings (and TRUNCATE on PostgreSQL).

PostgreSQL checks each journal at commit (DEFERRABLE INITIALLY DEFERRED constraint triggers on both tables).
SQLite has no deferred triggers, so the order of writing carries the rule: the postings first (their foreign key
to the journal is deferred to the commit), then the journal row, whose BEFORE INSERT trigger checks them. A
posting whose journal never comes fails that foreign key at the commit.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

from openami.common.errors import ConflictError
from openami.storage.append_only import install_append_only, remove_append_only

_APPEND_ONLY = {
    "ledger_account": "ledger accounts are append-only",
    "journal": "ledger journals are append-only",
    "posting": "ledger postings are append-only",
}

# PostgreSQL: one function checks a journal at commit, from its own row (a journal with too few postings) and from
# each of its postings (a posting slipped into a journal another transaction wrote). Checking once per posting
# as well as once per journal cost no measurable time at commit (3,000 bills of five postings: 1.4 s either way).
_PG_CHECK_JOURNAL = """
CREATE OR REPLACE FUNCTION ledger_check_journal() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    jid bigint;
    j record;
    found_count bigint;
    total numeric;
    strangers bigint;
BEGIN
    IF TG_TABLE_NAME = 'posting' THEN
        jid := NEW.journal_id;
    ELSE
        jid := NEW.id;
    END IF;
    SELECT posting_count, site_id, currency INTO j FROM journal WHERE id = jid;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'ledger: posting % names journal %, which was never written', NEW.id, jid
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    SELECT count(*), coalesce(sum(amount_minor), 0),
           count(*) FILTER (WHERE site_id <> j.site_id OR currency <> j.currency)
        INTO found_count, total, strangers
        FROM posting WHERE journal_id = jid;
    IF found_count <> j.posting_count THEN
        RAISE EXCEPTION 'ledger: journal % declares % postings but has %', jid, j.posting_count, found_count
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF total <> 0 THEN
        RAISE EXCEPTION 'ledger: unbalanced journal %: its postings sum to % minor units, not 0', jid, total
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF strangers > 0 THEN
        RAISE EXCEPTION 'ledger: journal % has % posting(s) outside its site or currency %', jid, strangers,
            j.currency USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NULL;
END $$
"""

_PG_CLOSED = """
CREATE OR REPLACE FUNCTION ledger_posting_before_journal() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM journal WHERE id = NEW.journal_id) THEN
        RAISE EXCEPTION 'ledger: journal % is closed once written; its postings are written before it',
            NEW.journal_id USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$
"""

_PG_STATEMENTS = (
    _PG_CHECK_JOURNAL,
    _PG_CLOSED,
    "CREATE TRIGGER posting_closed_journal BEFORE INSERT ON posting "
    "FOR EACH ROW EXECUTE FUNCTION ledger_posting_before_journal()",
    "CREATE CONSTRAINT TRIGGER journal_balanced AFTER INSERT ON journal DEFERRABLE INITIALLY DEFERRED "
    "FOR EACH ROW EXECUTE FUNCTION ledger_check_journal()",
    "CREATE CONSTRAINT TRIGGER posting_balanced AFTER INSERT ON posting DEFERRABLE INITIALLY DEFERRED "
    "FOR EACH ROW EXECUTE FUNCTION ledger_check_journal()",
)

_SQLITE_STATEMENTS = (
    "CREATE TRIGGER posting_closed_journal BEFORE INSERT ON posting "
    "WHEN EXISTS (SELECT 1 FROM journal WHERE id = NEW.journal_id) "
    "BEGIN SELECT RAISE(ABORT, 'ledger: a journal is closed once written; its postings are written before it'); END",
    "CREATE TRIGGER journal_balanced BEFORE INSERT ON journal BEGIN "
    "SELECT RAISE(ABORT, 'ledger: a journal must have exactly posting_count postings, all written before it') "
    "WHERE (SELECT count(*) FROM posting WHERE journal_id = NEW.id) <> NEW.posting_count; "
    "SELECT RAISE(ABORT, 'ledger: unbalanced journal: its postings do not sum to zero') "
    "WHERE (SELECT coalesce(sum(amount_minor), 0) FROM posting WHERE journal_id = NEW.id) <> 0; "
    "SELECT RAISE(ABORT, 'ledger: a journal''s postings must be in its site and currency') "
    "WHERE EXISTS (SELECT 1 FROM posting WHERE journal_id = NEW.id "
    "AND (site_id <> NEW.site_id OR currency <> NEW.currency)); "
    "END",
)


def install_guards(connection: Connection) -> None:
    """Install the ledger's triggers on `connection`'s database (PostgreSQL or SQLite)."""
    dialect = connection.dialect.name
    statements: tuple[str, ...]
    if dialect == "postgresql":
        statements = _PG_STATEMENTS
    elif dialect == "sqlite":
        statements = _SQLITE_STATEMENTS
    else:
        raise ConflictError(f"no ledger guards for the {dialect} database")
    for statement in statements:
        connection.execute(text(statement))
    install_append_only(connection, _APPEND_ONLY)


def remove_guards(connection: Connection) -> None:
    """Undo `install_guards` (for migration 0007's downgrade)."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("DROP TRIGGER IF EXISTS posting_balanced ON posting"))
        connection.execute(text("DROP TRIGGER IF EXISTS journal_balanced ON journal"))
        connection.execute(text("DROP TRIGGER IF EXISTS posting_closed_journal ON posting"))
        connection.execute(text("DROP FUNCTION IF EXISTS ledger_check_journal()"))
        connection.execute(text("DROP FUNCTION IF EXISTS ledger_posting_before_journal()"))
    else:
        connection.execute(text("DROP TRIGGER IF EXISTS posting_closed_journal"))
        connection.execute(text("DROP TRIGGER IF EXISTS journal_balanced"))
    remove_append_only(connection, _APPEND_ONLY)
