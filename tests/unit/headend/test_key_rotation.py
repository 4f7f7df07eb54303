"""The head-end after a meter key rotation: the previous key is accepted until the grace deadline, then refused."""

from __future__ import annotations

import base64
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker
from structlog.testing import capture_logs

from openami.common.clock import ManualClock
from openami.headend.codec import Frame, decode_command, reread_command
from openami.headend.inprocess import InProcessTransport
from openami.headend.service import METER_CACHE_TTL, HeadEnd
from openami.registry.interfaces import MeterInfo
from openami.registry.models import Meter
from openami.registry.service import RegistryService
from tests.unit.headend.helpers import KEY_A, KEY_B, frame, make_headend, uplink

NEW_KEY = bytes(range(50, 82))


def _rotate(
    session_factory: sessionmaker[Session], clock: ManualClock, grace: timedelta, serial: str = "SN0001"
) -> None:
    with session_factory() as session, session.begin():
        RegistryService.from_settings(clock).rotate_meter_key(session, serial, NEW_KEY, grace)


def _send(headend: HeadEnd, clock: ManualClock, key: bytes, counter: int, serial: str = "SN0001") -> str:
    """'accepted', or the reason the frame was refused."""
    result = headend.handle([frame(uplink(serial, clock.now()), counter, key)])
    return "accepted" if result.accepted else result.rejections[0].reason


def _forms(*keys: bytes) -> list[str]:
    return [f for k in keys for f in (k.hex(), k.hex().upper(), base64.b64encode(k).decode(), repr(k)[2:-1])]


def test_the_previous_key_is_accepted_until_the_grace_deadline_then_refused(
    session_factory: sessionmaker[Session], clock: ManualClock, fleet: dict[str, MeterInfo]
) -> None:
    headend, _ = make_headend(session_factory, clock)
    with capture_logs() as logs:
        assert _send(headend, clock, KEY_A, 1) == "accepted"  # now cached with KEY_A as its key
        _rotate(session_factory, clock, timedelta(hours=1))
        deadline = clock.now() + timedelta(hours=1)
        assert _send(headend, clock, NEW_KEY, 2) == "accepted"  # the cached entry fails, is refreshed
        assert _send(headend, clock, KEY_A, 3) == "accepted"  # in flight, or the meter is not re-keyed yet
        clock.set(deadline - timedelta(seconds=1))
        assert _send(headend, clock, KEY_A, 4) == "accepted"
        clock.set(deadline)
        assert _send(headend, clock, KEY_A, 5) == "bad_signature"
        assert _send(headend, clock, NEW_KEY, 6) == "accepted"
        assert _send(headend, clock, KEY_B, 7) == "bad_signature"  # another meter's key never was valid
    assert [e["event"] for e in logs].count("frame_rejected") == 2
    assert [f for f in _forms(KEY_A, KEY_B, NEW_KEY) if f in str(logs)] == []


def test_a_rotation_elsewhere_reaches_a_head_end_that_cached_the_meter(
    session_factory: sessionmaker[Session], clock: ManualClock, fleet: dict[str, MeterInfo]
) -> None:
    headend, _ = make_headend(session_factory, clock)
    assert _send(headend, clock, KEY_A, 1) == "accepted"
    # Rotated by another process (the CLI) with a short grace; the meter keeps sending with its old key, so no
    # frame fails and nothing would refresh the cached entry but its age.
    grace = METER_CACHE_TTL + timedelta(minutes=1)
    _rotate(session_factory, clock, grace)
    clock.advance(grace)
    assert _send(headend, clock, KEY_A, 2) == "bad_signature"
    assert _send(headend, clock, NEW_KEY, 3) == "accepted"


def test_commands_are_signed_with_the_new_key_once_the_cache_is_refreshed(
    session_factory: sessionmaker[Session], clock: ManualClock, fleet: dict[str, MeterInfo]
) -> None:
    received: list[Frame] = []
    headend, _ = make_headend(session_factory, clock)
    headend.serve(InProcessTransport(background=False, on_command=lambda _serial, f: received.append(f)))
    assert _send(headend, clock, KEY_A, 1) == "accepted"  # cached with KEY_A
    _rotate(session_factory, clock, timedelta(hours=1))
    clock.advance(METER_CACHE_TTL)
    command = reread_command("rr-1", clock.now() - timedelta(hours=1), clock.now())
    headend.send_command("SN0001", command)
    assert decode_command(received[0], NEW_KEY) == command  # raises when signed with another key


def test_a_meter_whose_stored_key_does_not_open_costs_only_its_own_frames(
    session_factory: sessionmaker[Session], clock: ManualClock, fleet: dict[str, MeterInfo]
) -> None:
    with session_factory() as session, session.begin():
        other = session.scalar(select(Meter.auth_key).where(Meter.serial == "SN0002"))
        session.execute(update(Meter).where(Meter.serial == "SN0001").values(auth_key=other))
    headend, _ = make_headend(session_factory, clock)
    now = clock.now()
    with capture_logs() as logs:
        result = headend.handle(
            [frame(uplink("SN0001", now), 1, KEY_A), frame(uplink("SN0002", now), 1, KEY_B)]
        )
    assert result.accepted == 1
    [rejection] = result.rejections
    assert (rejection.serial, rejection.reason) == ("SN0001", "bad_signature")
    assert "stored key cannot be used" in rejection.detail
    assert "meter 'SN0001': its sealed key does not open" in rejection.detail
    [unavailable] = [e for e in logs if e["event"] == "meter_key_unavailable"]
    assert unavailable["serial"] == "SN0001"
    assert [f for f in _forms(KEY_A, KEY_B, bytes(other or b"")) if f in str(logs)] == []
