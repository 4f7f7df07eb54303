"""The `openami` command."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from openami.bootstrap import Container
from openami.cli.audit import app as audit_app
from openami.cli.registry import app as registry_app
from openami.common.errors import ConfigurationError
from openami.config import Settings

app = typer.Typer(
    help="openami: smart electricity metering from the meter reading to the paid bill.", no_args_is_help=True
)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(registry_app, name="registry")
app.add_typer(
    audit_app, name="audit", help="The operation log: verify its hash chain, sign and export checkpoints."
)

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


@app.command("demo")
def demo(
    meters: Annotated[int, typer.Option(help="customer meters in the demo site")] = 500,
    days: Annotated[int, typer.Option(help="days to simulate")] = 30,
    seed: Annotated[int, typer.Option(help="randomness of households and faults")] = 1,
    serve: Annotated[bool, typer.Option("--serve/--no-serve", help="serve the API afterwards")] = True,
    json_output: Annotated[bool, typer.Option("--json", help="print the summary as one JSON object")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Simulate a site with faults on the embedded default, print what the platform saw, then serve the API."""
    from openami.cli.demo import LOG_FILE as LOG_HINT
    from openami.cli.demo import print_summary, run_demo, summary_json

    try:
        summary, container = run_demo(
            meters=meters,
            days=days,
            seed=seed,
            database_url=database_url,
            console=console,
            show_progress=not json_output,
        )
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    if json_output:
        typer.echo(summary_json(summary))
    else:
        print_summary(summary, Console(width=max(100, Console().width)))
        console.print(f"log of every rejection and command: {LOG_HINT}")
    if serve:
        _serve(container)
    container.close()


@app.command("serve")
def serve(database_url: DatabaseUrl = None) -> None:
    """Serve the API (and its OpenAPI description at /docs)."""
    from openami.bootstrap import bootstrap

    _serve(bootstrap(_settings(database_url)))


def _serve(container: Container) -> None:
    import uvicorn

    from openami.api.app import create_app

    settings = container.settings
    console.print(f"serving the API on http://{settings.api_host}:{settings.api_port}/docs (Ctrl-C to stop)")
    uvicorn.run(create_app(container), host=settings.api_host, port=settings.api_port, log_level="warning")


@app.command(
    "worker",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def worker(ctx: typer.Context) -> None:
    """Run an MQTT head-end worker (options: `openami worker --help`)."""
    from openami.headend.worker import main as worker_main

    raise typer.Exit(worker_main(ctx.args))
