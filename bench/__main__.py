"""Run the benchmarks and print their figures:
`python -m bench [--quick] [--only NAME ...] [--billing-accounts N]`."""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import structlog

from bench import billing, ingest, logins, payments, pricing, theft
from bench.fixtures import scratch_postgres, throwaway_master_key
from openami.headend.codec import Frame
from openami.security.meter_keys import MeterKeyCipher
from openami.simulator import Fleet
from openami.storage.db import make_engine


def _quiet_logs() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))


def bench_ingest_postgres(quick: bool) -> None:
    meters, days = (100, 5) if quick else (500, 10)
    for workers in (1, 2):
        f = ingest.postgres_mqtt(meters, days, workers=workers)
        print(
            f"ingest postgresql, MQTT 5 -> {workers} worker process(es) -> COPY path, {f.intervals:,} intervals:"
        )
        print(f"  end to end       {f.e2e_per_s:>12,.0f} readings/s  ({f.e2e_seconds:.2f} s)")
        print(f"  {f.baseline_name:<16} {f.baseline_per_s:>12,.0f} rows/s      ({f.baseline_seconds:.2f} s)")
        print(f"  ratio            {f.ratio:>12.2f}  (goal >= 0.5)")
        shares = ", ".join(f"{party} {f.cpu_us_per_reading(party):.1f}" for party in f.cpu_s)
        total_us = sum(map(f.cpu_us_per_reading, f.cpu_s))
        cores = os.cpu_count() or 1
        print(f"  CPU per reading  {total_us:>12.1f} core-µs  ({shares})")
        print(
            f"  CPU ceiling      {cores / total_us * 1e6:>12,.0f} readings/s  "
            f"(all {cores} cores busy at this cost per reading)"
        )


def bench_ingest_sqlite(quick: bool) -> None:
    meters, days = (100, 5) if quick else (500, 10)
    with tempfile.TemporaryDirectory() as tmp:
        f = ingest.sqlite_inprocess(meters, days, Path(tmp))
    print(f"ingest sqlite (in-process transport -> head-end), {f.intervals:,} intervals:")
    print(f"  end to end       {f.e2e_per_s:>12,.0f} readings/s  ({f.e2e_seconds:.2f} s)")
    print(f"  {f.baseline_name:<16} {f.baseline_per_s:>12,.0f} rows/s      ({f.baseline_seconds:.2f} s)")
    print(f"  ratio            {f.ratio:>12.2f}")


