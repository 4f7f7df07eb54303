"""The `openami` command."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console

from openami.bootstrap import Container
from openami.cli.audit import app as audit_app
from openami.cli.billing import app as billing_app
from openami.cli.common import DatabaseUrl, cli_actor, err
from openami.cli.common import fail as _fail
from openami.cli.ledger import app as ledger_app
from openami.cli.registry import app as registry_app
from openami.cli.tariff import app as tariff_app
from openami.cli.theft import app as theft_app
from openami.cli.tokens import app as tokens_app
from openami.cli.users import app as users_app
from openami.common.errors import ConfigurationError
from openami.config import Settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

T = TypeVar("T")

app = typer.Typer(
    help="openami: smart electricity metering from the meter reading to the paid bill.", no_args_is_help=True
)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(registry_app, name="registry")
app.add_typer(users_app, name="users")
app.add_typer(tariff_app, name="tariff")
app.add_typer(theft_app, name="theft")
app.add_typer(ledger_app, name="ledger")
app.add_typer(billing_app, name="bill")
app.add_typer(tokens_app, name="tokens")
app.add_typer(
    audit_app, name="audit", help="The operation log: verify its hash chain, sign and export checkpoints."
)

console = err  # messages on stderr, as every command's


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
    from openami.cli.demo import print_people, print_summary, run_demo, summary_json

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
        wide = Console(width=max(100, Console().width))
        print_summary(summary, wide)
        print_people(summary, wide)
        console.print(f"log of every rejection and command: {LOG_HINT}")
    if serve:
        _serve(container)
    container.close()


@app.command("serve")
def serve(database_url: DatabaseUrl = None) -> None:
    """Serve the API (and its OpenAPI description at /docs)."""
    from openami.bootstrap import bootstrap

    try:
        container = bootstrap(_settings(database_url))
    except ConfigurationError as exc:
        raise _fail(str(exc), 2) from exc
    _serve(container)


def _serve(container: Container) -> None:
    import uvicorn
    from sqlalchemy import func, select
    from sqlalchemy.exc import SQLAlchemyError

    from openami.api.app import create_app
    from openami.security.models import AppUser

    try:
        with container.session_factory() as session:
            people = session.scalar(select(func.count()).select_from(AppUser)) or 0
    except SQLAlchemyError as exc:
        first = str(exc).splitlines()[0]
        raise _fail(f"cannot use the database: {first} (run `openami db upgrade` first?)") from exc
    if not people:
        # openami ships no default password: nobody can sign in until an admin is made.
        console.print(
            "[yellow]nobody can sign in yet: make the first admin with "
            "`openami users create-admin --site CODE --username NAME`[/yellow]"
        )
    settings = container.settings
    console.print(f"serving the API on http://{settings.api_host}:{settings.api_port}/docs (Ctrl-C to stop)")
    uvicorn.run(create_app(container), host=settings.api_host, port=settings.api_port, log_level="warning")


@app.command(
    "worker",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def worker(ctx: typer.Context) -> None:
    """Run an MQTT head-end worker (options: `openami worker --help`); `openami worker jobs` runs the outbox
    consumers and relay dispatch instead (options: `openami worker jobs --help`)."""
    if ctx.args[:1] == ["jobs"]:
        from openami.cli.worker import main as jobs_main

        raise typer.Exit(jobs_main(ctx.args[1:]))
    from openami.headend.worker import main as worker_main

    raise typer.Exit(worker_main(ctx.args))


# --- keys: the master key and the meters' frame-authentication keys --------------------------------------------

keys_app = typer.Typer(
    help="Meter keys: the master key that seals them at rest, rotation, re-sealing.", no_args_is_help=True
)
app.add_typer(keys_app, name="keys")

# Default grace period of `keys rotate`: time to load the new key into the meter in the field.
DEFAULT_GRACE_HOURS = 72


@contextmanager
def _logs_on_stderr() -> Iterator[None]:
    """Logs to stderr for the command's length, so that stdout carries only what the command prints (a key)."""
    import sys

    import structlog

    saved = structlog.get_config()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    try:
        yield
    finally:
        structlog.configure(**saved)


def _keys_container(database_url: str | None) -> Container:
    from openami.bootstrap import bootstrap

    try:
        return bootstrap(_settings(database_url))
    except ConfigurationError as exc:
        raise _fail(str(exc), 2) from exc


def _in_transaction(container: Container, work: Callable[[Session], T]) -> T:
    """`work` in one transaction of `container`'s database; openami and database errors end the command."""
    from sqlalchemy.exc import SQLAlchemyError

    from openami.common.errors import OpenAMIError
    from openami.storage.db import unit_of_work

    try:
        with unit_of_work(container.session_factory) as session:
            return work(session)
    except OpenAMIError as exc:
        raise _fail(str(exc)) from exc
    except SQLAlchemyError as exc:
        first = str(exc).splitlines()[0]
        raise _fail(f"cannot use the database: {first} (run `openami db upgrade` first?)") from exc
    finally:
        container.close()


