"""Head-end worker processes against the real Mosquitto and PostgreSQL.

(1) Two workers of one share group split a fleet's frames: every reading is stored exactly once, none lost.
(2) A worker is SIGKILLed mid-stream and restarted under the same client id: what it acknowledged is stored
exactly once, and nothing it had not acknowledged is lost.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from openami.common.clock import SystemClock
from openami.common.units import floor_to_interval
from openami.headend.codec import Frame, UplinkContent, encode_uplink
from openami.headend.models import FrameRejection, MeterLink
from openami.headend.mqtt import MqttFramePublisher
from openami.readings.interfaces import IntervalValue, RegisterValue
from openami.readings.models import IntervalReading
from openami.registry.service import RegistryService

pytestmark = pytest.mark.integration

MQTT_HOST, MQTT_PORT = "127.0.0.1", 1883
SITE = "itest"
INTERVALS_PER_FRAME = 4
INTERVAL = timedelta(minutes=15)


@pytest.fixture
def topic_root() -> str:
    return f"openami-test/{uuid.uuid4().hex[:10]}"


def register_meters(engine: Engine, n: int) -> dict[str, bytes]:
    registry = RegistryService.from_settings(SystemClock())
    keys = {f"IT{i:04d}": os.urandom(32) for i in range(n)}
    with Session(engine) as session, session.begin():
        site = registry.create_site(
            session, code=SITE, name="Integration", timezone="UTC", currency="EUR", holiday_country="DE"
        )
        for serial, key in keys.items():
            registry.create_meter(
                session, site_id=site.id, serial=serial, model="sim", rated_current_a=60, auth_key=key
            )
    return keys


def fleet_frames(keys: dict[str, bytes], frames_per_meter: int, topic_root: str) -> list[Frame]:
    """Each meter's frames 1..n, each with its own 4 intervals; interleaved by meter as a fleet sends them."""
    now = datetime.now(UTC)
    first = floor_to_interval(now, INTERVAL) - INTERVAL * (INTERVALS_PER_FRAME * frames_per_meter)
    out = []
    for k in range(frames_per_meter):
        for m, (serial, key) in enumerate(keys.items()):
            starts = [first + INTERVAL * (k * INTERVALS_PER_FRAME + j) for j in range(INTERVALS_PER_FRAME)]
            content = UplinkContent(
                serial,
                now,
                intervals=[IntervalValue("1-0:1.29.0", s, 900, 100 + m + j) for j, s in enumerate(starts)],
                registers=[RegisterValue("1-0:2.8.0", now - timedelta(seconds=frames_per_meter - k), 0)],
            )
            out.append(encode_uplink(content, key=key, counter=k + 1, topic_root=topic_root, site_code=SITE))
    return out


class Worker:
    """One `python -m openami.headend.worker` process, its JSON log lines collected by a reader thread."""

    def __init__(
        self, pg_url: str, client_id: str, topic_root: str, share_group: str, *, batch_size: int = 50
    ) -> None:
        self.client_id = client_id
        self.lines: list[dict[str, Any]] = []
        self.started = threading.Event()
        command = [
            sys.executable,
            "-m",
            "openami.headend.worker",
            "--database-url",
            pg_url,
            "--client-id",
            client_id,
            "--topic-root",
            topic_root,
            "--share-group",
            share_group,
            "--mqtt-host",
            MQTT_HOST,
            "--mqtt-port",
            str(MQTT_PORT),
            "--batch-size",
            str(batch_size),
            "--session-expiry-s",
            "600",
            "--log-json",
        ]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            try:
                line = json.loads(raw)
            except json.JSONDecodeError:
                line = {"event": "raw", "text": raw.rstrip()}
            self.lines.append(line)
            if line.get("event") == "worker_started":
                self.started.set()
        self.process.stdout.close()

    def wait_started(self, timeout_s: float = 30) -> None:
        if not self.started.wait(timeout_s):
            self.process.kill()
            raise AssertionError(f"worker {self.client_id} did not start: {self.lines}")

    def terminate(self, timeout_s: float = 30) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout_s)
        self._reader.join(timeout_s)
        return code

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(30)
        self._reader.join(30)

    def event(self, name: str) -> dict[str, Any]:
        return next(line for line in self.lines if line.get("event") == name)


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for w in started:
        if w.process.poll() is None:
            w.kill()
    for client_id in {w.client_id for w in started}:
        forget_session(client_id)


