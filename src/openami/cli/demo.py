"""`openami demo`: a simulated site on the embedded default, end to end, with faults, then the API.

The demo builds a site of meters under transformers (each with a check meter), runs the fleet for some days on
a fast clock through the in-process transport with faults injected, lets the collection round re-read and
estimate gaps, and prints what the platform saw next to what the simulator did, so nobody has to take the
counts on trust.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import func, select

from openami.billing.service import BillingService
from openami.bootstrap import Container, bootstrap, tune_gc_for_ingestion
from openami.cli.demo_prepaid import PrepaidDemo, messages_file
from openami.cli.users import generated_password
from openami.common.clock import ManualClock, SystemClock
from openami.config import Settings
from openami.control.reports import RelayReportSink
from openami.headend.collection import CollectionRound
from openami.headend.inprocess import InProcessTransport
from openami.headend.service import HeadEnd
from openami.ledger.service import LedgerService
from openami.readings.models import DailyCompleteness, GapStatus, ReadingGap
from openami.registry.models import AccountKind, MeterRole
from openami.security.audit import AuditLog
from openami.security.identity import IdentityService, needs_second_factor
from openami.security.models import Role
from openami.simulator import FaultPlan, Fleet
from openami.storage import migrate
from openami.tariffs.model import minor_digits

SITE_CODE = "demo"
SITE_TIMEZONE = "Africa/Nairobi"
STEP_S = 300
PUSH_EVERY_S = 4 * 3600
LOG_FILE = Path("var") / "demo.log"


@dataclass
class DemoSummary:
    meters: int
    check_meters: int
    transformers: int
    days: int
    seed: int
    simulated_from: str
    simulated_to: str
    wall_seconds: float = 0.0
    frames_sent_by_meters: int = 0
    frames_received: int = 0
    frames_accepted: int = 0
    frames_rejected: dict[str, int] = field(default_factory=dict)
    readings_received: int = 0
    readings_stored: int = 0
    intervals_stored: int = 0
    registers_stored: int = 0
    duplicates_dropped: int = 0
    conflicts_flagged: int = 0
    values_rejected: dict[str, int] = field(default_factory=dict)
    gaps_found: int = 0
    gaps_reread: int = 0
    rereads_requested: int = 0
    intervals_estimated: int = 0
    estimates_replaced_by_actual: int = 0
    gaps_still_open: int = 0
    completeness_percent: float = 0.0
    faults_injected: dict[str, int] = field(default_factory=dict)
    # The postpaid accounts billed for the whole local days simulated, from the readings stored.
    postpaid_accounts: int = 0
    billed_from: str = ""
    billed_to: str = ""
    bills_issued: int = 0
    bills_with_estimated_intervals: int = 0
    billed_total: str = "0"  # in the site's currency
    accounts_not_billed: dict[str, int] = field(default_factory=dict)  # by the first words of the reason
    ledger_balanced: bool = False
    # The prepaid half: wallets, warnings, cut-offs, payments, reconnections (cli.demo_prepaid.PrepaidCounts).
    prepaid: dict[str, Any] = field(default_factory=dict)
    # The demo's people, with generated passwords (and second-factor secrets) shown once.
    people: list[dict[str, str]] = field(default_factory=list)


def run_demo(
    *,
    meters: int,
    days: int,
    seed: int,
    database_url: str | None,
    console: Console,
    show_progress: bool,
    now: datetime | None = None,
    log_file: Path = LOG_FILE,
) -> tuple[DemoSummary, Container]:
    """Simulate and collect; returns the summary and a container on the system clock for serving the API."""
    if meters < 1 or days < 1:
        raise ValueError(f"--meters and --days must be at least 1 (got {meters} meters, {days} days)")
    url = database_url or _fresh_sqlite_url()
    migrate.upgrade(url)
    with _logging_to(log_file):
        summary = _simulate(
            url, meters=meters, days=days, seed=seed, console=console, show_progress=show_progress, now=now,
            log_file=log_file,
        )  # fmt: skip
    container = bootstrap(Settings(database_url=url))
    summary.people = _demo_people(container)
    return summary, container


# Who the demo lets sign in: (username, role, whether linked to the site's first customer).
DEMO_PEOPLE = (
    ("admin", Role.ADMIN, False),
    ("operator", Role.OPERATOR, False),
    ("auditor", Role.AUDITOR, False),
    ("customer", Role.CUSTOMER, True),
)


def _demo_people(container: Container) -> list[dict[str, str]]:
    """One person per role of interest on the demo site, with a generated password (no default password exists);
    the customer sees the site's first household. Recorded in the operation log."""
    identity = IdentityService(container.clock)
    people = []
    with container.session_factory() as session, session.begin():
        site = container.registry.site_by_code(session, SITE_CODE)
        [first_customer] = container.registry.list_customers(session, site_id=site.id, limit=1)
        for username, role, linked in DEMO_PEOPLE:
            password = generated_password()
            user = identity.create_user(session, username, f"Demo {role.value}", password)
            identity.grant_role(session, user.id, role, site.id)
            if linked:
                identity.link_customer(session, user.id, first_customer.id)
            person = {"username": username, "role": role.value, "password": password}
            if needs_second_factor({role}):
                person["totp_secret"] = identity.enroll_totp(session, user.id).secret
            AuditLog(container.clock).append(
                session,
                actor="demo",
                role="system",
                action="users.created",
                object_type="user",
                object_id=str(user.id),
                after={"username": username, "role": role.value, "site_id": site.id},
                site_id=site.id,
            )
            people.append(person)
    return people


