"""The readings HTTP API on a small app over SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from openami.bootstrap import bootstrap
from openami.common.clock import ManualClock
from openami.common.obis import ACTIVE_POWER_IMPORT, VOLTAGE_L1
from openami.config import Settings
from openami.readings.api import router
from openami.readings.interfaces import InstantValue
from openami.readings.service import ReadingsService
from openami.registry.interfaces import MeterInfo
from openami.security.models import Role
from tests.auth_helpers import make_person, token_client
from tests.unit.readings.test_service_support import batch, intervals, make_meter, make_site, register

DAY_START = datetime(2026, 3, 1, 21, 0, tzinfo=UTC)  # local midnight of 2 March in Nairobi (UTC+3)
NOW = datetime(2026, 3, 3, 6, 0, tzinfo=UTC)


@pytest.fixture
def client(
    sqlite_engine: Engine, sqlite_url: str, clock: ManualClock, meter: MeterInfo
) -> Iterator[TestClient]:
    """An operator of the meters' site, with an API token."""
    app = FastAPI()
    app.include_router(router)
    container = bootstrap(Settings(database_url=sqlite_url), clock=clock, engine=sqlite_engine)
    app.state.container = container
    operator = make_person(container, "operator1", [(Role.OPERATOR, meter.site_id)])
    with token_client(app, container, operator, [Role.OPERATOR], [meter.site_id]) as test_client:
        yield test_client


@pytest.fixture
def meter(session_factory: sessionmaker[Session], clock: ManualClock) -> MeterInfo:
    clock.set(NOW)
    with session_factory() as session:
        site = make_site(session)
        info = make_meter(session, site, serial="A1", installed_at=DAY_START, account_number="ACC-1")
        make_meter(session, site, serial="B2", installed_at=DAY_START)
        values = intervals(DAY_START, [100] * 96)
        del values[40]
        seen = DAY_START + timedelta(days=1)
        live = [InstantValue(ACTIVE_POWER_IMPORT, seen, 1_234.0), InstantValue(VOLTAGE_L1, seen, 231.5)]
        ReadingsService(clock).ingest(
            session,
            [
                batch(info, values, registers=[register(DAY_START, 500), register(seen, 10_100)]),
                batch(info, received_at=seen + timedelta(seconds=10), instants=live),
            ],
        )
        session.commit()
    return info


def _params(**extra: str) -> dict[str, str]:
    return {"start": "2026-03-02T00:00:00+03:00", "end": "2026-03-03T00:00:00+03:00", **extra}


def test_latest_instants_in_utc_with_the_site_zone(client, meter) -> None:
    body = client.get("/api/v1/meters/A1/readings/instants").json()
    assert body["serial"] == "A1"
    assert body["timezone"] == "Africa/Nairobi"
    power = next(v for v in body["values"] if v["obis"] == ACTIVE_POWER_IMPORT)
    assert (power["value"], power["unit"], power["read_at"]) == (1234.0, "W", "2026-03-02T21:00:00Z")


def test_interval_series_per_day_and_hour(client, meter) -> None:
    day = client.get("/api/v1/meters/A1/readings/intervals", params=_params(resolution="day"))
    assert day.status_code == 200, day.text
    (point,) = day.json()["points"]
    assert (point["energy_wh"], point["actual"], point["missing"], point["expected"]) == (9_500, 95, 1, 96)
    assert point["local_start"] == "2026-03-02T00:00:00+03:00"
    hours = client.get("/api/v1/meters/A1/readings/intervals", params=_params(resolution="hour")).json()[
        "points"
    ]
    assert len(hours) == 24
    assert hours[10]["missing"] == 1
    assert "gap" in hours[10]["flags"]


def test_a_plus_sign_decoded_as_a_space_is_still_an_offset(client, meter) -> None:
    url = "/api/v1/meters/A1/readings/intervals?start=2026-03-02T00:00:00+03:00&end=2026-03-03T00:00:00+03:00"
    response = client.get(url + "&resolution=day")
    assert response.status_code == 200, response.text


