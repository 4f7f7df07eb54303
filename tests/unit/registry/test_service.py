"""RegistryService against SQLite: creation, lookups, MeterInfo, conflicts and reference checks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from openami.common.clock import ManualClock
from openami.common.errors import ConflictError, NotFoundError, ValidationError
from openami.registry.interfaces import NOMINAL_VOLTAGE_V
from openami.registry.service import RegistryService
from openami.registry.validation import InvalidFieldsError
from openami.security.meter_keys import MeterKeyCipher

from .helpers import KEY, KEY_HEX, Tree, make_tree


@pytest.fixture
def registry(clock: ManualClock, meter_keys: MeterKeyCipher) -> RegistryService:
    return RegistryService(clock, meter_keys)


@pytest.fixture
def tree(registry: RegistryService, session: Session) -> Tree:
    built = make_tree(registry, session)
    session.commit()
    return built


def test_site_is_stamped_with_the_clock(
    registry: RegistryService, session: Session, clock: ManualClock
) -> None:
    site = registry.create_site(
        session,
        code="LA",
        name="Los Angeles",
        timezone="America/Los_Angeles",
        currency="USD",
        holiday_country="US",
        holiday_subdivision="CA",
    )
    session.commit()
    stored = registry.site_by_code(session, "LA")
    assert stored == site
    assert stored.created_at == clock.now()
    assert stored.holiday_subdivision == "CA"


def test_invalid_site_lists_every_wrong_field(registry: RegistryService, session: Session) -> None:
    with pytest.raises(InvalidFieldsError) as caught:
        registry.create_site(
            session, code="X", name="X", timezone="Europe/Atlantis", currency="EURO", holiday_country="KE"
        )
    assert {e.location for e in caught.value.errors} == {"timezone", "currency"}
    assert registry.list_sites(session) == []


def test_meter_info_joins_site_service_point_and_account(
    tree: Tree, registry: RegistryService, session: Session
) -> None:
    info = registry.meter_by_serial(session, "KSM-0001")
    assert info == tree.meter
    assert (info.site_code, info.timezone) == ("KSM", "Africa/Nairobi")
    assert info.service_point_id == tree.service_point_id
    assert info.service_rated_current_a == 40
    assert info.account_id == tree.account_id
    assert info.transformer_id == tree.transformer_id
    assert info.auth_key == KEY
    assert info.role == "customer"
    # The service's 40 A fuse limits the 60 A meter: 1 phase × 230 V × 40 A.
    assert info.max_power_w == 1 * NOMINAL_VOLTAGE_V * 40
    assert registry.meter_info(session, info.id) == info


def test_check_meter_reports_the_transformer_it_checks(
    tree: Tree, registry: RegistryService, session: Session
) -> None:
    check = registry.meter_by_serial(session, "KSM-CHK")
    assert check.role == "check"
    assert check.transformer_id == tree.transformer_id
    assert check.service_point_id is None
    assert check.account_id is None
    assert check.max_power_w == 3 * NOMINAL_VOLTAGE_V * 200


def test_meter_info_repr_hides_the_key(tree: Tree) -> None:
    assert repr(KEY) not in repr(tree.meter)
    assert "auth_key" not in repr(tree.meter)


def test_unknown_serial_names_the_serial(registry: RegistryService, session: Session) -> None:
    with pytest.raises(NotFoundError, match="'NOPE-1'"):
        registry.meter_by_serial(session, "NOPE-1")
    with pytest.raises(NotFoundError, match="id 999"):
        registry.meter_info(session, 999)
    with pytest.raises(NotFoundError, match="'NOWHERE'"):
        registry.site_by_code(session, "NOWHERE")


def test_meter_infos_by_site_and_paged(registry: RegistryService, session: Session) -> None:
    first = make_tree(registry, session, "AAA")
    second = make_tree(registry, session, "BBB")
    session.commit()
    assert [m.serial for m in registry.meter_infos(session)] == ["AAA-CHK", "AAA-0001", "BBB-CHK", "BBB-0001"]
    assert [m.serial for m in registry.meter_infos(session, second.site_id)] == ["BBB-CHK", "BBB-0001"]
    assert [m.serial for m in registry.meter_infos(session, limit=2, offset=1)] == ["AAA-0001", "BBB-CHK"]
    assert [c.site_id for c in registry.list_customers(session, site_id=first.site_id)] == [first.site_id]
    assert len(registry.list_service_points(session)) == 2
    with pytest.raises(ValidationError) as caught:
        registry.meter_infos(session, limit=0)
    assert caught.value.location == "limit"
    with pytest.raises(ValidationError) as caught:
        registry.list_sites(session, offset=-1)
    assert caught.value.location == "offset"


def test_meters_for_account(tree: Tree, registry: RegistryService, session: Session) -> None:
    assert registry.meters_for_account(session, "KSM", "KSM-A1") == [tree.meter]
    with pytest.raises(NotFoundError, match="'KSM-A9'"):
        registry.meters_for_account(session, "KSM", "KSM-A9")
    with pytest.raises(NotFoundError, match="'ELSEWHERE'"):
        registry.meters_for_account(session, "ELSEWHERE", "KSM-A1")


def test_gets_return_what_was_created(tree: Tree, registry: RegistryService, session: Session) -> None:
    assert registry.get_site(session, tree.site_id).code == "KSM"
    assert registry.get_customer(session, tree.customer_id).reference == "KSM-C1"
    account = registry.get_account(session, tree.account_id)
    assert (account.number, account.kind, account.customer_id) == ("KSM-A1", "prepaid", tree.customer_id)
    transformer = registry.get_transformer(session, tree.transformer_id)
    assert (transformer.rating_kva, transformer.check_meter_id) == (100, tree.check_meter.id)
    point = registry.get_service_point(session, tree.service_point_id)
    assert (point.account_id, point.transformer_id, point.phases) == (tree.account_id, tree.transformer_id, 1)
    for getter in (registry.get_site, registry.get_customer, registry.get_account, registry.get_transformer):
        with pytest.raises(NotFoundError):
            getter(session, 12345)


def test_duplicates_conflict(tree: Tree, registry: RegistryService, session: Session) -> None:
    with pytest.raises(ConflictError, match="site code 'KSM'"):
        registry.create_site(
            session, code="KSM", name="again", timezone="UTC", currency="USD", holiday_country="US"
        )
    with pytest.raises(ConflictError, match="customer reference 'KSM-C1'"):
        registry.create_customer(session, site_id=tree.site_id, reference="KSM-C1", name="twin")
    with pytest.raises(ConflictError, match="account number 'KSM-A1'"):
        registry.create_account(
            session, site_id=tree.site_id, customer_id=tree.customer_id, number="KSM-A1", kind="postpaid"
        )
    with pytest.raises(ConflictError, match="transformer code 'KSM-TX1'"):
        registry.create_transformer(session, site_id=tree.site_id, code="KSM-TX1", rating_kva=50)
    with pytest.raises(ConflictError, match="service point code 'KSM-SP1'"):
        registry.create_service_point(session, site_id=tree.site_id, code="KSM-SP1", rated_current_a=10)
    with pytest.raises(ConflictError, match="meter serial 'KSM-0001'"):
        registry.create_meter(
            session, site_id=tree.site_id, serial="KSM-0001", model="x", rated_current_a=60, auth_key=KEY
        )


def test_one_meter_per_service_point(tree: Tree, registry: RegistryService, session: Session) -> None:
    with pytest.raises(ConflictError, match="already has meter 'KSM-0001'"):
        registry.create_meter(
            session,
            site_id=tree.site_id,
            serial="KSM-0002",
            model="x",
            rated_current_a=60,
            auth_key=KEY,
            service_point_id=tree.service_point_id,
        )


def test_one_transformer_per_check_meter(tree: Tree, registry: RegistryService, session: Session) -> None:
    with pytest.raises(ConflictError, match="already the check meter of transformer 'KSM-TX1'"):
        registry.create_transformer(
            session, site_id=tree.site_id, code="KSM-TX2", rating_kva=50, check_meter_id=tree.check_meter.id
        )


def test_check_meter_must_have_role_check(tree: Tree, registry: RegistryService, session: Session) -> None:
    with pytest.raises(ValidationError, match="needs role check") as caught:
        registry.create_transformer(
            session, site_id=tree.site_id, code="KSM-TX2", rating_kva=50, check_meter_id=tree.meter.id
        )
    assert caught.value.location == "check_meter_id"


def test_check_meter_is_not_installed_at_a_service_point(
    registry: RegistryService, session: Session, tree: Tree
) -> None:
    point = registry.create_service_point(session, site_id=tree.site_id, code="KSM-SP2", rated_current_a=40)
    with pytest.raises(ValidationError, match="not installed at a service point") as caught:
        registry.create_meter(
            session,
            site_id=tree.site_id,
            serial="KSM-CHK2",
            model="x",
            rated_current_a=60,
            auth_key=KEY,
            role="check",
            service_point_id=point.id,
        )
    assert caught.value.location == "service_point_id"


def test_references_must_exist_and_share_the_site(registry: RegistryService, session: Session) -> None:
    home = make_tree(registry, session, "HOME")
    away = make_tree(registry, session, "AWAY")
    with pytest.raises(ValidationError, match="no site with id 999") as caught:
        registry.create_customer(session, site_id=999, reference="C", name="n")
    assert caught.value.location == "site_id"
    with pytest.raises(ValidationError, match="no customer with id 999") as caught:
        registry.create_account(session, site_id=home.site_id, customer_id=999, number="N", kind="prepaid")
    assert caught.value.location == "customer_id"
    with pytest.raises(
        ValidationError, match=f"no customer with id {away.customer_id} in site {home.site_id}"
    ) as caught:
        registry.create_account(
            session, site_id=home.site_id, customer_id=away.customer_id, number="N", kind="prepaid"
        )
    assert caught.value.location == "customer_id"
    with pytest.raises(ValidationError) as caught:
        registry.create_service_point(
            session, site_id=home.site_id, code="SP9", rated_current_a=40, transformer_id=away.transformer_id
        )
    assert caught.value.location == "transformer_id"
    with pytest.raises(ValidationError) as caught:
        registry.create_service_point(
            session, site_id=home.site_id, code="SP9", rated_current_a=40, account_id=away.account_id
        )
    assert caught.value.location == "account_id"
    with pytest.raises(ValidationError) as caught:
        registry.create_meter(
            session,
            site_id=home.site_id,
            serial="M9",
            model="x",
            rated_current_a=60,
            auth_key=KEY,
            service_point_id=away.service_point_id,
        )
    assert caught.value.location == "service_point_id"
    with pytest.raises(ValidationError) as caught:
        registry.create_transformer(
            session, site_id=home.site_id, code="TX9", rating_kva=50, check_meter_id=away.check_meter.id
        )
    assert caught.value.location == "check_meter_id"


def test_meter_values_are_validated(tree: Tree, registry: RegistryService, session: Session) -> None:
    with pytest.raises(InvalidFieldsError) as caught:
        registry.create_meter(
            session,
            site_id=tree.site_id,
            serial="KSM-0009",
            model="x",
            rated_current_a=0,
            auth_key=KEY_HEX[:-2],
            phases=2,
            load_profile_interval_s=1000,
        )
    assert {e.location for e in caught.value.errors} == {
        "rated_current_a",
        "auth_key",
        "phases",
        "load_profile_interval_s",
    }
    assert KEY_HEX[:-2] not in str(caught.value)


def test_installation_cannot_be_in_the_future(
    tree: Tree, registry: RegistryService, session: Session, clock: ManualClock
) -> None:
    with pytest.raises(ValidationError, match="in the future") as caught:
        registry.create_meter(
            session,
            site_id=tree.site_id,
            serial="KSM-0009",
            model="x",
            rated_current_a=60,
            auth_key=KEY,
            installed_at=clock.now() + timedelta(hours=1),
        )
    assert caught.value.location == "installed_at"
    installed = registry.create_meter(
        session,
        site_id=tree.site_id,
        serial="KSM-0010",
        model="x",
        rated_current_a=60,
        auth_key=KEY,
        installed_at=datetime(2025, 1, 1, 3, 0, tzinfo=UTC),
    )
    assert installed.installed_at == datetime(2025, 1, 1, 3, 0, tzinfo=UTC)


def test_nothing_is_committed_by_the_service(
    registry: RegistryService, session_factory: sessionmaker[Session]
) -> None:
    with session_factory() as first:
        registry.create_site(
            first, code="TMP", name="t", timezone="UTC", currency="USD", holiday_country="US"
        )
        first.rollback()
    with session_factory() as second:
        assert registry.list_sites(second) == []


def test_meters_are_looked_up_together_and_unknown_ones_left_out(
    tree: Tree, registry: RegistryService, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    one = registry.meter_by_serial(session, "KSM-0001")
    check = registry.meter_by_serial(session, "KSM-CHK")
    assert registry.meters_by_serial(session, ["KSM-CHK", "NOPE-1", "KSM-0001", "KSM-0001"]) == {
        "KSM-0001": one,
        "KSM-CHK": check,
    }
    assert registry.meters_by_id(session, {one.id, check.id, 999}) == {one.id: one, check.id: check}
    assert registry.meters_by_serial(session, []) == {}
    # More meters than one IN list takes are looked up in several queries, and none is lost.
    monkeypatch.setattr("openami.registry.service.LOOKUP_CHUNK", 1)
    assert registry.meters_by_id(session, [check.id, one.id]) == {one.id: one, check.id: check}