def bench_worker_memory(quick: bool) -> None:
    # 500 meters x 105 days x 96 = 5.04 million interval readings (plus a register and an instant per frame).
    meters, days = (100, 10) if quick else (500, 105)
    f = ingest.postgres_mqtt(meters, days, sample_rss=True)
    samples = f.worker_rss_samples_mb
    if len(samples) < 2:
        raise RuntimeError(
            f"{len(samples)} RSS sample(s) in a {f.e2e_seconds:.2f} s run: too short to compare early and late"
        )
    tenth = max(1, len(samples) // 10)
    early, late = statistics.mean(samples[tenth : 2 * tenth]), statistics.mean(samples[-tenth:])
    print(
        f"worker memory over {f.intervals:,} readings ({f.e2e_seconds:.0f} s, {f.e2e_per_s:,.0f} readings/s):"
    )
    print(f"  peak RSS         {max(samples):>8.1f} MB  (goal <= 300 MB)")
    print(f"  RSS 2nd tenth    {early:>8.1f} MB")
    print(f"  RSS last tenth   {late:>8.1f} MB  (growth {late - early:+.1f} MB)")


def bench_simulator(quick: bool) -> None:
    meters, days = (100, 7) if quick else (500, 30)
    start = datetime(2026, 1, 5, tzinfo=UTC)
    fleet = Fleet.build(meters, 1, start, "bench", "Africa/Nairobi")
    sent = 0

    def count(frames: list[Frame]) -> None:
        nonlocal sent
        sent += len(frames)

    t0 = time.perf_counter()
    fleet.run(start + timedelta(days=days), count)
    elapsed = time.perf_counter() - t0
    print(
        f"simulator, {meters} meters (+{len(fleet.transformers)} check meters) for {days} days, 5-min steps:"
    )
    print(
        f"  wall time        {elapsed:>8.1f} s  (goal: a month for hundreds of meters in well under a minute)"
    )
    print(f"  frames encoded   {sent:>8,}  ({sent / elapsed:,.0f} per s)")
    print(f"  simulated time   {days * 86_400 / elapsed:>8,.0f} x real time")


def bench_logins(quick: bool) -> None:
    hashing, good, bad = logins.hashing_and_login(5 if quick else 15)
    print("passwords (argon2id, t=3, 64 MiB, 4 lanes), median of runs:")
    print(f"  hash a password  {hashing:>8.0f} ms  (goal < 300 ms)")
    print(f"  login, right     {good:>8.0f} ms")
    print(f"  login, wrong     {bad:>8.0f} ms")


def bench_pricing(quick: bool) -> None:
    f = pricing.run(20 if quick else 200)
    print(
        f"pricing core, TOU + tiered tariff, {f.meters} meters x a year of 15-min intervals ({f.intervals:,}):"
    )
    print(
        f"  priced           {f.per_s:>12,.0f} intervals/s  ({f.pricing_s:.2f} s, monthly bills with lines)"
    )
    print(f"  numpy sum        {f.sum_per_s:>12,.0f} intervals/s  ({f.sum_s:.3f} s, the floor)")
    print(f"  ratio            {f.ratio:>12.3f}")


def bench_billing(quick: bool, accounts: int | None = None) -> None:
    f = billing.run(accounts or (1_000 if quick else 100_000))
    s = f.setup
    print(
        f"billing run on PostgreSQL, {f.accounts:,} accounts x a month of hourly readings ({f.readings:,}):"
    )
    print(
        f"  setup            {s.total_s:>12.1f} s  (registry {s.registry_s:.1f} s, readings COPY "
        f"{s.readings_s:.1f} s + VACUUM {s.vacuum_s:.1f} s; {s.database_bytes / 1e9:.2f} GB on disk)"
    )
    print(
        f"  billing run      {f.run_s:>12.2f} s  ({f.accounts / f.run_s:,.0f} accounts/s; bills + lines + "
        "journals, committed every 500 accounts)"
    )
    print(
        f"  reading them     {f.read_s:>12.2f} s  (the same readings streamed out by meter, then time: "
        "the floor)"
    )
    print(f"  ratio            {f.ratio:>12.1f}  (run time / read time)")
    print(f"  peak RSS         {f.peak_rss_mb:>12.0f} MB  (this process: setup, run and read)")


def bench_payments(quick: bool) -> None:
    deliveries, count, threads = (300, 60, 8) if quick else (1_000, 200, 16)
    with scratch_postgres() as url:
        engine = make_engine(url, pool_size=threads, max_overflow=4)
        try:
            f = payments.run(
                engine, MeterKeyCipher([throwaway_master_key()]), deliveries=deliveries, payments=count,
                threads=threads,
            )  # fmt: skip
        finally:
            engine.dispose()
    print(
        f"payment webhooks on PostgreSQL, {f.deliveries:,} deliveries for {f.payments} payments from {f.threads} "
        "threads (duplicates, replays, reordering):"
    )
    print(f"  verified+applied {f.per_s:>12,.0f} deliveries/s  ({f.seconds:.2f} s; outcomes {f.outcomes})")
    print(f"  one-row commits  {f.floor_per_s:>12,.0f} /s            ({f.floor_seconds:.2f} s, the floor)")
    print(
        f"  ratio            {f.per_s / f.floor_per_s:>12.2f}  (checked: every balance exact, ledger balanced)"
    )
    if f.retries:
        print(
            f"  retried          {sum(f.retries.values()):>12}  ({f.retries}: as a provider delivers again)"
        )


def bench_theft(quick: bool) -> None:
    customers, days = (200, 90) if quick else (1_000, 180)
    print(
        f"theft scoring on simulated data (seeds {theft.EVALUATION_SEEDS}, kept out of tuning), {customers} customers "
        f"x {days} days, 10 % thieves:"
    )
    for resolution in (15, 1440):
        for with_evidence in (True, False):
            runs = [theft.evaluate(seed, customers, days, resolution, with_evidence=with_evidence)
                    for seed in theft.EVALUATION_SEEDS]  # fmt: skip
            what = "events + energy balance" if with_evidence else "consumption only"
            label = "15-min" if resolution == 15 else "daily"

            def mean(field: str, runs: list[theft.Quality] = runs) -> float:
                return statistics.fmean(getattr(q, field) for q in runs)

            print(
                f"  {label:<6} {what:<24} AUC {mean('auc'):.3f}  P@1% {mean('precision_1'):.2f}  "
                f"P@5% {mean('precision_5'):.2f}  MAP@100 {mean('map_100'):.2f}  "
                f"DR@5%FPR {mean('detection_at_5_fpr'):.2f}  ({customers / mean('seconds'):,.0f} meters/s)"
            )
            kinds = sorted(runs[0].per_attack_auc)
            per = ", ".join(
                f"{k} {statistics.fmean(q.per_attack_auc.get(k, float('nan')) for q in runs):.2f}"
                for k in kinds
            )
            print(f"         per attack AUC: {per}")


BENCHMARKS = {
    "simulator": bench_simulator,
    "ingest_postgres": bench_ingest_postgres,
    "ingest_sqlite": bench_ingest_sqlite,
    "worker_memory": bench_worker_memory,
    "logins": bench_logins,
    "pricing": bench_pricing,
    "billing": bench_billing,
    "payments": bench_payments,
    "theft": bench_theft,
}


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHMARKS), help="run only these")
    parser.add_argument(
        "--billing-accounts",
        type=_positive,
        metavar="N",
        help="accounts in the billing bench (default 100,000; 1,000 with --quick)",
    )
    args = parser.parse_args()
    _quiet_logs()
    benchmarks: dict[str, Callable[[bool], None]] = {
        **BENCHMARKS,
        "billing": partial(bench_billing, accounts=args.billing_accounts),
    }
    for name in args.only or list(benchmarks):
        print(f"== {name}")
        benchmarks[name](args.quick)


if __name__ == "__main__":
    main()