@keys_app.command("generate")
def keys_generate(
    key_id: Annotated[
        str | None, typer.Option("--id", help="the new key's id (default: k<date>-<random>)")
    ] = None,
) -> None:
    """Print a new master key entry `id:base64` once. Put it first in OPENAMI_MASTER_KEYS, then run `keys rewrap`."""
    from openami.common.clock import SystemClock
    from openami.common.errors import ValidationError
    from openami.security.meter_keys import generate_master_key, new_master_key_id

    try:
        key = generate_master_key(key_id if key_id is not None else new_master_key_id(SystemClock().now()))
    except ValidationError as exc:
        raise _fail(f"--id: {exc.message}", 2) from exc
    typer.echo(key.entry())
    console.print(
        "Shown once. Keep it in a secret store apart from the database backups: losing it loses every meter "
        "key. Newest first: OPENAMI_MASTER_KEYS='<this>,<older ones>', then `openami keys rewrap`.",
        soft_wrap=True,
    )


@keys_app.command("rotate")
def keys_rotate(
    serial: Annotated[str, typer.Argument(help="the meter's serial")],
    grace_hours: Annotated[
        int,
        typer.Option(
            "--grace-hours", help="hours the current key stays accepted (0: refused at once; at most 2160)"
        ),
    ] = DEFAULT_GRACE_HOURS,
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            help="provision this key (64 hex digits; '-' reads it from stdin) instead of a random one",
        ),
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Give meter SERIAL a new key (stored sealed) and print it once, in hex, to load into the meter.

    Frames signed with the current key are still accepted for --grace-hours, then refused.
    """
    import sys
    from datetime import timedelta

    from openami.registry.interfaces import MeterInfo
    from openami.registry.validation import MAX_KEY_GRACE
    from openami.security.audit import AuditLog
    from openami.security.meter_keys import new_meter_key

    max_hours = int(MAX_KEY_GRACE.total_seconds() // 3600)
    if not 0 <= grace_hours <= max_hours:
        raise _fail(f"--grace-hours: must be between 0 and {max_hours}, got {grace_hours}", 2)
    given = key is not None
    new_key: bytes | str = new_meter_key() if key is None else key
    if key == "-":
        new_key = sys.stdin.readline().strip()
    with _logs_on_stderr():
        container = _keys_container(database_url)

        def rotate(session: Session) -> MeterInfo:
            info = container.registry.rotate_meter_key(session, serial, new_key, timedelta(hours=grace_hours))
            until = info.previous_key_until
            AuditLog(container.clock).append(
                session,
                actor=cli_actor(),
                role="cli",
                action="meter_key.rotate",
                object_type="meter",
                object_id=serial,
                after={
                    "previous_key_until": until.isoformat() if until else None,
                    "key": "provided" if given else "generated",
                    "master_key_id": container.meter_keys.newest_key_id,
                },
                site_id=info.site_id,
            )
            return info

        info = _in_transaction(container, rotate)
    until = info.previous_key_until
    kept = (
        f"the previous key is accepted until {until.isoformat()}" if until else "the previous key is refused"
    )
    console.print(f"meter {serial}: new key stored sealed; {kept}.", soft_wrap=True)
    if not given:
        console.print("The new key (shown once; load it into the meter):")
        typer.echo(info.auth_key.hex())


def _reseal_command(database_url: str | None, *, rewrap: bool) -> tuple[int, str]:
    from openami.security.audit import AuditLog

    with _logs_on_stderr():
        container = _keys_container(database_url)
        newest = container.meter_keys.newest_key_id

        def reseal(session: Session) -> int:
            registry = container.registry
            count = registry.rewrap_keys(session) if rewrap else registry.seal_legacy_keys(session)
            if count:
                AuditLog(container.clock).append(
                    session,
                    actor=cli_actor(),
                    role="cli",
                    action="meter_key.rewrap" if rewrap else "meter_key.seal_legacy",
                    object_type="meter_keys",
                    object_id="all",
                    after={"meters": count, "master_key_id": newest},
                )
            return count

        return _in_transaction(container, reseal), newest


@keys_app.command("seal-legacy")
def keys_seal_legacy(database_url: DatabaseUrl = None) -> None:
    """Seal every meter key still stored in plaintext (from before migration 0004) and say how many."""
    count, newest = _reseal_command(database_url, rewrap=False)
    typer.echo(f"{count} legacy plaintext meter key(s) sealed under master key {newest}")


@keys_app.command("rewrap")
def keys_rewrap(database_url: DatabaseUrl = None) -> None:
    """Re-seal every meter key under the newest master key (and drop retired previous keys); say how many."""
    count, newest = _reseal_command(database_url, rewrap=True)
    typer.echo(f"{count} meter(s) re-sealed under master key {newest}; older master keys now open nothing")
