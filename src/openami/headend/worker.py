"""An MQTT head-end worker: `python -m openami.headend.worker` (the `openami worker` command runs the same).

Runs until SIGTERM or SIGINT, then stops gracefully: the batch in hand is finished, committed and
acknowledged, and the connection closed; messages not yet handled stay in the broker session for the next
start with the same client id. Several workers of one share group split the fleet between them; each
needs its own stable client id (`--client-id`, default `openami-headend-{hostname}`).

It refuses to start with one line on stderr, not a traceback: exit status 2 when the configuration is wrong or
incomplete (no master key in the server mode, a malformed setting), 1 when the MQTT broker cannot be reached.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from typing import Any

import pydantic
import structlog

from openami.bootstrap import bootstrap, tune_gc_for_ingestion
from openami.common.clock import Clock
from openami.common.errors import ConfigurationError
from openami.config import Settings
from openami.headend.mqtt import MqttTransport
from openami.headend.service import HeadEnd, HeadEndStats
from openami.headend.transport import TransportError
from openami.readings.interfaces import ReadingsSink

log = structlog.get_logger(__name__)

# Exit statuses of a worker that cannot start (a clean stop is 0).
EXIT_UNREACHABLE = 1  # the MQTT broker refused or did not answer: worth retrying as it is
EXIT_CONFIGURATION = 2  # a setting is missing or wrong: retrying as it is cannot help


def default_client_id() -> str:
    return f"openami-headend-{socket.gethostname()}"


def run_worker(
    settings: Settings,
    *,
    client_id: str | None = None,
    clock: Clock | None = None,
    sink: ReadingsSink | None = None,
    stop: threading.Event | None = None,
    batch_size: int = 500,
    batch_wait_s: float = 0.05,
    session_expiry_s: int = 7 * 24 * 3600,
    handle_signals: bool = True,
    collection_interval_s: float = 0.0,
) -> HeadEndStats:
    """Serve MQTT uplink frames until `stop` is set (or SIGTERM/SIGINT arrive); returns the final totals.

    Raises ConfigurationError when `settings` cannot make the system (e.g. no master key on PostgreSQL) and
    TransportError when the broker cannot be reached; nothing is left open then.

    With `collection_interval_s` > 0 the worker also runs the collection round (find gaps, request re-reads,
    estimate overdue gaps) that often; several workers may all do so, one round runs at a time.
    """
    container = bootstrap(settings, clock=clock)
    tune_gc_for_ingestion()
    client_id = client_id or settings.mqtt_client_id or default_client_id()
    if sink is None:
        headend = container.headend()
    else:
        headend = HeadEnd(
            container.session_factory, sink, container.clock, settings, meters=container.registry
        )
    transport = MqttTransport(
        host=settings.mqtt_host,
        port=settings.mqtt_port,
        client_id=client_id,
        topic_root=settings.mqtt_topic_root,
        share_group=settings.mqtt_share_group,
        batch_size=batch_size,
        batch_wait_s=batch_wait_s,
        session_expiry_s=session_expiry_s,
    )
    stop = stop or threading.Event()
    if handle_signals and threading.current_thread() is threading.main_thread():

        def _on_signal(signum: int, _frame: Any) -> None:
            log.info("worker_stopping", signal=signal.Signals(signum).name)
            stop.set()

        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal)
    try:
        headend.serve(transport)
        log.info("worker_started", client_id=client_id, subscription=transport.subscription)
        if collection_interval_s > 0:
            jobs = container.collection_jobs(headend)
            while not stop.wait(collection_interval_s):
                try:
                    jobs.run_once(container.clock.now())
                except Exception:  # a failed round is retried next time; the worker keeps serving frames
                    log.exception("collection_round_failed")
        else:
            stop.wait()
        transport.stop()
    finally:
        container.close()
    stats = headend.stats
    log.info(
        "worker_stopped",
        client_id=client_id,
        frames_accepted=stats.frames_accepted,
        frames_rejected=stats.rejected,
        acknowledged=transport.acknowledged,
    )
    return stats


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m openami.headend.worker", description=__doc__)
    parser.add_argument("--database-url", help="SQLAlchemy URL (default: OPENAMI_DATABASE_URL or SQLite)")
    parser.add_argument("--client-id", help="stable MQTT client id of this worker")
    parser.add_argument("--mqtt-host")
    parser.add_argument("--mqtt-port", type=int)
    parser.add_argument("--topic-root", dest="mqtt_topic_root")
    parser.add_argument("--share-group", dest="mqtt_share_group")
    parser.add_argument("--max-clock-skew-s", type=int)
    parser.add_argument("--max-reading-age-days", type=int)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--batch-wait-ms", type=int, default=50)
    parser.add_argument(
        "--session-expiry-s",
        type=int,
        default=7 * 24 * 3600,
        help="how long the broker keeps this session (and unacknowledged messages) while the worker is away",
    )
    parser.add_argument(
        "--collection-interval-s",
        type=float,
        default=300.0,
        help="how often to find gaps, request re-reads and estimate (0: never, another worker does it)",
    )
    parser.add_argument("--log-level")
    parser.add_argument("--log-json", action="store_true", help="one JSON object per log line")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = {
        name: getattr(args, name)
        for name in (
            "database_url",
            "mqtt_host",
            "mqtt_port",
            "mqtt_topic_root",
            "mqtt_share_group",
            "max_clock_skew_s",
            "max_reading_age_days",
            "log_level",
        )
        if getattr(args, name) is not None
    }
    try:
        settings = Settings(**overrides)
    except pydantic.ValidationError as exc:
        return _cannot_start(_settings_problem(exc), EXIT_CONFIGURATION)
    level = logging.getLevelNamesMapping().get(settings.log_level.upper(), logging.INFO)
    processors: list[Any] = [structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso")]
    renderer = structlog.processors.JSONRenderer() if args.log_json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
    )
    try:
        run_worker(
            settings,
            client_id=args.client_id,
            batch_size=args.batch_size,
            batch_wait_s=args.batch_wait_ms / 1000,
            session_expiry_s=args.session_expiry_s,
            collection_interval_s=args.collection_interval_s,
        )
    except ConfigurationError as exc:
        return _cannot_start(str(exc), EXIT_CONFIGURATION)
    except TransportError as exc:
        return _cannot_start(str(exc), EXIT_UNREACHABLE)
    return 0


def _cannot_start(reason: str, status: int) -> int:
    """Say in one line on stderr why the worker does not run (an operator's problem, not a bug: no traceback)."""
    one_line = " ".join(reason.split())
    print(f"openami worker: cannot start: {one_line}", file=sys.stderr)
    return status


def _settings_problem(exc: pydantic.ValidationError) -> str:
    """Which settings are malformed, named as the environment variables that set them. The values are not
    repeated: pydantic quotes them, and they may be secrets."""
    prefix = str(Settings.model_config.get("env_prefix", ""))
    problems = [
        f"{prefix}{'.'.join(map(str, error['loc'])).upper()}: {error['msg']}" for error in exc.errors()
    ]
    return "; ".join(problems)


if __name__ == "__main__":
    raise SystemExit(main())