def print_people(summary: DemoSummary, console: Console) -> None:
    """The demo's sign-ins, shown this once."""
    table = Table(title="Sign in (POST /api/v1/auth/login): generated passwords, shown once")
    for column in ("username", "role", "password", "second factor (TOTP secret)"):
        table.add_column(column)
    for person in summary.people:
        table.add_row(person["username"], person["role"], person["password"], person.get("totp_secret", "-"))
    console.print(table)


def _simulate(
    url: str,
    *,
    meters: int,
    days: int,
    seed: int,
    console: Console,
    show_progress: bool,
    now: datetime | None,
    log_file: Path = LOG_FILE,
) -> DemoSummary:

    real_now = now or SystemClock().now()
    # End on a push instant, so the last intervals are delivered rather than waiting for the next push.
    end = datetime.fromtimestamp(int(real_now.timestamp()) // PUSH_EVERY_S * PUSH_EVERY_S, UTC)
    start = end - timedelta(days=days)
    clock = ManualClock(start)
    container = bootstrap(Settings(database_url=url), clock=clock)

    faults = _fault_plan(meters)
    fleet = Fleet.build(
        meters, seed, start, SITE_CODE, SITE_TIMEZONE, faults=faults, push_every_s=PUSH_EVERY_S
    )
    _register_fleet(container, fleet, start)
    _put_on_tariff(container, start.astimezone(ZoneInfo(SITE_TIMEZONE)).date())

    tune_gc_for_ingestion()
    transport = InProcessTransport(on_command=fleet.handle_command, background=False)
    control = container.control
    # Meters' relay reports confirm relay commands in the same transaction as the frames that carry them.
    headend = HeadEnd(
        container.session_factory,
        RelayReportSink(container.readings, control),
        clock,
        container.settings,
        meters=container.registry,
    )
    headend.serve(transport)
    jobs = container.collection_jobs(headend)
    collected = CollectionRound()
    messages = messages_file(log_file.parent)
    prepaid = PrepaidDemo(
        container.session_factory, clock, container.registry, container.payments, container.wallets,
        headend, control, container.outbox, messages,
    )  # fmt: skip
    prepaid.setup(SITE_CODE, start.astimezone(ZoneInfo(SITE_TIMEZONE)).date())

    def deliver(frames: list[Any]) -> None:
        transport.submit(frames)
        transport.pump()

    def after_push(at: datetime) -> None:
        collected.add(jobs.run_once(at))
        transport.pump()  # the meters' answers to re-read requests
        prepaid.step(at)
        transport.pump()  # the meters' answers to relay commands
        prepaid.after_replies(at)
        advance(at)

    started = time.monotonic()  # wall time, for the summary only
    with _ProgressBar(console, show_progress, start, end) as advance:
        fleet.run(end, deliver, step_s=STEP_S, on_progress=after_push, clock=clock)
    transport.pump()

    summary = _summarise(container, fleet, headend.stats, collected, start, end, seed)
    messages.close()
    summary.prepaid = asdict(prepaid.counts)
    _bill_postpaid(container, summary, start, end)
    summary.wall_seconds = round(time.monotonic() - started, 1)
    container.close()
    return summary


@contextmanager
def _logging_to(path: Path) -> Iterator[None]:
    """Every rejection and command is logged; in the demo they go to a file so the progress bar stays readable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as stream:
        structlog.configure(
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso"),
                structlog.processors.JSONRenderer(),
            ],
            logger_factory=structlog.PrintLoggerFactory(stream),
        )
        try:
            yield
        finally:
            structlog.reset_defaults()


def _fresh_sqlite_url() -> str:
    path = Path("var") / "demo.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return f"sqlite:///{path}"


def _fault_plan(meters: int) -> FaultPlan:
    """Enough of every fault to show each is noticed, scaled to the fleet."""
    few = max(1, meters // 50)
    return FaultPlan(
        drop_share=0.01,
        duplicate_share=0.01,
        reorder_share=0.02,
        replay_share=0.002,
        forge_share=0.002,
        unknown_meter_share=0.002,
        random_outages=few,
        random_comms_outages=few,
        random_outage_hours=(2.0, 10.0),
        clock_drift_ppm_spread=40.0,
        corrupted_meters=few,
    )


def _register_fleet(container: Container, fleet: Fleet, start: datetime) -> None:
    """Registry rows for the simulated site: one customer, account and service point per customer meter."""
    registry = container.registry
    specs = {spec.serial: spec for spec in fleet.specs}
    with container.session_factory() as session, session.begin():
        site = registry.create_site(
            session,
            code=SITE_CODE,
            name="Demo mini-grid",
            timezone=SITE_TIMEZONE,
            currency="KES",
            holiday_country="KE",
        )
        for transformer in fleet.transformers:
            check = specs[transformer.check_serial]
            check_meter = registry.create_meter(
                session,
                site_id=site.id,
                serial=check.serial,
                model="openami-sim CT check meter",
                rated_current_a=check.rated_current_a,
                auth_key=check.key,
                phases=check.phases,
                role=MeterRole.CHECK,
                load_profile_interval_s=check.load_profile_interval_s,
                installed_at=start,
            )
            created = registry.create_transformer(
                session,
                site_id=site.id,
                code=transformer.code,
                rating_kva=transformer.rating_kva,
                check_meter_id=check_meter.id,
            )
            for number, serial in enumerate(transformer.meter_serials, start=1):
                spec = specs[serial]
                reference = f"{transformer.code}-{number:03d}"
                customer = registry.create_customer(
                    session, site_id=site.id, reference=reference, name=f"Household {reference}"
                )
                # Half the accounts prepaid, half postpaid.
                kind = AccountKind.PREPAID if (number + transformer.index) % 2 else AccountKind.POSTPAID
                account = registry.create_account(
                    session, site_id=site.id, customer_id=customer.id, number=f"A-{reference}", kind=kind
                )
                point = registry.create_service_point(
                    session,
                    site_id=site.id,
                    code=f"SP-{reference}",
                    rated_current_a=spec.service_rated_current_a,
                    phases=spec.phases,
                    account_id=account.id,
                    transformer_id=created.id,
                    address=spec.household,
                )
                registry.create_meter(
                    session,
                    site_id=site.id,
                    serial=serial,
                    model="openami-sim single-phase" if spec.phases == 1 else "openami-sim three-phase",
                    rated_current_a=spec.rated_current_a,
                    auth_key=spec.key,
                    phases=spec.phases,
                    role=MeterRole.CUSTOMER,
                    load_profile_interval_s=spec.load_profile_interval_s,
                    service_point_id=point.id,
                    installed_at=start,
                )


# The demo site's tariff: a time-of-use price with monthly blocks, a daily fixed charge and VAT, shaped like a
# Kenyan domestic tariff (the prices are the demo's own, not any utility's).
DEMO_TARIFF: dict[str, Any] = {
    "name": "Demo domestic time of use",
    "currency": "KES",
    "timezone": SITE_TIMEZONE,
    "periods": ["peak", "off_peak"],
    "schedules": {
        "all_year": {
            "weekday": {"00:00": "off_peak", "18:00": "peak", "22:00": "off_peak"},
            "weekend": {"00:00": "off_peak"},
            "holiday": {"00:00": "off_peak"},
        }
    },
    "energy": {"all_year/peak": ["16.50", "24.00"], "all_year/off_peak": ["12.20", "19.10"]},
    "tiers": {"bounds_kwh": [30], "basis": "monthly", "allocation": "pro_rata"},
    "fixed": {"per_day": "5.00"},
    "taxes": [{"name": "VAT", "rate": "0.16"}],
}


def _put_on_tariff(container: Container, first: date) -> None:
    """Every account of the demo site on the demo tariff from local day `first`."""
    billing = BillingService(container.clock, container.registry, container.ledger)
    with container.session_factory() as session, session.begin():
        site = container.registry.site_by_code(session, SITE_CODE)
        tariff = billing.store_tariff(session, site_id=site.id, code="DEMO-TOU", document=DEMO_TARIFF)
        for account in container.registry.list_accounts(session, site_id=site.id):
            billing.assign_tariff(session, account_id=account.id, tariff_id=tariff.id, effective_from=first)


def _bill_postpaid(container: Container, summary: DemoSummary, start: datetime, end: datetime) -> None:
    """Every account on the demo tariff; the postpaid ones billed for the whole local days simulated (prepaid
    accounts are charged from their wallets instead). Fills the summary's billing lines."""
    zone = ZoneInfo(SITE_TIMEZONE)
    first, last = start.astimezone(zone).date() + timedelta(days=1), end.astimezone(zone).date()
    if last <= first:
        return
    ledger = LedgerService(container.clock, container.registry)
    billing = BillingService(container.clock, container.registry, ledger)
    with container.session_factory() as session, session.begin():
        site = container.registry.site_by_code(session, SITE_CODE)
        accounts = container.registry.list_accounts(session, site_id=site.id)
        postpaid = {a.id for a in accounts if a.kind == AccountKind.POSTPAID.value}
        report = billing.run_billing(session, site.id, first, last, account_ids=postpaid)
    bills = [o.bill for o in report.accounts if o.bill is not None]
    not_billed: dict[str, int] = {}
    for outcome in report.accounts:
        if outcome.bill is None:
            kind = " ".join(outcome.reason.split()[:4]) if outcome.reason else outcome.outcome.value
            not_billed[kind] = not_billed.get(kind, 0) + 1
    digits = minor_digits(site.currency)
    with container.session_factory() as session:
        check = ledger.check(session)
    summary.postpaid_accounts = len(postpaid)
    summary.billed_from, summary.billed_to = first.isoformat(), last.isoformat()
    summary.bills_issued = len(bills)
    summary.bills_with_estimated_intervals = sum(1 for b in bills if b.intervals_estimated)
    summary.billed_total = f"{Decimal(sum(b.total_minor for b in bills)).scaleb(-digits):.{digits}f}"
    summary.accounts_not_billed = dict(sorted(not_billed.items()))
    summary.ledger_balanced = check.ok


class _ProgressBar:
    """A rich progress bar over simulated time (or nothing, for --json and tests)."""

    def __init__(self, console: Console, show: bool, start: datetime, end: datetime) -> None:
        self._show = show
        self._start = start
        self._total_s = (end - start).total_seconds()
        self._bar = Progress(
            TextColumn("simulating"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%  {task.fields[at]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._task = self._bar.add_task("sim", total=self._total_s, at="")

    def __enter__(self) -> Callable[[datetime], None]:
        if self._show:
            self._bar.start()
        return self._advance

    def __exit__(self, *_exc: object) -> None:
        if self._show:
            self._bar.stop()

    def _advance(self, at: datetime) -> None:
        if self._show:
            local = at.astimezone(ZoneInfo(SITE_TIMEZONE)).strftime("%Y-%m-%d %H:%M")
            self._bar.update(self._task, completed=(at - self._start).total_seconds(), at=local)


def _summarise(
    container: Container,
    fleet: Fleet,
    stats: Any,
    collected: CollectionRound,
    start: datetime,
    end: datetime,
    seed: int,
) -> DemoSummary:
    checks = sum(1 for s in fleet.specs if s.role == MeterRole.CHECK.value)
    zone = ZoneInfo(SITE_TIMEZONE)
    days = _local_days(start, end, zone)
    with container.session_factory() as session, session.begin():
        meter_ids = [info.id for info in container.registry.meter_infos(session)]
        container.readings.refresh_completeness(session, meter_ids, days)
    with container.session_factory() as session:
        expected, complete = session.execute(
            select(
                func.coalesce(func.sum(DailyCompleteness.expected), 0),
                func.coalesce(func.sum(DailyCompleteness.actual + DailyCompleteness.edited), 0),
            )
        ).one()
        gap_counts = {
            str(status): int(n)
            for status, n in session.execute(
                select(ReadingGap.status, func.count()).group_by(ReadingGap.status)
            )
        }
        reread = session.scalar(
            select(func.count())
            .select_from(ReadingGap)
            .where(ReadingGap.status == GapStatus.FILLED.value, ReadingGap.first_requested_at.is_not(None))
        )
    counts = fleet.fault_counts
    values_rejected = dict(stats.values_rejected_by_readings)
    stored = stats.intervals_stored + stats.registers_stored
    return DemoSummary(
        meters=len(fleet.specs) - checks,
        check_meters=checks,
        transformers=len(fleet.transformers),
        days=(end - start).days,
        seed=seed,
        simulated_from=start.isoformat(),
        simulated_to=end.isoformat(),
        frames_sent_by_meters=counts.frames_offered,
        frames_received=stats.frames_received,
        frames_accepted=stats.frames_accepted,
        frames_rejected=dict(sorted(stats.rejected.items())),
        readings_received=stored + stats.duplicates + sum(values_rejected.values()),
        readings_stored=stored,
        intervals_stored=stats.intervals_stored,
        registers_stored=stats.registers_stored,
        duplicates_dropped=stats.duplicates,
        conflicts_flagged=stats.conflicts,
        values_rejected=values_rejected,
        gaps_found=sum(gap_counts.values()),
        gaps_reread=int(reread or 0),
        rereads_requested=collected.rereads_requested,
        intervals_estimated=collected.intervals_estimated,
        estimates_replaced_by_actual=stats.estimates_replaced,
        gaps_still_open=sum(gap_counts.get(s.value, 0) for s in (GapStatus.OPEN, GapStatus.REREAD_REQUESTED)),
        completeness_percent=round(100.0 * complete / expected, 3) if expected else 0.0,
        faults_injected={
            "dropped": counts.dropped,
            "duplicated": counts.duplicated,
            "reordered": counts.reordered,
            "replayed": counts.replayed,
            "forged": counts.forged,
            "unknown_meter": counts.unknown_meter,
            "outages": counts.outages,
            "pushes_missed_offline": counts.pushes_missed,
            "drifting_meters": counts.drifting_meters,
            "corrupted_memory_entries": counts.corrupted_entries,
        },
    )


def _local_days(start: datetime, end: datetime, zone: ZoneInfo) -> list[date]:
    first = start.astimezone(zone).date()
    last = (end - timedelta(seconds=1)).astimezone(zone).date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def summary_json(summary: DemoSummary) -> str:
    return json.dumps(asdict(summary), sort_keys=False)


def print_summary(summary: DemoSummary, console: Console) -> None:
    table = Table(title=f"openami demo: {summary.meters} meters, {summary.days} days (seed {summary.seed})")
    table.add_column("what")
    table.add_column("count", justify="right")
    rows: list[tuple[str, object]] = [
        (
            "meters / check meters / transformers",
            f"{summary.meters} / {summary.check_meters} / {summary.transformers}",
        ),
        ("simulated", f"{summary.simulated_from} → {summary.simulated_to}"),
        ("frames sent by meters", summary.frames_sent_by_meters),
        ("frames received / accepted", f"{summary.frames_received} / {summary.frames_accepted}"),
    ]
    rows += [(f"  frames rejected: {reason}", n) for reason, n in summary.frames_rejected.items()]
    rows += [
        ("readings received", summary.readings_received),
        ("readings stored (intervals + registers)", summary.readings_stored),
        ("duplicate readings dropped", summary.duplicates_dropped),
        ("conflicting readings kept as versions", summary.conflicts_flagged),
    ]
    rows += [(f"  values rejected: {reason}", n) for reason, n in summary.values_rejected.items()]
    rows += [
        ("gaps found", summary.gaps_found),
        ("re-read requests sent", summary.rereads_requested),
        ("gaps filled by re-read", summary.gaps_reread),
        ("intervals estimated", summary.intervals_estimated),
        ("estimates replaced by actual", summary.estimates_replaced_by_actual),
        ("gaps still open", summary.gaps_still_open),
        ("completeness (actual + edited) %", f"{summary.completeness_percent:.3f}"),
    ]
    rows += [(f"  fault injected: {name}", n) for name, n in summary.faults_injected.items()]
    rows += [
        (
            f"postpaid bills, {summary.billed_from} to {summary.billed_to}",
            f"{summary.bills_issued} of {summary.postpaid_accounts} accounts",
        ),
        ("  bills including estimated intervals", summary.bills_with_estimated_intervals),
        ("  billed in total, KES", summary.billed_total),
    ]
    rows += [(f"  not billed: {reason}", n) for reason, n in summary.accounts_not_billed.items()]
    rows.append(("ledger balanced", "yes" if summary.ledger_balanced else "NO"))
    p = summary.prepaid
    if p:
        rows += [
            (
                "prepaid accounts (wallets started low)",
                f"{p['prepaid_accounts']} ({p['wallets_started_low']})",
            ),
            ("  charged from wallets as readings came, KES", f"{p['charged_total_minor'] / 100:.2f}"),
            ("  low-balance warnings", p["low_balance_warnings"]),
            ("  cut-off warnings (friendly hours)", p["disconnect_warnings"]),
            ("  disconnects refused by the safety policy", p["disconnects_refused_by_policy"]),
            (
                "  disconnects sent / confirmed by the meter",
                f"{p['disconnects_requested']} / {p['disconnects_confirmed']}",
            ),
            ("  payments in the sandbox / credited", f"{p['payments_made']} / {p['payments_credited']}"),
            (
                "  reconnects sent / confirmed by the meter",
                f"{p['reconnects_requested']} / {p['reconnects_confirmed']}",
            ),
            ("  messages sent (var/demo-messages.log)", p["messages_sent"]),
        ]
    rows.append(("wall time, s", summary.wall_seconds))
    for what, count in rows:
        table.add_row(what, str(count))
    console.print(table)
