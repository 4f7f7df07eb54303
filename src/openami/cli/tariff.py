"""`openami tariff`: price a year of a load with a tariff file (native YAML/JSON or OpenEI URDB JSON)."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from openami.common.errors import ValidationError
from openami.tariffs.model import Component, Tariff
from openami.tariffs.native import load_tariff
from openami.tariffs.pricing import Bill, bill_periods, month_spans

app = typer.Typer(help="Tariffs: price a load, check a tariff file.", no_args_is_help=True)
console = Console(stderr=True)


def read_tariff_file(path: Path) -> Tariff:
    """A native tariff file, or an OpenEI URDB record (JSON with `energyratestructure`, or `{"items": [...]}`)."""
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValidationError(f"not readable JSON: {exc}", str(path)) from exc
        if isinstance(data, dict) and ("items" in data or "energyratestructure" in data or "label" in data):
            from openami.tariffs.urdb import parse_urdb

            return parse_urdb(data, str(path))
    return load_tariff(path)


def _number(value: Decimal) -> float | int:
    """A Decimal for JSON: its shortest float prints the same digits for the values bills hold."""
    return int(value) if value == value.to_integral_value() and abs(value) < 2**53 else float(value)


def bill_json(bill: Bill) -> dict[str, Any]:
    return {
        "month": f"{bill.start:%Y-%m}",
        "energy_kwh": _number(bill.import_kwh),
        "export_kwh": _number(bill.export_kwh),
        "energy_charge": _number(bill.total(Component.ENERGY, Component.DYNAMIC)),
        "fixed_charge": _number(bill.total(Component.FIXED)),
        "demand_charge": _number(bill.total(Component.DEMAND)),
        "minimum_charge": _number(bill.total(Component.MINIMUM)),
        "export_credit": _number(bill.total(Component.EXPORT)),
        "taxes": _number(bill.total(Component.TAX)),
        "total": _number(bill.total()),
        "lines": [
            {
                "component": line.component.value,
                "description": line.description,
                "period": line.period,
                "tier": line.tier,
                "quantity": _number(line.quantity),
                "unit": line.unit,
                "unit_price": _number(line.unit_price),
                "amount": _number(line.amount),
            }
            for line in bill.lines
        ],
    }


@app.command("bill")
def bill(
    tariff_file: Annotated[Path, typer.Option("--tariff", help="native YAML/JSON tariff, or URDB JSON")],
    load_file: Annotated[
        Path, typer.Option("--load", help="CSV with a kwh column (and optionally timestamp)")
    ],
    year: Annotated[int, typer.Option("--year", min=1970, max=2200, help="the calendar year to bill")],
    holidays_file: Annotated[
        Path | None, typer.Option("--holidays", help="extra holidays: one YYYY-MM-DD per line")
    ] = None,
    prices_file: Annotated[
        Path | None, typer.Option("--prices", help="dynamic prices: CSV of timestamp,price per kWh")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="print the bills as one JSON object")] = False,
) -> None:
    """Price one year of a load month by month, every charge explained as a bill line."""
    from openami.tariffs.loads import read_load, read_prices

    try:
        tariff = read_tariff_file(tariff_file)
        load = read_load(load_file, year, tariff.timezone)
        if prices_file is not None:
            load = read_prices(prices_file, load)
        extra = _holidays(holidays_file) if holidays_file else frozenset()
        bills = bill_periods(tariff, load, month_spans(year), extra_holidays=extra)
    except ValidationError as exc:
        console.print(f"[red]{escape(str(exc))}[/red]", soft_wrap=True)
        raise typer.Exit(2) from exc
    months = [bill_json(b) for b in bills]
    annual = sum((b.total() for b in bills), Decimal(0))
    if json_output:
        out = {
            "tariff": tariff.name,
            "currency": tariff.currency,
            "year": year,
            "months": months,
            "annual_total": _number(annual),
        }
        typer.echo(json.dumps(out, ensure_ascii=False))
        return
    table = Table(title=f"{tariff.name}: {year} ({tariff.currency})")
    for column in ("month", "kWh", "energy", "fixed", "demand", "minimum", "export", "taxes", "total"):
        table.add_column(column, justify="right")
    for m in months:
        table.add_row(m["month"], f"{m['energy_kwh']:,.1f}", *(f"{m[k]:,.2f}" for k in (
            "energy_charge", "fixed_charge", "demand_charge", "minimum_charge", "export_credit", "taxes", "total")))  # fmt: skip
    table.add_row("year", "", "", "", "", "", "", "", f"{annual:,.2f}")
    Console(width=max(110, Console().width)).print(table)


def _holidays(path: Path) -> frozenset[date]:
    days = set()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ValidationError(f"cannot read the holidays file: {exc.strerror}", str(path)) from exc
    for n, line in enumerate(lines, start=1):
        text = line.split(",")[0].strip()
        if not text or text.startswith("#"):
            continue
        try:
            days.add(date.fromisoformat(text))
        except ValueError:
            raise ValidationError(f"{text!r} is not a date YYYY-MM-DD", f"{path}, line {n}") from None
    return frozenset(days)


@app.command("check")
def check(tariff_file: Annotated[Path, typer.Argument(help="native YAML/JSON tariff, or URDB JSON")]) -> None:
    """Read and check a tariff file; print what it holds, or the first error and where it is."""
    try:
        tariff = read_tariff_file(tariff_file)
    except ValidationError as exc:
        console.print(f"[red]{escape(str(exc))}[/red]", soft_wrap=True)
        raise typer.Exit(2) from exc
    out = Console(width=max(100, Console().width))
    out.print(f"[bold]{escape(tariff.name)}[/bold] ({tariff.currency}, {tariff.timezone}): valid")
    if tariff.holidays:
        out.print(f"  holidays: {tariff.holidays.country} {tariff.holidays.subdivision or ''}".rstrip())
    for version in tariff.versions:
        since = version.effective_from.isoformat() if version.effective_from else "the start"
        tiers = (
            f", {version.tiers.count} tiers ({version.tiers.basis}, {version.tiers.allocation})"
            if version.tiers
            else ""
        )
        out.print(
            f"  from {since}: {len(version.seasons)} season(s), {len(version.periods)} period(s){tiers}"
        )
        for key, prices in sorted(version.energy_prices.items()):
            out.print(f"    {key}: {' / '.join(str(p) for p in prices)} {tariff.currency}/kWh")