def forget_session(client_id: str) -> None:
    """Ask the broker to drop a test worker's persistent session (clean start, expiry 0)."""
    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5
    )
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 0
    client.connect(MQTT_HOST, MQTT_PORT, clean_start=True, properties=props)
    client.loop(timeout=1.0)
    client.disconnect()


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    assert condition(), f"timed out after {timeout_s} s waiting for {what}"


def frames_accepted(engine: Engine) -> int:
    with Session(engine) as session:
        return int(session.scalar(select(func.coalesce(func.sum(MeterLink.frames_accepted), 0))) or 0)


def assert_stored_exactly_once(engine: Engine, keys: dict[str, bytes], frames_per_meter: int) -> None:
    with Session(engine) as session:
        rows = session.execute(select(IntervalReading.meter_id, IntervalReading.version)).all()
        rejected = set(session.scalars(select(FrameRejection.reason).distinct()))
    assert len(rows) == len(keys) * frames_per_meter * INTERVALS_PER_FRAME  # none lost (PK: none twice)
    assert {version for _, version in rows} == {1}  # never stored over again as a conflicting version
    assert rejected <= {"replayed"}  # only redeliveries of committed frames were refused
    assert frames_accepted(engine) == len(keys) * frames_per_meter  # each frame accepted exactly once


def test_two_workers_split_the_fleet_and_store_everything_once(
    pg_url: str, pg_engine: Engine, topic_root: str, workers: list[Worker]
) -> None:
    keys = register_meters(pg_engine, 20)
    frames_per_meter = 15
    group = f"g{uuid.uuid4().hex[:8]}"
    for name in ("a", "b"):
        workers.append(Worker(pg_url, f"{group}-{name}", topic_root, group))
    for w in workers:
        w.wait_started()

    publisher = MqttFramePublisher(host=MQTT_HOST, port=MQTT_PORT)
    try:
        publisher.publish(fleet_frames(keys, frames_per_meter, topic_root))
    finally:
        publisher.close()
    total = len(keys) * frames_per_meter
    wait_for(lambda: frames_accepted(pg_engine) == total, 90, f"{total} frames accepted")

    assert [w.terminate() for w in workers] == [0, 0]
    assert_stored_exactly_once(pg_engine, keys, frames_per_meter)
    per_worker = [w.event("worker_stopped")["frames_accepted"] for w in workers]
    assert sum(per_worker) == total
    assert all(n > 0 for n in per_worker), f"one worker got nothing: {per_worker}"


def test_a_killed_worker_restarted_under_its_client_id_loses_nothing(
    pg_url: str, pg_engine: Engine, topic_root: str, workers: list[Worker]
) -> None:
    keys = register_meters(pg_engine, 30)
    frames_per_meter = 20  # 600 frames: below Mosquitto's default queue of 1000 per offline session
    frames = fleet_frames(keys, frames_per_meter, topic_root)
    before_kill, while_dead = frames[:480], frames[480:]
    group = f"g{uuid.uuid4().hex[:8]}"
    client_id = f"{group}-solo"
    # Small batches: many commits, so the kill lands while the worker holds delivered, unacknowledged frames.
    workers.append(Worker(pg_url, client_id, topic_root, group, batch_size=5))
    workers[0].wait_started()

    publisher = MqttFramePublisher(host=MQTT_HOST, port=MQTT_PORT)
    try:
        publisher.publish(before_kill)
        wait_for(lambda: frames_accepted(pg_engine) >= 40, 60, "the worker to get going")
        workers[0].kill()
        accepted_at_kill = frames_accepted(pg_engine)
        assert accepted_at_kill < len(before_kill), (
            "the worker finished before the kill: nothing was in flight"
        )
        publisher.publish(while_dead)  # queued by the broker in the dead worker's session
    finally:
        publisher.close()

    workers.append(Worker(pg_url, client_id, topic_root, group, batch_size=5))
    workers[1].wait_started()
    wait_for(lambda: frames_accepted(pg_engine) == len(frames), 90, "every frame accepted after the restart")
    assert workers[1].terminate() == 0
    assert_stored_exactly_once(pg_engine, keys, frames_per_meter)
    assert workers[1].event("mqtt_connected")["session_present"] is True
