"""`openami theft score`: rank every meter in a readings file by how suspicious it looks (docs/theft-score.md)."""

from __future__ import annotations

import csv
from datetime import datetime
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.markup import escape

from openami.cli.common import err, fail
from openami.common.errors import ValidationError

app = typer.Typer(help="Revenue protection: rank meters for inspection.", no_args_is_help=True)


@app.command("score")
def score(
    readings: Annotated[
        Path, typer.Option("--readings", help="CSV meter_id,timestamp,energy_wh[,transformer_id]")
    ],
    out: Annotated[Path, typer.Option("--out", help="where to write meter_id,score,reasons")],
    transformers: Annotated[
        Path | None, typer.Option("--transformers", help="CSV transformer_id,timestamp,energy_wh")
    ] = None,
    mapping: Annotated[Path | None, typer.Option("--mapping", help="CSV meter_id,transformer_id")] = None,
    events: Annotated[Path | None, typer.Option("--events", help="CSV meter_id,start,end,code")] = None,
) -> None:
    """Score every meter in --readings (higher = more suspicious) and write them, most suspicious first."""
    try:
        written, summary = run_score(readings, out, transformers=transformers, mapping=mapping, events=events)
    except ValidationError as exc:
        raise fail(str(exc), 2) from exc
    err.print(f"{written} meters scored ({escape(summary)}); written to {escape(str(out))}", soft_wrap=True)


def run_score(
    readings_path: Path,
    out: Path,
    *,
    transformers: Path | None = None,
    mapping: Path | None = None,
    events: Path | None = None,
) -> tuple[int, str]:
    """Read the files, score, write `out`; the number of meters and a one-line summary. Warnings go to stderr."""
    from openami.protection.readers import read_events, read_mapping, read_readings, read_transformers
    from openami.protection.scoring import score_meters

    warnings: list[str] = []
    loaded = read_readings(readings_path)
    grid = loaded.grid
    warnings += loaded.warnings
    transformer_of = dict(loaded.transformer_of)
    if mapping is not None:
        mapped, notes = read_mapping(mapping, grid.ids)
        warnings += notes
        clash = sorted(m for m, tx in mapped.items() if transformer_of.get(m, tx) != tx)
        if clash:
            raise ValidationError(
                f"the mapping puts meter(s) {', '.join(clash[:5])} under another transformer than the "
                f"transformer_id column of {readings_path} does",
                str(mapping),
            )
        transformer_of.update(mapped)

    meter_tx = np.full(len(grid.ids), -1, dtype=np.int64)
    transformer_ids: tuple[str, ...] = ()
    transformer_daily = None
    if transformers is not None:
        if not transformer_of:
            raise ValidationError(
                "--transformers needs --mapping or a transformer_id column in the readings to know which "
                "meters each transformer feeds",
                str(transformers),
            )
        tx_grid, notes = read_transformers(transformers, grid.first_day, grid.days)
        warnings += notes
        from openami.protection.features import daily_totals_wh

        transformer_ids, transformer_daily = tx_grid.ids, daily_totals_wh(tx_grid.energy_wh)
        position = {tx: j for j, tx in enumerate(transformer_ids)}
        unknown_tx = sorted({tx for tx in transformer_of.values() if tx not in position})
        if unknown_tx:
            warnings.append(
                f"{transformers}: no readings for transformer(s) {', '.join(unknown_tx[:5])}; their meters are "
                "scored without energy balance"
            )
        for i, meter in enumerate(grid.ids):
            meter_tx[i] = position.get(transformer_of.get(meter, ""), -1)
        unmapped = [meter for meter in grid.ids if meter not in transformer_of]
        if unmapped:
            warnings.append(
                f"meter(s) without a transformer, scored without energy balance: {', '.join(unmapped[:5])}"
                + (f" and {len(unmapped) - 5} more" if len(unmapped) > 5 else "")
            )
    elif mapping is not None:
        warnings.append(
            f"{mapping}: used only for peers' shapes, since no --transformers file gives balances"
        )
    if transformers is None and transformer_of:
        # Without check meters the mapping still tells whose daily shape a meter should resemble.
        groups = {tx: j for j, tx in enumerate(sorted(set(transformer_of.values())))}
        meter_tx = np.array([groups.get(transformer_of.get(m, ""), -1) for m in grid.ids], dtype=np.int64)

    tamper: list[tuple[str, datetime, datetime | None, str]] = []
    if events is not None:
        found, notes = read_events(events, grid.ids)
        warnings += notes
        tamper = [(e.meter_id, e.start, e.end, e.code) for e in found]
    for warning in warnings:
        err.print(f"[yellow]warning: {escape(warning)}[/yellow]", soft_wrap=True)

    results = score_meters(
        grid.ids,
        grid.energy_wh,
        grid.first_day,
        meter_transformer=meter_tx,
        transformer_ids=transformer_ids,
        transformer_daily_wh=transformer_daily,
        events=tamper,
    )
    try:
        with out.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["meter_id", "score", "reasons"])
            for result in results:
                writer.writerow([result.meter_id, f"{result.score:.3f}", "; ".join(result.reasons)])
    except OSError as exc:
        raise ValidationError(f"cannot write the output: {exc.strerror}", str(out)) from exc
    resolution = "daily" if grid.interval_min == 1440 else f"{grid.interval_min}-minute"
    return len(results), f"{resolution} readings over {grid.days} days from {grid.first_day.isoformat()}"
