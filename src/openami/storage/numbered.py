"""Inserting many rows at once and learning their ids, in as few statements on SQLite as on PostgreSQL.

PostgreSQL numbers rows from the table's sequence and hands the ids back in the order of the rows (RETURNING with
`sort_by_parameter_order`, which SQLAlchemy sends in pages of a thousand rows). SQLite would do that only row by
row, one statement each; there the ids are chosen first, the ones after the largest, which its one writer at a
time (and tables whose rows are never deleted) makes safe, and written with the rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, insert, select, text
from sqlalchemy.orm import Session


def next_ids(session: Session, model: Any, count: int) -> list[int]:
    """`count` ids for new rows of `model` (a mapped class with an integer `id`), increasing."""
    if count <= 0:
        return []
    if session.get_bind().dialect.name == "postgresql":
        taken = session.scalars(
            text("SELECT nextval(pg_get_serial_sequence(:table, 'id')) FROM generate_series(1, :count)"),
            {"table": model.__tablename__, "count": count},
        )
        return sorted(int(i) for i in taken)
    largest = int(session.scalar(select(func.coalesce(func.max(model.id), 0))) or 0)
    return list(range(largest + 1, largest + 1 + count))


def insert_numbered(session: Session, model: Any, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Insert `rows` of `model` (every row with the same keys) and return their new ids, in the order of `rows`.
    NULLs are written as such, so rows with and without a value for a column still go in one statement."""
    if not rows:
        return []
    statement = insert(model).execution_options(render_nulls=True)
    if session.get_bind().dialect.name == "postgresql":
        returned = session.scalars(statement.returning(model.id, sort_by_parameter_order=True), rows)
        return list(returned.all())
    ids = next_ids(session, model, len(rows))
    session.execute(statement, [{**row, "id": new_id} for new_id, row in zip(ids, rows, strict=True)])
    return ids