def test_naive_instants_are_refused_saying_so(client, meter) -> None:
    response = client.get(
        "/api/v1/meters/A1/readings/intervals",
        params={"start": "2026-03-02T00:00:00", "end": "2026-03-03T00:00:00Z"},
    )
    assert response.status_code == 422
    assert response.json()["location"] == "start"
    assert "no UTC offset" in response.json()["detail"]


def test_bad_ranges_and_resolutions_are_422(client, meter) -> None:
    too_long = client.get(
        "/api/v1/meters/A1/readings/intervals",
        params={"start": "2026-01-01T00:00:00Z", "end": "2026-03-01T00:00:00Z", "resolution": "15min"},
    )
    assert too_long.status_code == 422
    assert "31 days" in too_long.json()["detail"]
    backwards = client.get(
        "/api/v1/meters/A1/readings/intervals",
        params={"start": "2026-03-02T00:00:00Z", "end": "2026-03-01T00:00:00Z"},
    )
    assert backwards.status_code == 422
    assert backwards.json()["location"] == "end"
    weekly = client.get("/api/v1/meters/A1/readings/intervals", params=_params(resolution="week"))
    assert weekly.status_code == 422
    garbage = client.get(
        "/api/v1/meters/A1/readings/intervals", params={"start": "yesterday", "end": "today"}
    )
    assert garbage.status_code == 422
    assert "ISO-8601" in garbage.json()["detail"]


def test_unknown_meter_and_account_are_404(client, meter) -> None:
    assert client.get("/api/v1/meters/NOPE/readings/instants").status_code == 404
    response = client.get("/api/v1/sites/NBO/accounts/NOPE/readings/instants")
    assert response.status_code == 404
    assert "NOPE" in response.json()["detail"]


def test_registers_completeness_and_flags(client, meter) -> None:
    reads = client.get("/api/v1/meters/A1/readings/registers", params=_params()).json()["reads"]
    assert [(r["energy_wh"], r["read_at"]) for r in reads] == [(500, "2026-03-01T21:00:00Z")]
    days = client.get(
        "/api/v1/meters/A1/readings/completeness", params={"first": "2026-03-02", "last": "2026-03-03"}
    ).json()["days"]
    assert [(d["day"], d["expected"], d["actual"], d["missing"]) for d in days] == [
        ("2026-03-02", 96, 95, 1),
        ("2026-03-03", 36, 0, 36),  # until 09:00 local (now)
    ]
    assert days[0]["percent"] == pytest.approx(98.96)
    flags = client.get("/api/v1/meters/A1/readings/flags", params=_params()).json()["flags"]
    assert [f["rule"] for f in flags] == ["gap"]


def test_account_endpoints_list_the_account_meters(client, meter) -> None:
    base = "/api/v1/sites/NBO/accounts/ACC-1/readings"
    assert [m["serial"] for m in client.get(f"{base}/instants").json()] == ["A1"]
    series = client.get(f"{base}/intervals", params=_params(resolution="day")).json()
    assert [s["points"][0]["energy_wh"] for s in series] == [9_500]
    assert client.get(f"{base}/registers", params=_params()).status_code == 200
    assert client.get(f"{base}/flags", params=_params()).status_code == 200
    assert (
        client.get(f"{base}/completeness", params={"first": "2026-03-02", "last": "2026-03-02"}).status_code
        == 200
    )


def test_operator_edit_needs_a_reason(client, meter) -> None:
    url = "/api/v1/meters/A1/readings/intervals/2026-03-02T07:00:00+00:00"
    blank = client.put(url, json={"energy_wh": 90, "reason": "  "})
    assert blank.status_code == 422
    assert "reason" in blank.text
    naive = client.put(url.replace("+00:00", ""), json={"energy_wh": 90, "reason": "x"})
    assert naive.status_code == 422
    done = client.put(url, json={"energy_wh": 90, "reason": "meter swapped, value from the old meter"})
    assert done.status_code == 200, done.text
    assert (done.json()["version"], done.json()["quality"]) == (1, "edited")  # it was the missing interval
    again = client.put(url, json={"energy_wh": 95, "reason": "corrected reading"})
    assert again.json()["version"] == 2
    day = client.get("/api/v1/meters/A1/readings/intervals", params=_params(resolution="day")).json()[
        "points"
    ][0]
    assert (day["energy_wh"], day["edited"], day["missing"]) == (9_595, 1, 0)
