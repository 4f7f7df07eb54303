"""`openami registry ...`: the registry from the command line. Mounted on the main app as `registry`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from openami.bootstrap import bootstrap
from openami.common.errors import OpenAMIError
from openami.config import Settings
from openami.registry.csv_import import ImportErrors, ImportSummary, import_registry_csv

app = typer.Typer(
    help="Sites, customers, accounts, transformers, service points and meters.", no_args_is_help=True
)

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url", envvar="OPENAMI_DATABASE_URL", help="SQLAlchemy URL (default: SQLite under ./var)"
    ),
]


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


@app.command("import")
def import_file(
    file: Annotated[Path, typer.Argument(help="The registry CSV file (format: docs/registry-import.md).")],
    database_url: DatabaseUrl = None,
) -> None:
    """Import a whole registry tree from FILE, all or nothing; list every error and exit 1 if there is any."""
    out, err = Console(), Console(stderr=True)
    container = bootstrap(Settings(database_url=database_url) if database_url else Settings())
    try:
        summary = import_registry_csv(container.session_factory, file, container.clock)
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
    finally:
        container.close()
    out.print(_summary_table(summary))
