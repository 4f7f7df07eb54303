"""`openami registry ...`: the registry from the command line. Mounted on the main app as `registry`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from openami.bootstrap import Container, bootstrap
from openami.cli.common import DatabaseUrl, cli_actor
from openami.common.errors import ConfigurationError, OpenAMIError
from openami.config import Settings
from openami.registry.csv_format import parse_registry_csv
from openami.registry.csv_import import ImportErrors, ImportSummary, import_registry_csv, read_registry_file
from openami.security.audit import AuditLog
from openami.storage.db import unit_of_work

app = typer.Typer(
    help="Sites, customers, accounts, transformers, service points and meters.", no_args_is_help=True
)

# The operation log's object_id holds at most 100 characters; a longer file name is cut to fit.
_MAX_OBJECT_ID = 100


@app.callback()
def registry() -> None:
    """Sites, customers, accounts, transformers, service points and meters."""


def _summary_table(summary: ImportSummary) -> Table:
    table = Table(title="Imported", show_footer=True)
    table.add_column("record", footer="total")
    table.add_column("count", justify="right", footer=str(summary.total))
    for name, count in summary.as_dict().items():
        table.add_row(name.replace("_", " "), str(count))
    return table


def _site_codes(file: Path) -> list[str]:
    """The codes of the sites the file's rows define or belong to."""
    rows = parse_registry_csv(read_registry_file(file)).rows
    codes = {row.key if row.record.name == "site" else row.site for row in rows}
    return sorted(code for code in codes if code)


def _import_and_record(container: Container, file: Path) -> ImportSummary:
    """Import `file` and append its operation-log entry in one database transaction: both are kept, or neither."""
    with container.engine.connect() as connection, connection.begin():
        # Sessions joined to this connection's transaction: the import's commit leaves it open for the log entry,
        # a rollback (an error anywhere) undoes it whole, and leaving the block commits both.
        joined = sessionmaker(bind=connection, expire_on_commit=False, join_transaction_mode="rollback_only")
        summary = import_registry_csv(joined, file, container.clock, container.meter_keys)
        with unit_of_work(joined) as session:
            _record(session, container, file, summary)
    return summary


def _record(session: Session, container: Container, file: Path, summary: ImportSummary) -> None:
    codes = _site_codes(file)
    # An import of one site is that site's (its auditors see it through the API); one spanning several is
    # recorded once, under no site, with their codes.
    site_id = container.registry.site_by_code(session, codes[0]).id if len(codes) == 1 else None
    name = file.name if len(file.name) <= _MAX_OBJECT_ID else file.name[: _MAX_OBJECT_ID - 1] + "…"
    AuditLog(container.clock).append(
        session,
        actor=cli_actor(),
        role="cli",
        action="registry.imported",
        object_type="registry_file",
        object_id=name,
        after={"file": str(file), "site_codes": codes, "records": summary.as_dict()},
        site_id=site_id,
    )


@app.command("import")
def import_file(
    file: Annotated[Path, typer.Argument(help="The registry CSV file (format: docs/registry-import.md).")],
    database_url: DatabaseUrl = None,
) -> None:
    """Import a whole registry tree from FILE, all or nothing; list every error and exit 1 if there is any.

    The import is recorded in the operation log (as `cli:<user>`, with the counts), in the same transaction.
    """
    out, err = Console(), Console(stderr=True)
    try:
        container = bootstrap(Settings(database_url=database_url) if database_url else Settings())
    except ConfigurationError as exc:
        err.print(f"[red]{escape(str(exc))}[/red]", soft_wrap=True)
        raise typer.Exit(2) from exc
    try:
        summary = _import_and_record(container, file)
    except ImportErrors as exc:
        err.print(
            f"[red]{len(exc.errors)} error(s) in {escape(str(file))}; nothing was imported.[/red]",
            soft_wrap=True,
        )
        for e in exc.errors:
            column = f", column {escape(e.column)}" if e.column else ""
            err.print(f"row {e.row}{column}: {escape(e.message)}", soft_wrap=True)
        raise typer.Exit(1) from exc
    except OpenAMIError as exc:
        err.print(f"[red]{escape(str(exc))}[/red]", soft_wrap=True)
        raise typer.Exit(1) from exc
    except SQLAlchemyError as exc:
        first = str(exc).splitlines()[0]
        err.print(
            f"[red]cannot use the database: {escape(first)}; nothing was imported "
            "(run `openami db upgrade` first?)[/red]",
            soft_wrap=True,
        )
        raise typer.Exit(1) from exc
    finally:
        container.close()
    out.print(_summary_table(summary))
