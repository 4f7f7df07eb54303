"""`openami tokens ...`: OpenPAYGo offline tokens from the command line (a cashier's desk, a field office without
the web app). Mounted on the main app as `tokens`.

`issue` prints the token's digits on stdout (in groups of three, to read out) and what it carries on stderr;
`list` prints the meter's tokens. Each token issued is in the operation log as `cli:<user>`, role `cli`.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from openami.cli.common import DatabaseUrl, cli_actor, err
from openami.cli.common import fail as _fail

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from openami.bootstrap import Container
    from openami.prepayment.tokens import IssuedToken

T = TypeVar("T")

app = typer.Typer(
    help="Offline tokens: issue OpenPAYGo tokens for meters without a live link.", no_args_is_help=True
)
_out = Console()

Meter = Annotated[str, typer.Option("--meter", help="The meter's serial.")]


def _decimal(text: str, option: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise _fail(f"{option}: not a number: {text!r}") from None
    if not value.is_finite():
        raise _fail(f"{option}: not a number: {text!r}")
    return value


def _run(database_url: str | None, work: Callable[[Container, Session], T]) -> T:
    """`work` in one committed transaction; openami and database errors end the command as the others do."""
    from sqlalchemy.exc import SQLAlchemyError

    from openami.bootstrap import bootstrap
    from openami.common.errors import ConfigurationError, OpenAMIError
    from openami.config import Settings
    from openami.storage.db import unit_of_work

    try:
        container = bootstrap(Settings(database_url=database_url) if database_url else Settings())
    except ConfigurationError as exc:
        raise _fail(str(exc), 2) from exc
    try:
        with unit_of_work(container.session_factory) as session:
            return work(container, session)
    except OpenAMIError as exc:
        raise _fail(str(exc)) from exc
    except SQLAlchemyError as exc:
        first = str(exc).splitlines()[0]
        raise _fail(f"cannot use the database: {first} (run `openami db upgrade` first?)", 2) from exc
    finally:
        container.close()


def _credit(token: IssuedToken, currency: str) -> str:
    from openami.prepayment.payments import money
    from openami.prepayment.tokens import CreditKind

    if token.credit_amount is None:
        return "-"
    if token.credit_kind is CreditKind.ENERGY:
        return f"{Decimal(token.credit_amount).scaleb(-3)} kWh"
    return f"{money(token.credit_amount, currency)} {currency}"


@app.command("issue")
def issue(
    meter: Meter,
    kwh: Annotated[
        str | None, typer.Option("--kwh", help="Energy credit in kWh (a meter whose tokens carry energy).")
    ] = None,
    amount: Annotated[
        str | None,
        typer.Option(
            "--amount", help="Money credit in the site's currency, e.g. 50.00 (tokens carrying money)."
        ),
    ] = None,
    payment_reference: Annotated[
        str | None, typer.Option("--payment-reference", help="What paid for the credit (a receipt number).")
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Issue a token adding credit to meter SERIAL and print its digits. The credit must be a whole number of
    the meter's token units (see the site's offline-token settings): nothing is rounded."""
    from openami.billing.charges import minor_units
    from openami.common.errors import ValidationError
    from openami.prepayment.tokens_api import readable
    from openami.tariffs.model import minor_digits

    if (kwh is None) == (amount is None):
        raise _fail("give exactly one of --kwh and --amount")
    energy_wh = None
    if kwh is not None:
        wh = _decimal(kwh, "--kwh").scaleb(3)
        if wh != wh.to_integral_value():
            raise _fail(f"--kwh: {kwh} is not a whole number of Wh")
        energy_wh = int(wh)
    credit = _decimal(amount, "--amount") if amount is not None else None

    def work(container: Container, session: Session) -> tuple[IssuedToken, str]:
        info = container.registry.meter_by_serial(session, meter)
        currency = container.registry.get_site(session, info.site_id).currency
        try:
            amount_minor = None if credit is None else minor_units(credit, minor_digits(currency), "--amount")
            issued = container.tokens.issue_credit(
                session,
                meter_id=info.id,
                actor=cli_actor(),
                role="cli",
                energy_wh=energy_wh,
                amount_minor=amount_minor,
                payment_reference=payment_reference,
            )
        except ValidationError as exc:
            option = {"energy_wh": "--kwh", "amount_minor": "--amount"}.get(exc.location or "", exc.location)
            message = exc.message.replace("energy_wh", "--kwh").replace("amount_minor", "--amount")
            raise ValidationError(message, option) from None
        return issued, currency

    issued, currency = _run(database_url, work)
    err.print(
        f"meter {escape(meter)}: token {issued.count} adds {_credit(issued, currency)}; type it on the meter:",
        soft_wrap=True,
    )
    typer.echo(readable(issued.token))


@app.command("list")
def list_tokens(meter: Meter, database_url: DatabaseUrl = None) -> None:
    """Every token issued for meter SERIAL, in count order: count, kind, credit, when, by whom, the digits."""
    from openami.prepayment.tokens_api import readable

    def work(container: Container, session: Session) -> tuple[list[IssuedToken], str]:
        info = container.registry.meter_by_serial(session, meter)
        currency = container.registry.get_site(session, info.site_id).currency
        return container.tokens.tokens_for_meter(session, info.id), currency

    tokens, currency = _run(database_url, work)
    if not tokens:
        err.print(f"meter {escape(meter)}: no tokens issued")
        return
    for token in tokens:
        reference = f"  paid by {token.payment_reference}" if token.payment_reference else ""
        _out.print(
            escape(
                f"{token.count:>5}  {token.kind.value:<7}  {_credit(token, currency):>14}  "
                f"{token.issued_at.isoformat()}  {readable(token.token)}  {token.issued_by}{reference}"
            ),
            soft_wrap=True,
            highlight=False,
        )
