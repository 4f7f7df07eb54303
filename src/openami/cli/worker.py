"""`openami worker jobs`: the outbox consumers (payment webhooks, wallet top-ups, relay dispatch) and the periodic
relay dispatch, until SIGTERM or SIGINT; `--once` handles what is due, dispatches once and exits (tests, cron).

Relay commands go out over MQTT through a head-end (`openami.headend.mqtt.MqttTransport`), which joins the
head-end share group: this process also ingests its share of the meters' uplinks, as any head-end worker does.
A stop finishes the event in hand; a kill loses nothing (see docs/operations.md, "The worker and crashes").
Exit status 2 when the configuration is wrong, 1 when the MQTT broker cannot be reached, as `openami worker`.
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

from openami.bootstrap import bootstrap
from openami.common.errors import ConfigurationError
from openami.config import Settings
from openami.headend.mqtt import MqttTransport
from openami.headend.transport import TransportError
from openami.headend.worker import EXIT_CONFIGURATION, EXIT_UNREACHABLE, _cannot_start, _settings_problem
from openami.worker_jobs import build_jobs_worker

log = structlog.get_logger(__name__)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="openami worker jobs", description=__doc__)
    parser.add_argument("--database-url", help="SQLAlchemy URL (default: OPENAMI_DATABASE_URL or SQLite)")
    parser.add_argument("--once", action="store_true", help="handle what is due, dispatch once, and exit")
    parser.add_argument("--client-id", help="stable MQTT client id (default: openami-jobs-<hostname>)")
    parser.add_argument("--mqtt-host")
    parser.add_argument("--mqtt-port", type=int)
    parser.add_argument(
        "--send-interval-s", type=float, default=5.0, help="how often relay commands due are sent"
    )
    parser.add_argument("--batch-size", type=int, default=50, help="outbox events claimed at once")
    parser.add_argument(
        "--lease-s", type=float, default=300.0, help="how long a claimed event is this worker's alone"
    )
    parser.add_argument("--log-json", action="store_true", help="one JSON object per log line")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = {
        name: getattr(args, name)
        for name in ("database_url", "mqtt_host", "mqtt_port")
        if getattr(args, name) is not None
    }
    try:
        settings = Settings(**overrides)
    except pydantic.ValidationError as exc:
        return _cannot_start(_settings_problem(exc), EXIT_CONFIGURATION)
    level = logging.getLevelNamesMapping().get(settings.log_level.upper(), logging.INFO)
    renderer = structlog.processors.JSONRenderer() if args.log_json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
    )
    try:
        container = bootstrap(settings)
    except ConfigurationError as exc:
        return _cannot_start(str(exc), EXIT_CONFIGURATION)
    transport = MqttTransport(
        host=settings.mqtt_host,
        port=settings.mqtt_port,
        client_id=args.client_id or f"openami-jobs-{socket.gethostname()}",
        topic_root=settings.mqtt_topic_root,
        share_group=settings.mqtt_share_group,
    )
    try:
        try:
            headend = container.headend(transport)
        except TransportError as exc:
            return _cannot_start(str(exc), EXIT_UNREACHABLE)
        worker = build_jobs_worker(
            container,
            headend,
            send_interval_s=args.send_interval_s,
            batch_size=args.batch_size,
            lease_s=args.lease_s,
        )
        if args.once:
            report = worker.run_once()
            log.info("worker.jobs_once", completed=report.events.completed, sent=report.relay.sent)
        else:
            stop = threading.Event()

            def _on_signal(signum: int, _frame: Any) -> None:
                log.info("worker.jobs_stopping", signal=signal.Signals(signum).name)
                stop.set()

            signal.signal(signal.SIGTERM, _on_signal)
            signal.signal(signal.SIGINT, _on_signal)
            worker.run_forever(stop)
        transport.stop()
    finally:
        container.close()
    return 0
