"""The registry CSV import: all or nothing, and every error named by row and column."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from openami.common.clock import ManualClock
from openami.common.errors import ConfigurationError, ValidationError
from openami.registry.csv_import import ImportErrors, ImportSummary, RowError, import_registry_csv
from openami.registry.models import Account, Customer, Meter, ServicePoint, Site, Transformer
from openami.registry.service import RegistryService
from openami.storage.db import make_engine, make_session_factory

from .helpers import (
    KEY,
    account_row,
    csv_text,
    customer_row,
    meter_row,
    service_point_row,
    site_row,
    transformer_row,
    write_csv,
)

EXAMPLE = Path(__file__).parents[3] / "docs" / "examples" / "registry.csv"
TABLES = (Site, Customer, Account, Transformer, ServicePoint, Meter)


def _counts(factory: sessionmaker[Session]) -> dict[str, int]:
    with factory() as session:
        return {t.__tablename__: session.scalar(select(func.count()).select_from(t)) or 0 for t in TABLES}


def _errors(factory: sessionmaker[Session], path: Path, clock: ManualClock) -> list[RowError]:
    before = _counts(factory)
    with pytest.raises(ImportErrors) as caught:
        import_registry_csv(factory, path, clock)
    assert _counts(factory) == before, "a failed import must write nothing"
    return caught.value.errors


def _error_at(errors: list[RowError], row: int, column: str) -> RowError:
    matching = [e for e in errors if (e.row, e.column) == (row, column)]
    assert matching, f"no error at row {row}, column {column!r}; got {errors}"
    return matching[0]


def test_example_file_imports_the_whole_tree(
    session_factory: sessionmaker[Session], clock: ManualClock
) -> None:
    summary = import_registry_csv(session_factory, EXAMPLE, clock)
    assert summary == ImportSummary(
        sites=1, customers=2, accounts=2, transformers=1, service_points=2, meters=3
    )
    assert summary.total == 11
    registry = RegistryService.from_settings(clock)
    with session_factory() as session:
        site = registry.site_by_code(session, "KSM")
        assert (site.timezone, site.currency, site.created_at) == ("Africa/Nairobi", "KES", clock.now())
        store = registry.meter_by_serial(session, "KSM-0002")
        assert (store.phases, store.service_rated_current_a, store.role) == (3, 63, "customer")
        assert store.installed_at == datetime(2025, 11, 3, 11, 5, tzinfo=UTC)
        assert [m.serial for m in registry.meters_for_account(session, "KSM", "A-1001")] == ["KSM-0001"]
        check = registry.meter_by_serial(session, "KSM-CHK-01")
        transformer = registry.list_transformers(session)[0]
        assert transformer.check_meter_id == check.id
        assert check.transformer_id == transformer.id
        assert len(check.auth_key) == 32


def test_bad_time_zone_on_row_7_imports_nothing(
    tmp_path: Path, session_factory: sessionmaker[Session], clock: ManualClock
) -> None:
    path = write_csv(
        tmp_path / "registry.csv",
        [
            site_row("KSM"),  # row 2
            customer_row("C-1"),  # row 3
            account_row("A-1"),  # row 4
            service_point_row("SP-1", account="A-1"),  # row 5
            meter_row("M-1", service_point="SP-1"),  # row 6
            site_row("NBO", timezone="Africa/Nairobbi"),  # row 7
            customer_row("C-2", site="NBO"),  # row 8: refers to the bad site, and must not cascade
        ],
    )
    errors = _errors(session_factory, path, clock)
    assert len(errors) == 1
    assert (errors[0].row, errors[0].column) == (7, "timezone")
    assert "Africa/Nairobbi" in errors[0].message
    assert str(errors[0]).startswith("row 7, column timezone:")


def test_import_errors_is_a_validation_error_naming_the_first_row(
    tmp_path: Path, session_factory: sessionmaker[Session], clock: ManualClock
) -> None:
    path = write_csv(tmp_path / "r.csv", [site_row(currency="KSH")])
    with pytest.raises(ValidationError) as caught:
        import_registry_csv(session_factory, path, clock)
    assert isinstance(caught.value, ImportErrors)
    assert caught.value.location == "row 2"
    assert "row 2, column currency" in str(caught.value)


def test_every_wrong_value_is_reported(
    tmp_path: Path, session_factory: sessionmaker[Session], clock: ManualClock
) -> None:
    path = write_csv(
        tmp_path / "r.csv",
        [
            site_row(currency="kes", holiday_country="KE", holiday_subdivision="CA"),  # row 2
            customer_row(email="nope"),  # row 3
            account_row(kind="credit"),  # row 4
            transformer_row(rating_kva="-5"),  # row 5
            service_point_row(rated_current_a="forty", phases="2"),  # row 6
            meter_row(
                "M 1",
                auth_key="abc",
                load_profile_interval_s="1000",
                installed_at="2025-01-01 10:00",
                role="boss",
            ),  # row 7
            meter_row("M-2", installed_at="2027-01-01T00:00:00Z"),  # row 8: after the clock's now
        ],
    )
    errors = _errors(session_factory, path, clock)
    expected = {
        (2, "currency"),
        (2, "holiday_subdivision"),
        (3, "email"),
        (4, "kind"),
        (5, "rating_kva"),
        (6, "rated_current_a"),
        (6, "phases"),
        (7, "serial"),
        (7, "auth_key"),
        (7, "load_profile_interval_s"),
        (7, "installed_at"),
        (7, "role"),
        (8, "installed_at"),
    }
    assert {(e.row, e.column) for e in errors} == expected
    assert "in the future" in _error_at(errors, 8, "installed_at").message
    assert "whole number" in _error_at(errors, 6, "rated_current_a").message
    assert [e.row for e in errors] == sorted(e.row for e in errors)


def test_missing_required_values(
    tmp_path: Path, session_factory: sessionmaker[Session], clock: ManualClock
) -> None:
    path = write_csv(
        tmp_path / "r.csv",
        [site_row(name=""), customer_row(site=""), account_row(customer=""), meter_row(auth_key="")],
    )
    errors = _errors(session_factory, path, clock)
    assert {(e.row, e.column) for e in errors} == {(2, "name"), (3, "site"), (4, "customer"), (5, "auth_key")}
    assert all(e.message == "is required" for e in errors)


def test_unknown_and_missing_columns(
    tmp_path: Path, session_factory: sessionmaker[Session], clock: ManualClock
) -> None:
    text = "record,code,name,timezon,currency,holiday_country\nsite,KSM,Kisumu,Africa/Nairobi,KES,KE\n"
    path = tmp_path / "r.csv"
    path.write_text(text)
    errors = _errors(session_factory, path, clock)
    unknown = _error_at(errors, 1, "timezon")
    assert "unknown column" in unknown.message
    missing = _error_at(errors, 1, "timezone")
    assert "missing column" in missing.message
    assert len(errors) == 2, "the missing column is reported once, on the header"


def test_header_needs_a_record_column_and_named_unique_columns(
    tmp_path: Path, session_factory: sessionmaker[Session], clock: ManualClock
) -> None:
    path = tmp_path / "r.csv"
    path.write_text("code,name,name,\nKSM,a,b,\n")
    errors = _errors(session_factory, path, clock)
    assert {(e.row, e.column) for e in errors} == {(1, "record"), (1, "name"), (1, "column 4")}


def test_semicolon_separated_file_gets_a_hint(
    tmp_path: Path, session_factory: sessionmaker[Session], clock: ManualClock
) -> None:
    path = tmp_path / "r.csv"
    path.write_text("record;code;name\nsite;KSM;Kisumu\n")
    errors = _errors(session_factory, path, clock)
    assert any("commas" in e.message for e in errors)


def test_unknown_record_type_and_unused_columns(
    tmp_path: Path, session_factory: sessionmaker[Session], clock: ManualClock
) -> None:
    path = write_csv(
        tmp_path / "r.csv",
        [site_row(serial="M-1"), {"record": "substation", "code": "S1"}, {"record": "", "code": "S2"}],
    )
    errors = _errors(session_factory, path, clock)
    assert "site records do not use this column" in _error_at(errors, 2, "serial").message
    assert "unknown record type 'substation'" in _error_at(errors, 3, "record").message
    assert "is required" in _error_at(errors, 4, "record").message


def test_row_with_more_cells_than_columns(
    tmp_path: Path, session_factory: sessionmaker[Session], clock: ManualClock
) -> None:
    text = csv_text([site_row()]) + "site,NBO,Nairobi,Africa/Nairobi,KES,KE,surplus\n"
    path = tmp_path / "r.csv"
    path.write_text(text)
    errors = _errors(session_factory, path, clock)
    assert [(e.row, e.column) for e in errors] == [(3, "")]
    assert "7 cells" in errors[0].message


def test_byte_order_mark_and_blank_lines(
    tmp_path: Path, session_factory: sessionmaker[Session], clock: ManualClock
) -> None:
    lines = csv_text([site_row(), customer_row()]).splitlines()
    text = "\n".join([lines[0], "", lines[1], ",,,,,,,,", lines[2]]) + "\n\n"
    path = tmp_path / "r.csv"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    summary = import_registry_csv(session_factory, path, clock)
    assert (summary.sites, summary.customers) == (1, 1)


def test_rows_are_numbered_as_in_the_file_counting_blank_lines(
    tmp_path: Path, session_factory: sessionmaker[Session], clock: ManualClock
) -> None:
    lines = csv_text([site_row(), customer_row(name="")]).splitlines()
    path = tmp_path / "r.csv"
    path.write_bytes(b"\xef\xbb\xbf" + "\n".join([lines[0], lines[1], "", "", lines[2]]).encode())
    errors = _errors(session_factory, path, clock)
    assert [(e.row, e.column) for e in errors] == [(5, "name")]


@pytest.mark.parametrize("content", [b"", b"\xef\xbb\xbf", b"\n\n  \n"])
def test_empty_file_is_a_clear_error(
    content: bytes, tmp_path: Path, session_factory: sessionmaker[Session], clock: ManualClock
) -> None:
    path = tmp_path / "r.csv"
    path.write_bytes(content)
    errors = _errors(session_factory, path, clock)
    assert len(errors) == 1
    assert "empty" in errors[0].message


def test_header_without_records(
    tmp_path: Path, session_factory: sessionmaker[Session], clock: ManualClock
) -> None:
    path = tmp_path / "r.csv"
    path.write_text("record,code,name\n")
    errors = _errors(session_factory, path, clock)
    assert [(e.row, e.message) for e in errors] == [(1, "the file has a header but no records")]


def test_text_that_is_not_utf8(
    tmp_path: Path, session_factory: sessionmaker[Session], clock: ManualClock
) -> None:
    path = tmp_path / "r.csv"
    path.write_bytes(csv_text([site_row(), customer_row(name="Müller")]).encode("latin-1"))
    errors = _errors(session_factory, path, clock)
    assert [e.row for e in errors] == [3]
    assert "UTF-8" in errors[0].message


def test_unclosed_quote(tmp_path: Path, session_factory: sessionmaker[Session], clock: ManualClock) -> None:
    path = tmp_path / "r.csv"
    path.write_text(csv_text([site_row()]) + 'customer,KSM,"C-1,Achieng\n')
    errors = _errors(session_factory, path, clock)
    assert any(e.row == 3 and "not valid CSV" in e.message for e in errors)


def test_duplicates_within_the_file(
    tmp_path: Path, session_factory: sessionmaker[Session], clock: ManualClock
) -> None:
    path = write_csv(
        tmp_path / "r.csv",
        [
            site_row("KSM"),  # 2
            site_row("KSM"),  # 3
            customer_row("C-1"),  # 4
            customer_row("C-1"),  # 5
            account_row("A-1"),  # 6
            account_row("A-1"),  # 7
            transformer_row("TX-1"),  # 8
            transformer_row("TX-1"),  # 9
            service_point_row("SP-1"),  # 10
            service_point_row("SP-1"),  # 11
            meter_row("M-1"),  # 12
            meter_row("M-1"),  # 13
        ],
    )
    errors = _errors(session_factory, path, clock)
    assert [(e.row, e.column) for e in errors] == [
        (3, "code"),
        (5, "reference"),
        (7, "number"),
        (9, "code"),
        (11, "code"),
        (13, "serial"),
    ]
    assert all("duplicate" in e.message and "first on row" in e.message for e in errors)


def test_same_keys_in_different_sites_are_fine(
    tmp_path: Path, session_factory: sessionmaker[Session], clock: ManualClock
) -> None:
    rows = [site_row("AAA"), site_row("BBB")]
    for site in ("AAA", "BBB"):
        rows += [
            customer_row("C-1", site=site),
            account_row("A-1", site=site),
            service_point_row("SP-1", site=site),
        ]
    summary = import_registry_csv(session_factory, write_csv(tmp_path / "r.csv", rows), clock)
    assert (summary.sites, summary.customers, summary.accounts, summary.service_points) == (2, 2, 2, 2)


def test_duplicates_against_the_database(
    tmp_path: Path, session_factory: sessionmaker[Session], clock: ManualClock
) -> None:
    import_registry_csv(session_factory, EXAMPLE, clock)
    errors = _errors(session_factory, EXAMPLE, clock)
    assert "site 'KSM' already exists in the database" in _error_at(errors, 2, "code").message
    assert "already exists" in _error_at(errors, 3, "reference").message
    assert "already exists" in _error_at(errors, 5, "number").message
    assert "already exists" in _error_at(errors, 7, "code").message
    assert "already checks transformer 'TX-01'" in _error_at(errors, 7, "check_meter").message
    assert "already exists" in _error_at(errors, 8, "code").message
    assert "already exists in the database" in _error_at(errors, 10, "serial").message
    assert "already has meter 'KSM-0001'" in _error_at(errors, 11, "service_point").message


def test_references_to_unknown_records(
    tmp_path: Path, session_factory: sessionmaker[Session], clock: ManualClock
) -> None:
    path = write_csv(
        tmp_path / "r.csv",
        [
            site_row("KSM"),  # 2
            customer_row("C-1", site="NOWHERE"),  # 3
            account_row("A-1", customer="C-404"),  # 4
            service_point_row("SP-1", account="A-404", transformer="TX-404"),  # 5
            meter_row("M-1", service_point="SP-404"),  # 6
            transformer_row("TX-1", check_meter="M-404"),  # 7
            account_row("A-2", customer="C-9", site="NOWHERE"),  # 8: only the site is reported
        ],
    )
    errors = _errors(session_factory, path, clock)
    assert "unknown site 'NOWHERE'" in _error_at(errors, 3, "site").message
    assert "unknown customer 'C-404' in site 'KSM'" in _error_at(errors, 4, "customer").message
    assert "unknown account 'A-404'" in _error_at(errors, 5, "account").message
    assert "unknown transformer 'TX-404'" in _error_at(errors, 5, "transformer").message
    assert "unknown service point 'SP-404'" in _error_at(errors, 6, "service_point").message
    assert "unknown meter 'M-404'" in _error_at(errors, 7, "check_meter").message
    assert "unknown site 'NOWHERE'" in _error_at(errors, 8, "site").message
    assert len(errors) == 7


def test_references_may_point_down_the_file_and_into_the_database(
    tmp_path: Path, session_factory: sessionmaker[Session], clock: ManualClock
) -> None:
    import_registry_csv(
        session_factory, write_csv(tmp_path / "first.csv", [site_row("KSM"), customer_row("C-1")]), clock
    )
    second = write_csv(
        tmp_path / "second.csv",
        [
            meter_row("M-1", service_point="SP-1"),  # the service point comes later
            service_point_row("SP-1", account="A-1"),
            account_row("A-1", customer="C-1"),  # the customer is in the database
        ],
    )
    summary = import_registry_csv(session_factory, second, clock)
    assert (summary.sites, summary.accounts, summary.service_points, summary.meters) == (0, 1, 1, 1)
    with session_factory() as session:
        meters = RegistryService.from_settings(clock).meters_for_account(session, "KSM", "A-1")
    assert [(m.serial, m.auth_key) for m in meters] == [("M-1", KEY)]


def test_check_meter_rules_in_the_file(
    tmp_path: Path, session_factory: sessionmaker[Session], clock: ManualClock
) -> None:
    path = write_csv(
        tmp_path / "r.csv",
        [
            site_row("KSM"),  # 2
            site_row("NBO"),  # 3
            meter_row("CUST-1"),  # 4: role customer
            meter_row("CHK-1", role="check"),  # 5
            meter_row("CHK-NBO", site="NBO", role="check"),  # 6
            transformer_row("TX-1", check_meter="CUST-1"),  # 7
            transformer_row("TX-2", check_meter="CHK-1"),  # 8
            transformer_row("TX-3", check_meter="CHK-1"),  # 9
            transformer_row("TX-4", check_meter="CHK-NBO"),  # 10
            service_point_row("SP-1"),  # 11
            meter_row("CHK-2", role="check", service_point="SP-1"),  # 12
        ],
    )
    errors = _errors(session_factory, path, clock)
    assert "needs role check" in _error_at(errors, 7, "check_meter").message
    assert "already checks transformer 'TX-2' on row 8" in _error_at(errors, 9, "check_meter").message
    assert "not in site 'KSM'" in _error_at(errors, 10, "check_meter").message
    assert "not installed at a service point" in _error_at(errors, 12, "service_point").message
    assert len(errors) == 4


def test_check_meter_rules_against_the_database(
    tmp_path: Path, session_factory: sessionmaker[Session], clock: ManualClock
) -> None:
    first = write_csv(
        tmp_path / "first.csv", [site_row("KSM"), meter_row("CUST-1"), meter_row("CHK-1", role="check")]
    )
    import_registry_csv(session_factory, first, clock)
    second = write_csv(
        tmp_path / "second.csv",
        [
            site_row("NBO"),  # 2
            transformer_row("TX-1", check_meter="CUST-1"),  # 3
            transformer_row("TX-2", check_meter="CHK-1"),  # 4: fine
            transformer_row("TX-3", site="NBO", check_meter="CHK-1"),  # 5: other site
        ],
    )
    errors = _errors(session_factory, second, clock)
    assert "needs role check" in _error_at(errors, 3, "check_meter").message
    assert "not in site 'NBO'" in _error_at(errors, 5, "check_meter").message
    assert len(errors) == 2


def test_two_meters_at_one_service_point(
    tmp_path: Path, session_factory: sessionmaker[Session], clock: ManualClock
) -> None:
    path = write_csv(
        tmp_path / "r.csv",
        [
            site_row(),
            service_point_row("SP-1"),
            meter_row("M-1", service_point="SP-1"),
            meter_row("M-2", service_point="SP-1"),
        ],
    )
    errors = _errors(session_factory, path, clock)
    assert [(e.row, e.column) for e in errors] == [(5, "service_point")]
    assert "already gets meter 'M-1' on row 4" in errors[0].message


def test_unreadable_file(tmp_path: Path, session_factory: sessionmaker[Session], clock: ManualClock) -> None:
    with pytest.raises(ValidationError, match="cannot read the registry file") as caught:
        import_registry_csv(session_factory, tmp_path / "missing.csv", clock)
    assert not isinstance(caught.value, ImportErrors)


def test_database_without_tables(tmp_path: Path, clock: ManualClock) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'bare.db'}")
    try:
        with pytest.raises(ConfigurationError, match="openami db upgrade"):
            import_registry_csv(make_session_factory(engine), EXAMPLE, clock)
    finally:
        engine.dispose()
