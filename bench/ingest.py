"""Ingestion, end to end, against a bare bulk write of the same rows into the same table.

PostgreSQL: frames published to the real Mosquitto, taken by an `openami worker` process (MQTT 5 shared
subscription, authenticated, validated, committed, then acknowledged) vs a bare binary COPY.
SQLite (embedded): frames through the in-process transport into the head-end vs a bare executemany.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

from sqlalchemy import text

from bench.fixtures import (
    PER_DAY,
    BenchMeter,
    bench_interval,
    bench_settings,
    day_frames,
    first_day_for,
    register_meters,
    scratch_postgres,
    throwaway_master_key,
    worker_environment,
)
from openami.bootstrap import Container, bootstrap
from openami.headend.codec import Frame
from openami.headend.inprocess import InProcessTransport
from openami.headend.mqtt import MqttFramePublisher
from openami.readings import bulk
from openami.readings.interfaces import Source
from openami.storage import migrate

MQTT_HOST, MQTT_PORT = "127.0.0.1", 1883
# Mosquitto keeps 1000 queued messages per session by default (and drops QoS 1 beyond): stay well below.
MAX_OUTSTANDING_FRAMES = 800
# How often the worker's RSS is read: often enough that a quick run of about a second still gets a dozen
# samples (its first and last tenths are compared); reading /proc/<pid>/status costs microseconds.
RSS_SAMPLE_INTERVAL_S = 0.1


@dataclass
class IngestFigures:
    backend: str
    intervals: int
    e2e_seconds: float
    baseline_name: str
    baseline_seconds: float
    worker_rss_samples_mb: list[float] = field(default_factory=list)
    # CPU seconds each party spent during the timed run (workers, PostgreSQL backends, broker, publisher).
    cpu_s: dict[str, float] = field(default_factory=dict)

    def cpu_us_per_reading(self, party: str) -> float:
        return self.cpu_s[party] / self.intervals * 1e6

    @property
    def e2e_per_s(self) -> float:
        return self.intervals / self.e2e_seconds

    @property
    def baseline_per_s(self) -> float:
        return self.intervals / self.baseline_seconds

    @property
    def ratio(self) -> float:
        return self.e2e_per_s / self.baseline_per_s


def _stored_intervals(container: Container) -> int:
    with container.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM reading_interval")).scalar_one())


def _frames_accepted(container: Container) -> int:
    with container.engine.connect() as conn:
        return int(
            conn.execute(text("SELECT coalesce(sum(frames_accepted), 0) FROM meter_link")).scalar_one()
        )


def _baseline_rows(meters: list[BenchMeter], days: int) -> list[tuple[Any, ...]]:
    """The same interval rows ingestion stored, as the table's row tuples."""
    first = first_day_for(days)
    received = datetime.now(UTC)
    return [
        bulk.interval_row(m.id, bench_interval(m.id, first + timedelta(days=d), k), Source.PUSH, received)
        for d in range(days)
        for m in meters
        for k in range(PER_DAY)
    ]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pids_named(name: str) -> list[int]:
    pids = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == name:
                pids.append(int(comm.parent.name))
        except OSError:
            continue
    return pids


def _cpu_snapshot(
    container: Container, workers: list[subprocess.Popen[bytes]]
) -> dict[str, dict[int, float]]:
    """CPU seconds so far of every process taking part, by party and pid."""
    with container.engine.connect() as conn:
        backends = conn.execute(
            text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        ).scalars()
        pg_pids = [int(pid) for pid in backends]
    parties = {
        "workers": [p.pid for p in workers],
        "postgresql": pg_pids,
        "mosquitto": _pids_named("mosquitto"),
        "publisher": [os.getpid()],
    }
    return {party: {pid: _cpu_s(pid) for pid in pids} for party, pids in parties.items()}


def _cpu_spent(before: dict[str, dict[int, float]], after: dict[str, dict[int, float]]) -> dict[str, float]:
    """CPU seconds per party between two snapshots; a process that appeared in between counts from zero."""
    return {
        party: sum(cpu - before[party].get(pid, 0.0) for pid, cpu in after[party].items()) for party in after
    }


