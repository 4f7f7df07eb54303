"""Series at each resolution (site-local days and months, a DST day), registers, instants, flags."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session

from openami.common.clock import ManualClock
from openami.common.errors import ValidationError
from openami.common.obis import ACTIVE_IMPORT_INTERVAL, ACTIVE_IMPORT_TOTAL
from openami.readings import queries
from openami.readings.queries import Resolution
from openami.readings.service import ReadingsService
from tests.unit.readings.test_service_support import batch, intervals, make_meter, make_site, register

# Europe/London springs forward on Sunday 29 March 2026 at 01:00 UTC: that local day has 23 hours.
START = datetime(2026, 3, 28, tzinfo=UTC)
NOW = datetime(2026, 4, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def london(session: Session, clock: ManualClock):
    clock.set(NOW)
    info = make_meter(session, make_site(session, code="LON", timezone="Europe/London"), installed_at=START)
    energies = [100] * (3 * 96)
    energies[5] = 3_000  # 12 000 W on a 13 800 W service: fine; next one is a spike
    energies[6] = 4_000
    values = intervals(START, energies)
    del values[10]  # 02:30 UTC on 28 March is missing
    ReadingsService(clock).ingest(
        session,
        [
            batch(
                info, values, registers=[register(START, 1_000), register(START + timedelta(days=1), 12_000)]
            )
        ],
    )
    session.commit()
    return info


def _series(session, meter, start, end, resolution):
    return queries.interval_series(session, meter, ACTIVE_IMPORT_INTERVAL, start, end, resolution, NOW)


def test_fifteen_minute_series_shows_missing_intervals_and_flags(session, london) -> None:
    points = _series(session, london, START, START + timedelta(hours=3), Resolution.FIFTEEN_MINUTES)
    assert len(points) == 12
    assert points[6].flags == ["spike"]
    assert points[5].flags == []
    assert (points[10].energy_wh, points[10].missing, points[10].actual) == (0, 1, 0)
    assert (points[0].start, points[0].end, points[0].energy_wh) == (
        START,
        START + timedelta(minutes=15),
        100,
    )


def test_hour_series_sums_four_intervals(session, london) -> None:
    points = _series(session, london, START, START + timedelta(hours=3), Resolution.HOUR)
    assert [(p.energy_wh, p.actual, p.missing, p.expected) for p in points] == [
        (400, 4, 0, 4),
        (7_200, 4, 0, 4),
        (300, 3, 1, 4),
    ]
    assert points[1].flags == ["spike"]


def test_day_series_follows_the_local_day_across_the_dst_change(session, london) -> None:
    end = datetime(2026, 3, 30, 23, 0, tzinfo=UTC)  # local midnight starting 31 March (BST)
    points = _series(session, london, START, end, Resolution.DAY)
    assert [(p.start, p.end) for p in points] == [
        (START, START + timedelta(days=1)),
        (datetime(2026, 3, 29, 0, 0, tzinfo=UTC), datetime(2026, 3, 29, 23, 0, tzinfo=UTC)),
        (datetime(2026, 3, 29, 23, 0, tzinfo=UTC), end),
    ]
    assert [p.expected for p in points] == [96, 92, 96]
    assert points[1].energy_wh == 9_200
    assert points[0].missing == 1
    assert points[0].energy_wh == 93 * 100 + 3_000 + 4_000


def test_month_series_is_local_and_expects_nothing_before_installation_or_after_now(session, london) -> None:
    start = datetime(2026, 3, 1, tzinfo=UTC)  # local midnight (GMT)
    end = datetime(2026, 4, 30, 23, 0, tzinfo=UTC)  # local midnight starting 1 May (BST)
    march, april = _series(session, london, start, end, Resolution.MONTH)
    assert (march.start, march.end) == (start, datetime(2026, 3, 31, 23, 0, tzinfo=UTC))
    assert (march.expected, march.actual, march.missing) == (380, 287, 93)
    assert (april.expected, april.actual, april.missing) == (52, 0, 52)  # until 11:45 UTC, the last one over


def test_a_resolution_finer_than_the_meter_is_refused(session, clock) -> None:
    slow = make_meter(session, make_site(session), interval_s=1800)
    with pytest.raises(ValidationError, match="30 min") as excinfo:
        _series(session, slow, START, START + timedelta(hours=1), Resolution.FIFTEEN_MINUTES)
    assert excinfo.value.location == "resolution"


def test_register_reads_in_a_range(session, london) -> None:
    reads = queries.register_reads(session, london.id, START, START + timedelta(days=2))
    assert [(r.obis, r.read_at, r.energy_wh) for r in reads] == [
        (ACTIVE_IMPORT_TOTAL, START, 1_000),
        (ACTIVE_IMPORT_TOTAL, START + timedelta(days=1), 12_000),
    ]
    assert (
        queries.register_reads(session, london.id, START + timedelta(seconds=1), START + timedelta(days=1))
        == []
    )


def test_flags_overlapping_a_range(session, london) -> None:
    found = queries.flags(session, london.id, START, START + timedelta(days=1))
    assert {f.rule for f in found} == {"spike", "gap"}  # the hole leaves no interval sum to compare
    assert queries.flags(session, london.id, START + timedelta(days=2), START + timedelta(days=3)) == []
