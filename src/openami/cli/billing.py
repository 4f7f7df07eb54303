"""`openami bill ...`: billing runs from the command line. Mounted on the main app as `bill`."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from sqlalchemy.exc import SQLAlchemyError

from openami.cli.common import DatabaseUrl, cli_actor
from openami.cli.common import fail as _fail
from openami.common.errors import ConfigurationError, NotFoundError, OpenAMIError

app = typer.Typer(help="Billing: bill a site's accounts from their validated readings.", no_args_is_help=True)

_MONTH = re.compile(r"(\d{4})-(\d{2})")
_out = Console()


@app.callback()
def bill() -> None:
    """Billing: bill a site's accounts from their validated readings."""


def _money(minor: int, digits: int) -> str:
    sign = "-" if minor < 0 else ""
    whole, part = divmod(abs(minor), 10**digits)
    return f"{sign}{whole}.{part:0{digits}d}" if digits else f"{sign}{whole}"


@app.command("run")
def run(
    site: Annotated[str, typer.Option("--site", help="The site's code.")],
    month: Annotated[str, typer.Option("--month", help="The month, YYYY-MM.")],
    database_url: DatabaseUrl = None,
) -> None:
    """Bill every account of the site for its cycle that ends in MONTH (a calendar-month account: MONTH itself).

    Prints one line per account: billed (with the bill's total), already billed, or not billed and why. The
    run is committed 500 accounts at a time, each batch with an operation-log entry (`billing.run`, as
    `cli:<user>`); a run broken off is finished by running it again. Exits 0 when the run
    completed (even if some accounts could not be billed), 1 for a bad site or month, 2 when the database or
    configuration cannot be used.
    """
    from openami.billing.interfaces import AccountOutcome, Outcome
    from openami.billing.service import BillingService
    from openami.bootstrap import bootstrap
    from openami.config import Settings
    from openami.ledger.service import LedgerService
    from openami.security.audit import AuditLog
    from openami.storage.db import unit_of_work
    from openami.tariffs.model import minor_digits

    found = _MONTH.fullmatch(month)
    if found is None or not 1 <= int(found[2]) <= 12:
        raise _fail(f"--month: must be YYYY-MM, got {month!r}")
    year, number = int(found[1]), int(found[2])
    try:
        container = bootstrap(Settings(database_url=database_url) if database_url else Settings())
    except ConfigurationError as exc:
        raise _fail(str(exc), 2) from exc
    try:
        ledger = LedgerService(container.clock, container.registry)
        billing = BillingService(container.clock, container.registry, ledger)
        with unit_of_work(container.session_factory) as session:
            try:
                info = container.registry.site_by_code(session, site)
            except NotFoundError as exc:
                raise _fail(f"--site: {exc}") from exc
            audit = AuditLog(container.clock)

            def commit_batch(outcomes: Sequence[AccountOutcome]) -> None:
                # Each batch of bills is committed with its own operation-log entry: see run_billing.
                counts = {o.value: sum(1 for a in outcomes if a.outcome is o) for o in Outcome}
                audit.append(
                    session,
                    actor=cli_actor(),
                    role="cli",
                    action="billing.run",
                    object_type="site",
                    object_id=info.code,
                    after={
                        "month": f"{year:04d}-{number:02d}",
                        "accounts": counts,
                        "bills": [o.bill.id for o in outcomes if o.bill is not None],
                    },
                    site_id=info.id,
                )
                session.commit()

            reports = billing.run_month(session, info.id, year, number, after_batch=commit_batch)
            everyone = [o for r in reports for o in r.accounts]
            counts = {o.value: sum(1 for a in everyone if a.outcome is o) for o in Outcome}
    except typer.Exit:
        raise
    except OpenAMIError as exc:
        raise _fail(str(exc)) from exc
    except SQLAlchemyError as exc:
        first = str(exc).splitlines()[0]
        raise _fail(f"cannot use the database: {first} (run `openami db upgrade` first?)", 2) from exc
    finally:
        container.close()
    digits = minor_digits(info.currency)
    for report in reports:
        for o in report.accounts:
            period = f"{report.period_start.isoformat()} to {report.period_end.isoformat()}"
            if o.bill is not None:
                estimated = (
                    f", {o.bill.intervals_estimated} intervals estimated"
                    if o.bill.intervals_estimated
                    else ""
                )
                text = (
                    f"{o.account_number}: billed {period}: bill {o.bill.id}, "
                    f"{_money(o.bill.total_minor, digits)} {o.bill.currency}{estimated}"
                )
            elif o.outcome is Outcome.ALREADY_BILLED:
                text = f"{o.account_number}: already billed {period} ({o.reason})"
            else:
                text = f"{o.account_number}: not billed {period}: {o.reason}"
            _out.print(escape(text), soft_wrap=True, highlight=False)
    _out.print(
        f"site {escape(info.code)}, {year:04d}-{number:02d}: {counts['billed']} billed, "
        f"{counts['already_billed']} already billed, {counts['not_billed']} not billed",
        soft_wrap=True,
        highlight=False,
    )
