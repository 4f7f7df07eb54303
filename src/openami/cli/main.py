"""The `openami` command."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from openami.cli.registry import app as registry_app
from openami.common.errors import ConfigurationError
from openami.config import Settings

app = typer.Typer(
    help="openami: smart electricity metering from the meter reading to the paid bill.", no_args_is_help=True
)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(registry_app, name="registry")

console = Console(stderr=True)

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url", envvar="OPENAMI_DATABASE_URL", help="SQLAlchemy URL (default: SQLite under ./var)"
    ),
]


def _settings(database_url: str | None) -> Settings:
    return Settings(database_url=database_url) if database_url else Settings()


@db_app.command("upgrade")
def db_upgrade(database_url: DatabaseUrl = None, revision: str = "head") -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    from openami.storage import migrate

    settings = _settings(database_url)
    migrate.upgrade(settings.database_url, revision)
    console.print(f"[green]database at {revision}[/green]")


@db_app.command("check")
def db_check(database_url: DatabaseUrl = None) -> None:
    """Exit non-zero when the models and the migrations disagree."""
    from openami.storage import migrate

    settings = _settings(database_url)
    try:
        migrate.check(settings.database_url)
    except ConfigurationError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    console.print("[green]models and migrations agree[/green]")


@db_app.command("revision")
def db_revision(message: str, database_url: DatabaseUrl = None) -> None:
    """(developers) Write a migration from the difference between the models and an up-to-date database."""
    from openami.storage import migrate

    migrate.revision(_settings(database_url).database_url, message)