def postgres_mqtt(meters_n: int, days: int, *, sample_rss: bool = False, workers: int = 1) -> IngestFigures:
    """`days` daily frames per meter through Mosquitto and `workers` worker processes into PostgreSQL."""
    run = uuid.uuid4().hex[:8]
    topic_root, group, site = f"bench-{run}/v1", f"bench-{run}", f"b{run}"
    # One key for the container that registers the meters and the workers that must open their keys.
    master_key = throwaway_master_key()
    with scratch_postgres() as url:
        container = bootstrap(bench_settings(url, master_key))
        meters = register_meters(container, meters_n, site, first_day_for(days + 1))
        total_frames = meters_n * days
        env = worker_environment(url, master_key)
        processes = [
            subprocess.Popen(
                [
                    sys.executable, "-m", "openami.headend.worker",
                    "--client-id", f"bench-worker-{run}-{n}", "--topic-root", topic_root,
                    "--share-group", group, "--collection-interval-s", "0", "--log-level", "WARNING",
                    "--session-expiry-s", "60",
                ],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            for n in range(workers)
        ]  # fmt: skip
        worker = processes[0]
        rss: list[float] = []
        try:
            time.sleep(1.5)  # connect and subscribe
            if any(p.poll() is not None for p in processes):
                raise RuntimeError("a worker exited before the run started")
            publisher = MqttFramePublisher(host=MQTT_HOST, port=MQTT_PORT, client_id=f"bench-meters-{run}")
            frames: Iterator[Frame] = day_frames(meters, first_day_for(days), days, site, topic_root)
            if not sample_rss:
                # Encoded before the clock starts, so the figure is the platform's and not the simulated
                # meters'. (The long memory run encodes as it goes: its frames' meter clocks must stay current.)
                frames = iter(list(frames))
            published = 0
            cpu_before = _cpu_snapshot(container, processes)
            started = time.perf_counter()
            last_sample = started
            while True:
                accepted = _frames_accepted(container)
                if sample_rss and time.perf_counter() - last_sample >= RSS_SAMPLE_INTERVAL_S:
                    rss.append(_rss_mb(worker.pid))
                    last_sample = time.perf_counter()
                if accepted >= total_frames:
                    break
                room = MAX_OUTSTANDING_FRAMES - (published - accepted)
                if room >= 100 and published < total_frames:
                    chunk = list(islice(frames, room))
                    published += publisher.publish(chunk)
                else:
                    time.sleep(0.01)
                if any(p.poll() is not None for p in processes):
                    raise RuntimeError("a worker died during the run")
            elapsed = time.perf_counter() - started
            cpu = _cpu_spent(cpu_before, _cpu_snapshot(container, processes))
            publisher.close()
        finally:
            for p in processes:
                p.terminate()
            for p in processes:
                p.wait(timeout=30)
        stored = _stored_intervals(container)
        expected = meters_n * days * PER_DAY
        if stored != expected:
            raise RuntimeError(
                f"stored {stored} intervals, expected {expected}: the run lost or doubled some"
            )
        rows = _baseline_rows(meters, days)
        with container.engine.begin() as conn:
            conn.execute(text("TRUNCATE reading_interval"))
        with container.engine.begin() as conn:
            t0 = time.perf_counter()
            bulk.copy_rows_baseline(conn, rows)
        baseline = time.perf_counter() - t0
        container.close()
    return IngestFigures(
        f"postgresql+mqtt, {workers} worker(s)", expected, elapsed, "bare binary COPY", baseline, rss, cpu
    )


def sqlite_inprocess(meters_n: int, days: int, workdir: Path) -> IngestFigures:
    """The embedded default: frames through the in-process transport into the head-end, on SQLite."""
    run = uuid.uuid4().hex[:8]
    site = f"b{run}"
    db = workdir / f"bench-{run}.db"
    url = f"sqlite:///{db}"
    migrate.upgrade(url)
    # A throwaway key here too: the embedded default would write var/master.key into the working directory.
    container = bootstrap(bench_settings(url, throwaway_master_key()))
    meters = register_meters(container, meters_n, site, first_day_for(days + 1))
    transport = InProcessTransport(background=False, batch_size=500)
    container.headend(transport)
    frames = iter(list(day_frames(meters, first_day_for(days), days, site, "openami/v1")))
    started = time.perf_counter()
    while chunk := list(islice(frames, 500)):
        transport.submit(chunk)
        transport.pump()
    elapsed = time.perf_counter() - started
    expected = meters_n * days * PER_DAY
    stored = _stored_intervals(container)
    if stored != expected:
        raise RuntimeError(f"stored {stored} intervals, expected {expected}")
    rows = _baseline_rows(meters, days)
    with container.engine.begin() as conn:
        conn.execute(text("DELETE FROM reading_interval"))
    with container.engine.begin() as conn:
        t0 = time.perf_counter()
        bulk.executemany_baseline(conn, rows)
    baseline = time.perf_counter() - t0
    container.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    return IngestFigures("sqlite+inprocess", expected, elapsed, "bare executemany", baseline)
