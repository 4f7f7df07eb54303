"""A migration run that fails still closes its connection: a leaked one would hold the database open."""

from __future__ import annotations

import time

import psycopg
import pytest
from sqlalchemy.exc import ProgrammingError

from openami.storage import migrate
from tests.conftest import PG_ADMIN_DSN


def _connections_to(database: str) -> int:
    """Server processes connected to `database`, counted from the admin database (not counting itself)."""
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (database,)).fetchone()
    return int(row[0]) if row else 0


def _settled_connections_to(database: str, within_s: float = 5.0) -> int:
    """The count once closed connections have gone: a server process leaves pg_stat_activity shortly after."""
    deadline = time.monotonic() + within_s
    while (count := _connections_to(database)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return count


@pytest.mark.integration
def test_a_failed_migration_leaves_no_connection_open(pg_url: str) -> None:
    database = pg_url.rsplit("/", 1)[1]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE site (id integer PRIMARY KEY)")  # the first migration creates it too
    assert _settled_connections_to(database) == 0

    # The exception info is kept to the end: its traceback holds the migration environment's frames, so an
    # engine left undisposed there would still hold its pooled connection when it is counted.
    with pytest.raises(ProgrammingError, match="already exists") as failure:
        migrate.upgrade(pg_url)

    assert _settled_connections_to(database) == 0, failure.value
