"""set_load_limit in relay control: its argument checked at request, sent as the wire command, confirmed only by
the meter reporting that limit; and a meter that may have a limit does not confirm a disconnect from a periodic
push showing its relay open (a load-limit trip), only from its reply. End to end over the in-process transport
with a simulated meter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from openami.common.clock import ManualClock
from openami.common.errors import ConflictError, ValidationError
from openami.config import Settings
from openami.control.interfaces import CommandKind, CommandState
from openami.control.reports import RelayReportSink
from openami.control.service import ControlService
from openami.device import EventCode, Sample
from openami.headend.codec import Command, Frame
from openami.headend.inprocess import InProcessTransport
from openami.headend.service import HeadEnd
from openami.readings.service import ReadingsService
from openami.registry.service import RegistryService
from openami.simulator.fleet import Fleet
from openami.simulator.uplink import push_content
from tests.unit.control.conftest import FakeSender, World

OPERATOR = {"actor": "alice", "role": "operator", "reason": "supply shortage"}


def test_the_limit_is_checked_when_requested(
    factory: sessionmaker[Session], control: ControlService, world: World
) -> None:
    with factory() as s, s.begin():
        for bad, message in [
            (None, "set_load_limit needs limit_w"),
            (-1, "whole number of W"),
            (2.5, "whole number of W"),
            (True, "whole number of W"),
            (1_000_001, "whole number of W"),
            # the home meter's service point is rated 40 A: 230 V x 40 A = 9200 W
            (9201, "above what meter KE0001's service can draw"),
        ]:
            with pytest.raises(ValidationError, match=message) as err:
                control.request(
                    s, meter_id=world.home.id, kind="set_load_limit", request_key="l", limit_w=bad, **OPERATOR
                )
            assert err.value.location == "limit_w"
        with pytest.raises(ValidationError, match="only set_load_limit takes a limit"):
            control.request(
                s, meter_id=world.home.id, kind="disconnect", request_key="d", limit_w=100, **OPERATOR
            )


def test_idempotent_per_key_sent_as_the_wire_command_and_confirmed_only_by_the_limit_asked(
    factory: sessionmaker[Session],
    control: ControlService,
    world: World,
    sender: FakeSender,
    clock: ManualClock,
) -> None:
    with factory() as s, s.begin():
        made = control.request(
            s, meter_id=world.home.id, kind="set_load_limit", request_key="l1", limit_w=2000, **OPERATOR
        )
        again = control.request(
            s, meter_id=world.home.id, kind="set_load_limit", request_key="l1", limit_w=2000, **OPERATOR
        )
        assert again.id == made.id
        assert made.kind is CommandKind.SET_LOAD_LIMIT
        assert made.limit_w == 2000
        with pytest.raises(ConflictError, match="set_load_limit 2000 W"):
            control.request(
                s, meter_id=world.home.id, kind="set_load_limit", request_key="l1", limit_w=1500, **OPERATOR
            )
    with factory() as s, s.begin():
        assert control.send_due(s, sender).sent == 1
    assert sender.sent == [("KE0001", Command("set_load_limit", f"ctl-{made.id}-1", {"limit_w": "2000"}))]
    with factory() as s, s.begin():
        assert control.on_reply(s, world.home.id, clock.now()) == []  # a bare reply is not the limit
        assert control.on_load_limit_report(s, world.home.id, 0.0, clock.now()) == []  # not what was asked
        assert control.get(s, made.id).state is CommandState.SENT
        confirmed = control.on_load_limit_report(s, world.home.id, 2000.0, clock.now())
        assert [c.id for c in confirmed] == [made.id]
        assert confirmed[0].state is CommandState.CONFIRMED
        assert confirmed[0].detail == "meter reports load limit 2000 W in force"


def test_a_push_showing_the_relay_open_does_not_confirm_a_disconnect_when_a_limit_may_trip(
    factory: sessionmaker[Session],
    control: ControlService,
    world: World,
    sender: FakeSender,
    clock: ManualClock,
) -> None:
    with factory() as s, s.begin():
        assert not control.load_limit_may_trip(s, world.home.id)
        limit = control.request(
            s,
            meter_id=world.home.id,
            kind="set_load_limit",
            request_key="l1",
            limit_w=2000,
            ttl=timedelta(minutes=10),
            **OPERATOR,
        )
    with factory() as s, s.begin():
        control.send_due(s, sender)  # sent, never confirmed: the meter may have it all the same
    with factory() as s, s.begin():
        assert control.load_limit_may_trip(s, world.home.id)
        cut = control.request(s, meter_id=world.home.id, kind="disconnect", request_key="d1", **OPERATOR)
    clock.advance(timedelta(minutes=11))  # the limit command's deadline passes: unconfirmed; the cut goes out
    with factory() as s, s.begin():
        control.send_due(s, sender)
        assert control.get(s, limit.id).state in (CommandState.UNCONFIRMED, CommandState.EXPIRED)
    with factory() as s, s.begin():
        control.send_due(s, sender)
        assert control.get(s, cut.id).state is CommandState.SENT
    with factory() as s, s.begin():
        at = clock.now() + timedelta(seconds=5)
        assert control.on_relay_report(s, world.home.id, False, at) == []  # a push: maybe the limiter
        assert control.get(s, cut.id).state is CommandState.SENT
        assert control.get(s, cut.id).reported_connected is False
        done = control.on_relay_report(s, world.home.id, False, at, in_reply=True)
        assert [c.id for c in done] == [cut.id]
    with factory() as s, s.begin():  # once the limit is confirmed removed, pushes confirm again
        off = control.request(
            s, meter_id=world.home.id, kind="set_load_limit", request_key="l0", limit_w=0, **OPERATOR
        )
    with factory() as s, s.begin():
        control.send_due(s, sender)
        control.on_load_limit_report(s, world.home.id, 0, clock.now())
        assert control.get(s, off.id).state is CommandState.CONFIRMED
        assert not control.load_limit_may_trip(s, world.home.id)


def test_end_to_end_the_meter_takes_the_limit_replies_with_it_and_a_trip_confirms_no_disconnect(
    factory: sessionmaker[Session], registry: RegistryService, clock: ManualClock
) -> None:
    start = datetime(2026, 3, 3, 7, 0, tzinfo=UTC)  # Tuesday 10:00 in Nairobi
    clock.set(start)
    fleet = Fleet.build(2, 5, start, "ke", "Africa/Nairobi", meters_per_transformer=10)
    spec = next(spec for spec in fleet.specs if spec.role == "customer")
    with factory() as s, s.begin():
        site = registry.create_site(
            s, code="ke", name="Kenya", timezone="Africa/Nairobi", currency="KES", holiday_country="KE"
        )
        meter_id = registry.create_meter(
            s,
            site_id=site.id,
            serial=spec.serial,
            model="sim",
            rated_current_a=spec.rated_current_a,
            auth_key=spec.key,
            phases=spec.phases,
        ).id
    link_up = True

    def radio(serial: str, frame: Frame) -> list[Frame]:
        return fleet.handle_command(serial, frame) if link_up else []

    control = ControlService(clock, registry)
    headend = HeadEnd(
        factory, RelayReportSink(ReadingsService(clock), control), clock, Settings(), meters=registry
    )
    transport = InProcessTransport(background=False, on_command=radio)
    headend.serve(transport)

    with factory() as s, s.begin():
        limit = control.request(
            s, meter_id=meter_id, kind="set_load_limit", request_key="lim-1", limit_w=1000, **OPERATOR
        )
    with factory() as s, s.begin():
        assert control.send_due(s, headend).sent == 1
    device = fleet.meter(spec.serial)
    assert device.load_limit_w == 1000  # the device took it
    assert device.events_since(0)[-1].code is EventCode.LOAD_LIMIT_SET
    clock.advance(timedelta(seconds=2))
    assert transport.pump() == 1  # its reply, carrying 0-0:17.0.0 = 1000
    with factory() as s:
        done = control.get(s, limit.id)
        assert done.state is CommandState.CONFIRMED
        assert done.detail == "meter reports load limit 1000 W in force"

    # A disconnect goes out but the meter never hears it; meanwhile its limiter trips on a 3 kW load.
    with factory() as s, s.begin():
        cut = control.request(s, meter_id=meter_id, kind="disconnect", request_key="cut-1", **OPERATOR)
    link_up = False
    with factory() as s, s.begin():
        assert control.send_due(s, headend).sent == 1
    t = start.timestamp()
    device.step(t, 60.0, Sample(230.0, 3000.0 / 230.0 / spec.phases, 1.0))
    assert not device.relay_connected
    assert device.load_limit_tripped
    # The meter pushes: its relay open, and the trip among its events.
    content = push_content(device, t + 60, 0, captures_export=False)
    assert EventCode.LOAD_LIMIT_EXCEEDED.value in [e.code for e in content.events]
    # Signed by the fleet's own encoder, so the meter's up-link counter stays in step for its later reply.
    push = fleet._encode(fleet._sim(spec.serial), content, kind="data")
    clock.set(start + timedelta(seconds=62))
    transport.submit([push])
    assert transport.pump() == 1
    with factory() as s:
        still = control.get(s, cut.id)
        assert still.state is CommandState.SENT  # a limiter trip is not the disconnect it sent
        assert still.reported_connected is False

    # The link comes back: the retry reaches the meter, which opens (takes over) its relay and replies.
    link_up = True
    clock.advance(timedelta(minutes=3))
    with factory() as s, s.begin():
        assert control.send_due(s, headend).retried == 1
    assert not device.load_limit_tripped
    assert not device.relay_connected
    transport.pump()
    with factory() as s:
        assert control.get(s, cut.id).state is CommandState.CONFIRMED
