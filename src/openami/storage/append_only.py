"""Append-only tables: triggers that refuse UPDATE and DELETE (and TRUNCATE on PostgreSQL) whatever the role.

Shared by the operation log (`security.audit`) and the ledger (`ledger.guards`), installed from their migrations.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import Connection, text

from openami.common.errors import ConflictError


def install_append_only(connection: Connection, tables: Mapping[str, str]) -> None:
    """Make each table refuse changes; `tables` maps a table to the message its refusals start with."""
    dialect = connection.dialect.name
    if dialect == "postgresql":
        for table, message in tables.items():
            connection.execute(
                text(
                    f"CREATE OR REPLACE FUNCTION {table}_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
                    f"BEGIN RAISE EXCEPTION '{message}: % refused', TG_OP "
                    "USING ERRCODE = 'insufficient_privilege'; END $$"
                )
            )
            connection.execute(
                text(
                    f"CREATE TRIGGER {table}_no_change BEFORE UPDATE OR DELETE ON {table} "
                    f"FOR EACH ROW EXECUTE FUNCTION {table}_append_only()"
                )
            )
            connection.execute(
                text(
                    f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                    f"FOR EACH STATEMENT EXECUTE FUNCTION {table}_append_only()"
                )
            )
    elif dialect == "sqlite":
        for table, message in tables.items():
            for op in ("UPDATE", "DELETE"):
                connection.execute(
                    text(
                        f"CREATE TRIGGER {table}_no_{op.lower()} BEFORE {op} ON {table} "
                        f"BEGIN SELECT RAISE(ABORT, '{message}: {op} refused'); END"
                    )
                )
    else:
        raise ConflictError(f"no append-only guard for the {dialect} database")


def remove_append_only(connection: Connection, tables: Mapping[str, str]) -> None:
    """Undo `install_append_only` (for a migration's downgrade)."""
    for table in tables:
        if connection.dialect.name == "postgresql":
            connection.execute(text(f"DROP TRIGGER IF EXISTS {table}_no_change ON {table}"))
            connection.execute(text(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}"))
            connection.execute(text(f"DROP FUNCTION IF EXISTS {table}_append_only()"))
        else:
            connection.execute(text(f"DROP TRIGGER IF EXISTS {table}_no_update"))
            connection.execute(text(f"DROP TRIGGER IF EXISTS {table}_no_delete"))
