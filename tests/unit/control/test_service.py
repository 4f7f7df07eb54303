"""ControlService on SQLite: idempotent requests, the state machine, retries with backoff up to the deadline,
unconfirmed and expired endings, policy refusals recorded, bulk rate limits and cancelling, the operation log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from openami.common.clock import ManualClock
from openami.common.errors import ConflictError, NotFoundError, ValidationError
from openami.control.interfaces import CommandKind, CommandState
from openami.control.policy import Rule
from openami.control.service import ControlService
from openami.security.audit import AuditEntry
from tests.unit.control.conftest import FakeSender, World

OPERATOR = {"actor": "alice", "role": "operator"}


def disconnect(control: ControlService, s: Session, meter_id: int, key: str = "k1", **kw: object):  # type: ignore[no-untyped-def]
    return control.request(
        s,
        meter_id=meter_id,
        kind=kw.pop("kind", "disconnect"),
        request_key=key,
        reason="arrears",
        **OPERATOR,
        **kw,  # type: ignore[arg-type]
    )


def actions(factory: sessionmaker[Session], object_id: int) -> list[tuple[str, str]]:
    with factory() as s:
        rows = s.execute(
            select(AuditEntry.action, AuditEntry.actor)
            .where(AuditEntry.object_type == "relay_command", AuditEntry.object_id == str(object_id))
            .order_by(AuditEntry.id)
        ).all()
        return [(a, b) for a, b in rows]


def test_same_key_same_command_is_returned_and_different_content_conflicts(
    factory: sessionmaker[Session], control: ControlService, world: World
) -> None:
    with factory() as s, s.begin():
        first = disconnect(control, s, world.home.id)
        again = disconnect(control, s, world.home.id)
        assert again == first
        with pytest.raises(ConflictError, match="request key 'k1'"):
            disconnect(control, s, world.other.id)
        with pytest.raises(ConflictError):
            disconnect(control, s, world.home.id, kind="reconnect")
    assert first.state is CommandState.QUEUED
    with factory() as s, pytest.raises(NotFoundError, match="no meter with id 999"):
        disconnect(control, s, 999, key="k2")
    with factory() as s, pytest.raises(ValidationError, match="unknown command"):
        disconnect(control, s, world.home.id, key="k3", kind="explode")


def test_confirmed_only_by_the_meters_report_of_the_wanted_state(
    factory: sessionmaker[Session],
    control: ControlService,
    world: World,
    sender: FakeSender,
    clock: ManualClock,
) -> None:
    with factory() as s, s.begin():
        cmd = disconnect(control, s, world.home.id)
    with factory() as s, s.begin():
        # A report from before sending says nothing about the command.
        assert control.on_relay_report(s, world.home.id, False, clock.now()) == []
        result = control.send_due(s, sender)
    assert result.sent == 1
    assert len(sender.sent) == 1
    serial, wire = sender.sent[0]
    assert (serial, wire.name, wire.request_id, wire.args) == ("KE0001", "disconnect", f"ctl-{cmd.id}-1", {})
    with factory() as s, s.begin():
        assert control.get(s, cmd.id).state is CommandState.SENT
        clock.advance(timedelta(seconds=5))
        assert control.on_relay_report(s, world.home.id, True, clock.now()) == []  # relay still closed
        assert control.get(s, cmd.id).state is CommandState.SENT
        confirmed = control.on_relay_report(s, world.home.id, False, clock.now())
    assert [c.id for c in confirmed] == [cmd.id]
    assert confirmed[0].state is CommandState.CONFIRMED
    assert confirmed[0].reported_connected is False
    assert actions(factory, cmd.id) == [
        ("control.command.queued", "alice"),
        ("control.command.sent", "control-dispatcher"),
        ("control.command.confirmed", f"meter:{world.home.id}"),
    ]


def test_retries_back_off_exponentially_and_a_silent_meter_ends_unconfirmed(
    factory: sessionmaker[Session],
    control: ControlService,
    world: World,
    sender: FakeSender,
    clock: ManualClock,
) -> None:
    start = clock.now()
    with factory() as s, s.begin():
        control.set_policy(
            s, world.site.id, reason="test", first_retry_s=60, max_attempts=3, command_ttl_s=3600, **OPERATOR
        )
        cmd = disconnect(control, s, world.home.id)
    send_times = []
    for minute in range(0, 61):
        clock.set(start + timedelta(minutes=minute))
        with factory() as s, s.begin():
            before = len(sender.sent)
            control.send_due(s, sender)
            if len(sender.sent) > before:
                send_times.append(minute)
    assert send_times == [0, 1, 3]  # 60 s, then 120 s; then no more sends (3 attempts)
    with factory() as s:
        final = control.get(s, cmd.id)
    assert final.state is CommandState.UNCONFIRMED
    assert final.attempts == 3
    assert final.finished_at == start + timedelta(hours=1)
    assert "no confirming report" in final.detail
    assert actions(factory, cmd.id)[-1] == ("control.command.unconfirmed", "control-dispatcher")


def test_a_command_never_handed_over_expires(
    factory: sessionmaker[Session],
    control: ControlService,
    world: World,
    sender: FakeSender,
    clock: ManualClock,
) -> None:
    sender.failing.add("KE0001")
    with factory() as s, s.begin():
        cmd = control.request(
            s,
            meter_id=world.home.id,
            kind="read_now",
            request_key="r1",
            reason="check",
            ttl=timedelta(minutes=30),
            **OPERATOR,
        )
    for minute in range(0, 31):
        clock.set(datetime(2026, 3, 3, 7, minute, tzinfo=UTC))
        with factory() as s, s.begin():
            control.send_due(s, sender)
    with factory() as s:
        final = control.get(s, cmd.id)
    assert final.state is CommandState.EXPIRED
    assert final.attempts >= 2
    assert sender.sent == []


def test_a_reply_confirms_read_now_and_set_clock(
    factory: sessionmaker[Session],
    control: ControlService,
    world: World,
    sender: FakeSender,
    clock: ManualClock,
) -> None:
    with factory() as s, s.begin():
        read = control.request(
            s, meter_id=world.home.id, kind="read_now", request_key="r", reason="audit", **OPERATOR
        )
        tick = control.request(
            s, meter_id=world.other.id, kind="set_clock", request_key="c", reason="drift", **OPERATOR
        )
    with factory() as s, s.begin():
        control.send_due(s, sender)
    names = dict(sender.sent)
    assert names["KE0001"].name == "reread"
    assert names["KE0002"].name == "set_clock"
    assert names["KE0002"].args == {"time": "2026-03-03T07:00:00Z"}
    with factory() as s, s.begin():
        assert [c.id for c in control.on_reply(s, world.home.id, clock.now())] == [read.id]
        assert control.get(s, tick.id).state is CommandState.SENT


def test_refused_disconnects_are_recorded_with_rule_and_end(
    factory: sessionmaker[Session],
    control: ControlService,
    world: World,
    sender: FakeSender,
    clock: ManualClock,
) -> None:
    with factory() as s, s.begin():
        control.add_protection(
            s,
            account_id=world.account.id,
            kind="medical",
            reason="oxygen concentrator",
            valid_from=clock.now() - timedelta(days=1),
            valid_until=None,
            **OPERATOR,
        )
        protected = disconnect(control, s, world.home.id, key="p")
        storm = control.declare_emergency(
            s,
            site_id=world.site.id,
            reason="floods",
            starts_at=clock.now(),
            ends_at=clock.now() + timedelta(days=2),
            **OPERATOR,
        )
        flooded = disconnect(control, s, world.other.id, key="f")
        reconnect = disconnect(control, s, world.home.id, key="r", kind="reconnect")  # always allowed
    assert (protected.state, protected.refused_rule, protected.refused_until) == (
        CommandState.FAILED,
        Rule.PROTECTED_ACCOUNT,
        None,
    )
    assert "oxygen concentrator" in protected.detail
    assert (flooded.refused_rule, flooded.refused_until) == (Rule.WEATHER_EMERGENCY, storm.ends_at)
    assert reconnect.state is CommandState.QUEUED
    assert actions(factory, protected.id) == [("control.command.refused", "alice")]
    with factory() as s, s.begin():
        control.end_emergency(
            s, storm.id, at=clock.now() + timedelta(hours=1), reason="waters receded", **OPERATOR
        )
    clock.advance(timedelta(hours=2))  # 12:00 local: allowed again
    with factory() as s, s.begin():
        assert disconnect(control, s, world.other.id, key="f2").state is CommandState.QUEUED


def test_a_disconnect_queued_by_day_is_not_sent_at_night(
    factory: sessionmaker[Session],
    control: ControlService,
    world: World,
    sender: FakeSender,
    clock: ManualClock,
) -> None:
    clock.set(datetime(2026, 3, 3, 13, 59, tzinfo=UTC))  # 16:59 local, the default night starts at 17:00
    with factory() as s, s.begin():
        cmd = disconnect(control, s, world.home.id)
    clock.advance(timedelta(minutes=2))
    with factory() as s, s.begin():
        result = control.send_due(s, sender)
        final = control.get(s, cmd.id)
    assert result.failed == 1
    assert sender.sent == []
    assert final.refused_rule is Rule.NIGHT
    assert final.refused_until == datetime(2026, 3, 4, 5, tzinfo=UTC)


def test_one_command_in_flight_per_meter_and_the_newest_relay_intent_wins(
    factory: sessionmaker[Session],
    control: ControlService,
    world: World,
    sender: FakeSender,
    clock: ManualClock,
) -> None:
    with factory() as s, s.begin():
        read = control.request(
            s, meter_id=world.home.id, kind="read_now", request_key="r", reason="x", **OPERATOR
        )
        cut = disconnect(control, s, world.home.id, key="d")
        control.send_due(s, sender)
    assert [c.name for _, c in sender.sent] == ["reread"]
    with factory() as s, s.begin():
        control.on_reply(s, world.home.id, clock.now())
        restore = disconnect(control, s, world.home.id, key="u", kind="reconnect")
        assert control.get(s, cut.id).state is CommandState.CANCELLED
        control.send_due(s, sender)
    assert [c.name for _, c in sender.sent] == ["reread", "connect"]
    assert read.id < cut.id < restore.id


def test_bulk_is_rate_limited_and_cancellable(
    factory: sessionmaker[Session],
    control: ControlService,
    registry,
    sender: FakeSender,
    clock: ManualClock,  # type: ignore[no-untyped-def]
) -> None:
    with factory() as s, s.begin():
        site = registry.create_site(
            s, code="b", name="B", timezone="Africa/Nairobi", currency="KES", holiday_country="KE"
        )
        ids = [
            registry.create_meter(
                s,
                site_id=site.id,
                serial=f"B{i:03d}",
                model="sim",
                rated_current_a=60,
                auth_key=bytes([i]) * 32,
            ).id
            for i in range(7)
        ]
        bulk = control.request_bulk(
            s, meter_ids=ids, kind="read_now", request_key="bulk1", reason="survey", per_minute=3, **OPERATOR
        )
        assert (
            control.request_bulk(
                s, meter_ids=ids, kind="read_now", request_key="bulk1", reason="survey", **OPERATOR
            )
            == bulk
        )
        with pytest.raises(ConflictError):
            control.request_bulk(
                s, meter_ids=ids[:2], kind="read_now", request_key="bulk1", reason="survey", **OPERATOR
            )
    with factory() as s, s.begin():
        assert control.send_due(s, sender).sent == 3
    clock.advance(timedelta(seconds=30))
    with factory() as s, s.begin():
        result = control.send_due(s, sender)
    assert (result.sent, result.waiting_rate_limit) == (0, 4)
    clock.advance(timedelta(seconds=31))
    with factory() as s, s.begin():
        assert control.send_due(s, sender).sent == 3
        cancelled = control.cancel_bulk(s, bulk.id, reason="enough", **OPERATOR)
    assert cancelled.cancelled_at is not None
    with factory() as s:
        states = [control.get(s, c).state for c in bulk.command_ids]
    assert states.count(CommandState.SENT) == 6
    assert states.count(CommandState.CANCELLED) == 1
    with factory() as s, pytest.raises(ConflictError, match="cannot be cancelled"):
        control.cancel(s, bulk.command_ids[0], reason="late", **OPERATOR)


def test_unknown_meter_at_the_head_end_fails_the_command(
    factory: sessionmaker[Session], control: ControlService, world: World, clock: ManualClock
) -> None:
    class Unknown:
        def send_command(self, serial: str, command: object) -> object:
            raise NotFoundError(f"no meter with serial {serial!r}")

    with factory() as s, s.begin():
        cmd = disconnect(control, s, world.home.id)
        control.send_due(s, Unknown())
        final = control.get(s, cmd.id)
    assert final.state is CommandState.FAILED
    assert "KE0001" in final.detail


def test_policy_is_stored_per_site_and_checked(
    factory: sessionmaker[Session], control: ControlService, world: World
) -> None:
    with factory() as s, s.begin():
        assert control.get_policy(s, world.site.id).stored is False
        stored = control.set_policy(
            s, world.site.id, reason="regulator", night_start_hour=20, night_end_hour=6, **OPERATOR
        )
        assert (stored.night_start_hour, stored.night_end_hour, stored.stored) == (20, 6, True)
        with pytest.raises(ValidationError, match="night_end_hour"):
            control.set_policy(s, world.site.id, reason="x", night_end_hour=24, **OPERATOR)
        with pytest.raises(ValidationError, match="unknown settings"):
            control.set_policy(s, world.site.id, reason="x", curfew=True, **OPERATOR)
    assert CommandKind.DISCONNECT.value == "disconnect"
