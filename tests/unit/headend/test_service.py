"""HeadEnd.handle on SQLite: acceptance, every rejection reason, anti-replay, persistence, stats, commands."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from openami.common.clock import ManualClock
from openami.common.errors import ConfigurationError, NotFoundError
from openami.headend.codec import REPLY, Frame, decode_command, reread_command, sign
from openami.headend.inprocess import InProcessTransport
from openami.headend.models import FrameRejection, MeterLink
from openami.headend.queries import rejection_counts
from openami.headend.service import BatchNotCommittedError
from openami.readings.interfaces import Source
from openami.registry.interfaces import MeterInfo
from openami.registry.models import Meter
from tests.sql_statements import statements
from tests.unit.headend.helpers import KEY_A, KEY_B, KEY_C, FakeSink, frame, make_headend, uplink


def rejections(session_factory: sessionmaker[Session]) -> list[tuple[str | None, str, str]]:
    with session_factory() as session:
        rows = session.execute(
            select(FrameRejection.serial, FrameRejection.reason, FrameRejection.detail).order_by(
                FrameRejection.id
            )
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


def link(session_factory: sessionmaker[Session], meter: MeterInfo) -> MeterLink:
    with session_factory() as session:
        row = session.get(MeterLink, meter.id)
        assert row is not None
        return row


def test_a_data_frame_is_decoded_and_handed_to_readings(
    session_factory: sessionmaker[Session], clock: ManualClock, fleet: dict[str, MeterInfo]
) -> None:
    headend, sink = make_headend(session_factory, clock)
    content = uplink("SN0001", clock.now(), energies_wh=(100, 110, 120))
    result = headend.handle([frame(content, 1)])

    assert (result.accepted, result.rejections) == (1, [])
    [batch] = sink.batches
    assert batch.meter_id == fleet["SN0001"].id
    assert batch.source is Source.PUSH
    assert batch.received_at == clock.now()
    assert batch.meter_time == content.meter_time
    assert [i.energy_wh for i in batch.intervals] == [100, 110, 120]
    assert batch.registers == content.registers
    assert batch.instants == content.instants
    stored = link(session_factory, fleet["SN0001"])
    assert (stored.highest_counter, stored.frames_accepted, stored.last_frame_at) == (1, 1, clock.now())
    stats = headend.stats
    assert (stats.frames_received, stats.frames_accepted, stats.intervals_stored, stats.registers_stored) == (
        1,
        1,
        3,
        1,
    )
    assert headend.metrics.get_sample_value(
        "openami_headend_frames_total", {"outcome": "accepted", "reason": ""}
    ) == pytest.approx(1)


def test_a_reply_is_stored_as_a_reread(
    session_factory: sessionmaker[Session], clock: ManualClock, fleet: dict[str, MeterInfo]
) -> None:
    headend, sink = make_headend(session_factory, clock)
    content = uplink("SN0001", clock.now())
    content.request_id = "rr-1"
    headend.handle([frame(content, 1, kind=REPLY)])
    assert [b.source for b in sink.batches] == [Source.REREAD]


def _reason(headend: Any, f: Frame) -> str:
    result = headend.handle([f])
    assert result.accepted == 0
    [rejection] = result.rejections
    return str(rejection.reason)


def test_every_rejection_reason_is_recorded_counted_and_persisted(
    session_factory: sessionmaker[Session], clock: ManualClock, fleet: dict[str, MeterInfo]
) -> None:
    headend, sink = make_headend(session_factory, clock)
    now = clock.now()
    good = frame(uplink("SN0001", now), 1)
    frames = [
        good,
        Frame(good.topic, b"{not json", 2, sign(good.topic, 2, b"{not json", KEY_A)),
        frame(uplink("SN0009", now), 1),  # not registered
        frame(uplink("SN0002", now), 1, KEY_A),  # signed with SN0001's key
        good,  # the same frame again
        frame(uplink("SN0001", now, energies_wh=(-5,)), 3),
        frame(uplink("SN0001", now + timedelta(hours=1)), 4),
        frame(uplink("SN0001", now - timedelta(days=500)), 5),
    ]
    result = headend.handle(frames)

    # Sender checks (registry, signature) come first, then anti-replay, format and plausibility.
    reasons = [r.reason for r in result.rejections]
    assert reasons == [
        "unknown_meter",
        "bad_signature",
        "malformed",
        "replayed",
        "impossible_value",
        "time_out_of_range",
        "time_out_of_range",
    ]
    assert result.accepted == 1
    assert len(sink.batches) == 1  # nothing of a rejected frame reaches storage
    persisted = rejections(session_factory)
    assert sorted(r[1] for r in persisted) == sorted(reasons)
    assert ("SN0009", "unknown_meter") in [(s, r) for s, r, _ in persisted]
    with session_factory() as session:
        assert rejection_counts(session) == {
            "unknown_meter": 1,
            "bad_signature": 1,
            "malformed": 1,
            "replayed": 1,
            "impossible_value": 1,
            "time_out_of_range": 2,
        }
    with session_factory() as session:
        assert headend.stats.rejected == rejection_counts(session)
    assert headend.stats.frames_rejected == 7
    value = headend.metrics.get_sample_value(
        "openami_headend_frames_total", {"outcome": "rejected", "reason": "time_out_of_range"}
    )
    assert value == pytest.approx(2)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "malformed"),
        (b'{"bn": "urn:dev:serial:SN0001:"}', "malformed"),
        (b'[{"bt": 1772409600, "n": "1-0:1.8.0", "u": "Wh", "v": 1}]', "malformed"),
        (
            b'[{"bn": "urn:dev:serial:SN0001:", "bt": 1772409600, "n": "1-0:32.7.0", "u": "V", "v": NaN}]',
            "impossible_value",
        ),
    ],
    ids=["bad-json", "not-senml", "no-base-name", "nan"],
)
def test_bad_payloads(
    session_factory: sessionmaker[Session],
    clock: ManualClock,
    fleet: dict[str, MeterInfo],
    payload: bytes,
    reason: str,
) -> None:
    headend, _sink = make_headend(session_factory, clock)
    topic = "openami/v1/demo/up/SN0001/data"
    assert _reason(headend, Frame(topic, payload, 1, sign(topic, 1, payload, KEY_A))) == reason


def test_frames_without_counter_or_mac_are_malformed(
    session_factory: sessionmaker[Session], clock: ManualClock, fleet: dict[str, MeterInfo]
) -> None:
    headend, _ = make_headend(session_factory, clock)
    good = frame(uplink("SN0001", clock.now()), 1)
    assert _reason(headend, Frame(good.topic, good.payload, 0, "")) == "malformed"
    assert rejections(session_factory)[0][0] == "SN0001"


def test_unknown_meter_and_meter_of_another_site(
    session_factory: sessionmaker[Session], clock: ManualClock, fleet: dict[str, MeterInfo]
) -> None:
    headend, _ = make_headend(session_factory, clock)
    assert _reason(headend, frame(uplink("SN0009", clock.now()), 1)) == "unknown_meter"
    # OT0001 belongs to site "other" but publishes under "demo"
    assert _reason(headend, frame(uplink("OT0001", clock.now()), 1, KEY_C)) == "unknown_meter"
    assert "belongs to site 'other'" in rejections(session_factory)[-1][2]


def test_a_newly_registered_meter_is_found_after_the_negative_cache_expires(
    session_factory: sessionmaker[Session], clock: ManualClock, fleet: dict[str, MeterInfo]
) -> None:
    from openami.registry.service import RegistryService

    headend, _ = make_headend(session_factory, clock)
    assert _reason(headend, frame(uplink("SN0009", clock.now()), 1)) == "unknown_meter"
    with session_factory() as session, session.begin():
        RegistryService.from_settings(clock).create_meter(
            session,
            site_id=fleet["SN0001"].site_id,
            serial="SN0009",
            model="sim",
            rated_current_a=60,
            auth_key=KEY_B,
        )
    assert _reason(headend, frame(uplink("SN0009", clock.now()), 2, KEY_B)) == "unknown_meter"
    clock.advance(timedelta(seconds=61))
    assert headend.handle([frame(uplink("SN0009", clock.now()), 3, KEY_B)]).accepted == 1


def test_a_rotated_key_is_picked_up_without_restart(
    session_factory: sessionmaker[Session], clock: ManualClock, fleet: dict[str, MeterInfo]
) -> None:
    headend, _ = make_headend(session_factory, clock)
    assert headend.handle([frame(uplink("SN0001", clock.now()), 1)]).accepted == 1
    with session_factory() as session, session.begin():
        session.execute(update(Meter).where(Meter.serial == "SN0001").values(auth_key=KEY_B))
    assert headend.handle([frame(uplink("SN0001", clock.now()), 2, KEY_B)]).accepted == 1
    assert _reason(headend, frame(uplink("SN0001", clock.now()), 3, KEY_A)) == "bad_signature"


def test_replayed_counter_is_refused_in_the_same_and_in_a_later_batch(
    session_factory: sessionmaker[Session], clock: ManualClock, fleet: dict[str, MeterInfo]
) -> None:
    headend, sink = make_headend(session_factory, clock)
    f = frame(uplink("SN0001", clock.now()), 7)
    result = headend.handle([f, f])
    assert (result.accepted, [r.reason for r in result.rejections]) == (1, ["replayed"])
    assert _reason(headend, f) == "replayed"
    assert len(sink.batches) == 1


def test_counters_within_the_window_are_accepted_once_and_reordered_frames_survive(
    session_factory: sessionmaker[Session], clock: ManualClock, fleet: dict[str, MeterInfo]
) -> None:
    headend, sink = make_headend(session_factory, clock)
    now = clock.now()
    frames = {c: frame(uplink("SN0001", now, register_wh=1000 + c), c) for c in range(1, 101)}
    assert headend.handle([frames[c] for c in (3, 1, 2)]).accepted == 3  # reordered within one batch
    assert headend.handle([frames[10]]).accepted == 1
    assert headend.handle([frames[5]]).accepted == 1  # late, inside the window
    assert _reason(headend, frames[5]) == "replayed"  # ... but only once
    assert headend.handle([frames[100]]).accepted == 1
    assert headend.handle([frames[37]]).accepted == 1  # 63 below the highest
    assert _reason(headend, frames[36]) == "replayed"  # 64 below: outside the window
    assert "64 or more below" in rejections(session_factory)[-1][2]
    assert sorted(b.registers[0].energy_wh - 1000 for b in sink.batches) == [1, 2, 3, 5, 10, 37, 100]
    stored = link(session_factory, fleet["SN0001"])
    assert (stored.highest_counter, stored.frames_accepted) == (100, 7)


def test_meters_keep_separate_counters(
    session_factory: sessionmaker[Session], clock: ManualClock, fleet: dict[str, MeterInfo]
) -> None:
    headend, _ = make_headend(session_factory, clock)
    now = clock.now()
    result = headend.handle([frame(uplink("SN0001", now), 1), frame(uplink("SN0002", now), 1, KEY_B)])
    assert result.accepted == 2


def test_an_authentic_frame_spends_its_counter_even_when_its_content_is_refused(
    session_factory: sessionmaker[Session], clock: ManualClock, fleet: dict[str, MeterInfo]
) -> None:
    headend, _ = make_headend(session_factory, clock)
    f = frame(uplink("SN0001", clock.now(), energies_wh=(-1,)), 5)
    assert _reason(headend, f) == "impossible_value"
    assert _reason(headend, f) == "replayed"
    assert link(session_factory, fleet["SN0001"]).frames_accepted == 0


def test_an_unauthentic_frame_spends_no_counter(
    session_factory: sessionmaker[Session], clock: ManualClock, fleet: dict[str, MeterInfo]
) -> None:
    headend, _ = make_headend(session_factory, clock)
    forged = frame(uplink("SN0001", clock.now()), 5, KEY_B)
    assert _reason(headend, forged) == "bad_signature"
    assert headend.handle([frame(uplink("SN0001", clock.now()), 5)]).accepted == 1


def test_whole_frame_is_refused_when_one_record_is_impossible(
    session_factory: sessionmaker[Session], clock: ManualClock, fleet: dict[str, MeterInfo]
) -> None:
    headend, sink = make_headend(session_factory, clock)
    assert _reason(headend, frame(uplink("SN0001", clock.now(), energies_wh=(100, -1, 100)), 1)) == (
        "impossible_value"
    )
    assert sink.batches == []


def test_clock_skew_and_age_limits_come_from_settings(
    session_factory: sessionmaker[Session], clock: ManualClock, fleet: dict[str, MeterInfo]
) -> None:
    headend, _ = make_headend(session_factory, clock, max_clock_skew_s=3600, max_reading_age_days=1)
    assert headend.handle([frame(uplink("SN0001", clock.now() + timedelta(minutes=50)), 1)]).accepted == 1
    assert (
        _reason(headend, frame(uplink("SN0001", clock.now() - timedelta(days=2)), 2)) == "time_out_of_range"
    )


# --- transactions and acknowledgement --------------------------------------------------------------------


def test_nothing_is_acknowledged_or_stored_when_the_batch_fails(
    session_factory: sessionmaker[Session], clock: ManualClock, fleet: dict[str, MeterInfo]
) -> None:
    headend, sink = make_headend(session_factory, clock, sink=FakeSink(fail=True))
    transport = InProcessTransport(background=False)
    transport.start(headend.handle)
    frames = [frame(uplink("SN0001", clock.now()), 1), Frame("bad", b"", 1, "")]
    transport.submit(frames)

    with pytest.raises(BatchNotCommittedError, match="connection lost"):
        transport.pump()
    assert transport.acknowledged == 0
    assert transport.pending() == 2
    assert rejections(session_factory) == []  # the malformed frame's rejection was rolled back too
    assert link(session_factory, fleet["SN0001"]).highest_counter == 0
    assert headend.stats.frames_received == 0
    assert headend.stats.batches_failed == 1

    sink.fail = False  # the database is back: the same frames go through, once
    assert transport.pump() == 2
    assert transport.acknowledged == 2
    assert [r[1] for r in rejections(session_factory)] == ["malformed"]
    assert link(session_factory, fleet["SN0001"]).highest_counter == 1


def test_a_failing_commit_acknowledges_nothing(
    session_factory: sessionmaker[Session], clock: ManualClock, fleet: dict[str, MeterInfo]
) -> None:
    headend, sink = make_headend(session_factory, clock)
    broken = {"commit": True}

    @event.listens_for(session_factory, "before_commit")
    def _fail_after_ingest(session: Session) -> None:
        if broken["commit"] and sink.batches:
            raise OperationalError("COMMIT", {}, Exception("disk full"))

    transport = InProcessTransport(background=False)
    transport.start(headend.handle)
    transport.submit([frame(uplink("SN0001", clock.now()), 1)])
    with pytest.raises(BatchNotCommittedError, match="disk full"):
        transport.pump()
    assert (transport.acknowledged, transport.pending()) == (0, 1)
    assert link(session_factory, fleet["SN0001"]).highest_counter == 0

    broken["commit"] = False
    assert transport.pump() == 1
    assert link(session_factory, fleet["SN0001"]).highest_counter == 1


def test_a_change_of_the_link_state_under_the_batch_is_never_overwritten(
    session_factory: sessionmaker[Session], clock: ManualClock, fleet: dict[str, MeterInfo]
) -> None:
    """Something moves the link state between our read and our conditional write (as a worker would on a
    database without row locks): the batch is redone, and given up uncommitted if it keeps happening."""
    headend, sink = make_headend(session_factory, clock)
    meter_id = fleet["SN0001"].id
    headend.handle([frame(uplink("SN0001", clock.now()), 1)])  # creates the link row
    engine = session_factory.kw["bind"]
    interfering = {"on": True, "times": 0}

    @event.listens_for(engine, "after_cursor_execute")
    def _other_writer(conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
        if interfering["on"] and statement.lstrip().startswith("SELECT") and "FROM meter_link" in statement:
            interfering["times"] += 1
            cursor.connection.execute(
                "UPDATE meter_link SET replay_window = replay_window + 2 WHERE meter_id = ?", (meter_id,)
            )

    with pytest.raises(BatchNotCommittedError, match="3 times"):
        headend.handle([frame(uplink("SN0001", clock.now()), 2)])
    assert interfering["times"] == 3
    assert len(sink.batches) == 1  # the second frame never reached storage
    assert link(session_factory, fleet["SN0001"]).highest_counter == 1

    interfering["on"] = False
    assert headend.handle([frame(uplink("SN0001", clock.now()), 2)]).accepted == 1


# --- commands ---------------------------------------------------------------------------------------------


def test_commands_use_the_meters_key_and_a_rising_counter(
    session_factory: sessionmaker[Session], clock: ManualClock, fleet: dict[str, MeterInfo]
) -> None:
    received: list[Frame] = []
    transport = InProcessTransport(background=False, on_command=lambda _serial, f: received.append(f))
    headend, _ = make_headend(session_factory, clock)
    headend.serve(transport)
    cmd = reread_command("rr-1", clock.now() - timedelta(hours=2), clock.now())
    sent = [headend.send_command("SN0001", cmd), headend.send_command("SN0001", cmd)]

    assert received == sent
    assert [f.counter for f in received] == [1, 2]
    assert received[0].topic == "openami/v1/demo/down/SN0001/cmd"
    assert decode_command(received[0], KEY_A) == cmd
    assert link(session_factory, fleet["SN0001"]).down_counter == 2
    assert headend.stats.commands_sent == 2
    with pytest.raises(NotFoundError, match="SN0009"):
        headend.send_command("SN0009", cmd)


def test_commands_need_a_transport(
    session_factory: sessionmaker[Session], clock: ManualClock, fleet: dict[str, MeterInfo]
) -> None:
    headend, _ = make_headend(session_factory, clock)
    with pytest.raises(ConfigurationError, match="no transport"):
        headend.send_command("SN0001", reread_command("rr-1", clock.now() - timedelta(hours=1), clock.now()))


def test_an_empty_batch_does_nothing(session_factory: sessionmaker[Session], clock: ManualClock) -> None:
    headend, _ = make_headend(session_factory, clock)
    assert headend.handle([]).frames == 0
    assert headend.stats.batches_committed == 0


def test_a_decoder_failure_costs_one_frame_not_the_batch(
    session_factory: sessionmaker[Session],
    clock: ManualClock,
    fleet: dict[str, MeterInfo],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from openami.headend import service

    real_decode = service.decode_uplink
    poisoned = frame(uplink("SN0001", clock.now(), energies_wh=(100,)), 1)

    def decoder_with_a_bug(f: Frame) -> Any:
        if f is poisoned:
            raise ZeroDivisionError("a bug in the decoder")
        return real_decode(f)

    monkeypatch.setattr(service, "decode_uplink", decoder_with_a_bug)
    headend, sink = make_headend(session_factory, clock)
    healthy = frame(uplink("SN0002", clock.now(), energies_wh=(50,)), 1, KEY_B)
    result = headend.handle([poisoned, healthy])

    assert result.accepted == 1
    assert [r.reason for r in result.rejections] == ["malformed"]
    assert "ZeroDivisionError" in result.rejections[0].detail
    assert [b.meter_id for b in sink.batches] == [fleet["SN0002"].id]


def test_the_senders_of_a_batch_are_looked_up_in_one_query(
    session_factory: sessionmaker[Session], clock: ManualClock, fleet: dict[str, MeterInfo]
) -> None:
    headend, sink = make_headend(session_factory, clock)
    frames = [
        frame(uplink("SN0001", clock.now()), 1, KEY_A),
        frame(uplink("SN0002", clock.now()), 1, KEY_B),
        frame(uplink("OT0001", clock.now()), 1, KEY_C, site="other"),
    ]
    with statements(session_factory.kw["bind"]) as sent:
        result = headend.handle(frames)
    assert result.accepted == 3 == len(sink.batches)
    meter_lookups = [s for s in sent if "FROM meter" in s and "meter_link" not in s]
    assert len(meter_lookups) == 1, meter_lookups
