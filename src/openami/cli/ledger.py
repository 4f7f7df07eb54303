"""`openami ledger ...`: prove the ledger balances. Mounted on the main app as `ledger`."""

from __future__ import annotations

import typer
from rich.console import Console
from sqlalchemy.exc import SQLAlchemyError

from openami.cli.common import DatabaseUrl
from openami.cli.common import fail as _fail
from openami.common.errors import ConfigurationError, OpenAMIError

app = typer.Typer(help="The ledger: prove that every journal and every site balances.", no_args_is_help=True)

_out = Console()


@app.callback()
def ledger() -> None:
    """The ledger: prove that every journal and every site balances."""


@app.command("check")
def check(database_url: DatabaseUrl = None) -> None:
    """Prove that every journal balances and each site's trial balance is zero, in every currency.

    Exits 1 naming the first journal (lowest id) that does not balance, lacks postings, mixes sites or
    currencies, or does not negate the journal it reverses; 2 when the database cannot be used.
    """
    from sqlalchemy.orm import Session

    from openami.bootstrap import bootstrap
    from openami.config import Settings
    from openami.ledger.service import LedgerService

    try:
        container = bootstrap(Settings(database_url=database_url) if database_url else Settings())
    except ConfigurationError as exc:
        raise _fail(str(exc), 2) from exc
    try:
        engine = container.engine
        if engine.dialect.name == "postgresql":
            # One snapshot for every query of the check, while other transactions keep writing.
            engine = engine.execution_options(isolation_level="REPEATABLE READ")
        with Session(bind=engine) as session:
            report = LedgerService(container.clock, container.registry).check(session)
    except OpenAMIError as exc:
        raise _fail(str(exc)) from exc
    except SQLAlchemyError as exc:
        first = str(exc).splitlines()[0]
        raise _fail(
            f"cannot use the ledger's database: {first} (run `openami db upgrade` first?)", 2
        ) from exc
    finally:
        container.close()
    if not report.ok:
        raise _fail(f"ledger out of balance: {report.problem}")
    pairs = len(report.trial_balances)
    _out.print(
        f"{report.journals} journals, {report.postings} postings: every journal balances; "
        f"the trial balance is zero in {pairs} site-currency pair(s)",
        soft_wrap=True,
    )
