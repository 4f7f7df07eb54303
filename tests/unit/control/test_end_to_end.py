"""End to end on SQLite: control -> head-end -> in-process transport -> simulated meters (the device model) and
back. A meter receives a disconnect, opens its relay, replies with its relay state, and the command ends
confirmed; a meter whose link is down never answers and its command ends unconfirmed, never done."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from openami.common.clock import ManualClock
from openami.config import Settings
from openami.control.interfaces import CommandState
from openami.control.reports import RelayReportSink
from openami.control.service import ControlService
from openami.headend.codec import Frame
from openami.headend.inprocess import InProcessTransport
from openami.headend.service import HeadEnd
from openami.readings.service import ReadingsService
from openami.registry.service import RegistryService
from openami.simulator.fleet import Fleet

START = datetime(2026, 3, 3, 7, 0, tzinfo=UTC)  # Tuesday 10:00 in Nairobi: disconnects allowed
OPERATOR = {"actor": "alice", "role": "operator", "reason": "arrears"}


def test_disconnect_is_confirmed_by_the_meter_and_a_silent_meter_ends_unconfirmed(
    factory: sessionmaker[Session], registry: RegistryService, clock: ManualClock
) -> None:
    clock.set(START)
    fleet = Fleet.build(3, 11, START, "ke", "Africa/Nairobi", meters_per_transformer=10)
    customers = [spec for spec in fleet.specs if spec.role == "customer"]
    with factory() as s, s.begin():
        site = registry.create_site(
            s, code="ke", name="Kenya", timezone="Africa/Nairobi", currency="KES", holiday_country="KE"
        )
        ids = {
            spec.serial: registry.create_meter(
                s,
                site_id=site.id,
                serial=spec.serial,
                model="sim",
                rated_current_a=spec.rated_current_a,
                auth_key=spec.key,
                phases=spec.phases,
            ).id
            for spec in customers
        }
    answering, silent = customers[0].serial, customers[1].serial

    def radio(serial: str, frame: Frame) -> list[Frame]:
        return [] if serial == silent else fleet.handle_command(serial, frame)

    control = ControlService(clock, registry)
    headend = HeadEnd(
        factory, RelayReportSink(ReadingsService(clock), control), clock, Settings(), meters=registry
    )
    transport = InProcessTransport(background=False, on_command=radio)
    headend.serve(transport)

    with factory() as s, s.begin():
        control.set_policy(
            s,
            site.id,
            first_retry_s=60,
            max_attempts=3,
            command_ttl_s=900,
            actor="alice",
            role="operator",
            reason="test",
        )
        cut = control.request(s, meter_id=ids[answering], kind="disconnect", request_key="cut-1", **OPERATOR)
        lost = control.request(s, meter_id=ids[silent], kind="disconnect", request_key="cut-2", **OPERATOR)
    assert fleet.meter(answering).relay_connected

    with factory() as s, s.begin():
        assert control.send_due(s, headend).sent == 2
    assert not fleet.meter(answering).relay_connected  # the device obeyed
    assert fleet.meter(silent).relay_connected  # never heard it
    clock.advance(timedelta(seconds=2))
    assert transport.pump() == 1  # the answering meter's reply, with its relay state
    with factory() as s:
        confirmed = control.get(s, cut.id)
        assert confirmed.state is CommandState.CONFIRMED
        assert confirmed.reported_connected is False
        assert control.get(s, lost.id).state is CommandState.SENT

    for _ in range(16):
        clock.advance(timedelta(minutes=1))
        with factory() as s, s.begin():
            control.send_due(s, headend)
        transport.pump()
    with factory() as s:
        final = control.get(s, lost.id)
        assert final.state is CommandState.UNCONFIRMED
        assert final.attempts == 3
        assert control.get(s, cut.id).state is CommandState.CONFIRMED

    with factory() as s, s.begin():
        back = control.request(s, meter_id=ids[answering], kind="reconnect", request_key="pay-1", **OPERATOR)
    with factory() as s, s.begin():  # its own transaction: the head-end writes its counter meanwhile
        control.send_due(s, headend)
    assert fleet.meter(answering).relay_connected
    transport.pump()
    with factory() as s:
        assert control.get(s, back.id).state is CommandState.CONFIRMED
