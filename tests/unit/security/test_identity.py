"""Users, logins (password, second factor, throttling), roles per site and API tokens, on SQLite."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from openami.common.clock import ManualClock
from openami.common.errors import ConflictError, NotFoundError, ValidationError
from openami.registry.service import RegistryService
from openami.security import identity, passwords
from openami.security.identity import (
    ADDRESS_MAX_FAILURES,
    ADDRESS_WINDOW,
    AuthRefusal,
    IdentityService,
    RoleGrant,
    TokenRefusal,
    lockout_duration,
)
from openami.security.models import ApiToken, AppUser, Role
from openami.security.passwords import Argon2Cost, PasswordCheck
from openami.security.totp import totp_code

CHEAP = Argon2Cost(time_cost=1, memory_kib=8, parallelism=1)
PASSWORD = "correct horse battery 9"
MINUTE = timedelta(minutes=1)


@pytest.fixture
def service(clock: ManualClock) -> IdentityService:
    return IdentityService(clock, cost=CHEAP)


@pytest.fixture
def db(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    with session_factory() as s:
        yield s


@pytest.fixture
def sites(db: Session, clock: ManualClock) -> tuple[int, int]:
    registry = RegistryService(clock)
    a = registry.create_site(
        db, code="NBO", name="Nairobi", timezone="Africa/Nairobi", currency="KES", holiday_country="KE"
    )
    b = registry.create_site(
        db, code="KLA", name="Kampala", timezone="Africa/Kampala", currency="UGX", holiday_country="UG"
    )
    db.commit()
    return a.id, b.id


def make_user(
    db: Session, service: IdentityService, username: str = "alice", roles: tuple[tuple[Role, int], ...] = ()
) -> int:
    user = service.create_user(db, username, username.title(), PASSWORD)
    for role, site_id in roles:
        service.grant_role(db, user.id, role, site_id)
    db.commit()
    return user.id


# -- users -------------------------------------------------------------------------------------------------


def test_a_user_is_created_with_a_lower_case_name_and_a_hashed_password(
    db: Session, service: IdentityService, clock: ManualClock
) -> None:
    info = service.create_user(db, "  Alice.Smith ", "Alice Smith", PASSWORD)
    db.commit()
    assert info.username == "alice.smith"
    assert info.created_at == clock.now()
    assert not info.disabled
    assert not info.totp_enrolled
    row = db.get(AppUser, info.id)
    assert row is not None
    assert row.password_hash.startswith("$argon2id$")
    assert PASSWORD not in row.password_hash
    assert service.get_user(db, info.id) == info


def test_a_taken_username_is_a_conflict_whatever_its_case(db: Session, service: IdentityService) -> None:
    make_user(db, service, "alice")
    with pytest.raises(ConflictError, match="'alice' is taken"):
        service.create_user(db, "ALICE", "Another Alice", PASSWORD)


@pytest.mark.parametrize(
    ("username", "display_name", "password", "where"),
    [
        ("al", "Al", PASSWORD, "username"),
        ("bad name", "Bad", PASSWORD, "username"),
        ("-dash", "Dash", PASSWORD, "username"),
        ("bob", "  ", PASSWORD, "display_name"),
        ("bob", "Bob", "short", "password"),
        ("bob", "Bob", "bob is my password 1", "password"),
    ],
)
def test_bad_user_fields_are_refused_naming_the_field(
    db: Session, service: IdentityService, username: str, display_name: str, password: str, where: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        service.create_user(db, username, display_name, password)
    assert caught.value.location == where
    assert db.scalar(select(AppUser.id)) is None


def test_unknown_user_ids_are_not_found(db: Session, service: IdentityService) -> None:
    with pytest.raises(NotFoundError, match="no user with id 99"):
        service.set_password(db, 99, PASSWORD)


# -- roles -------------------------------------------------------------------------------------------------


def test_roles_are_granted_per_site_idempotently_and_revoked(
    db: Session, service: IdentityService, sites: tuple[int, int]
) -> None:
    a, b = sites
    user_id = make_user(db, service, roles=((Role.CUSTOMER, a), (Role.AUDITOR, b)))
    service.grant_role(db, user_id, "customer", a)
    assert service.grants(db, user_id) == {RoleGrant(Role.CUSTOMER, a), RoleGrant(Role.AUDITOR, b)}
    service.revoke_role(db, user_id, Role.AUDITOR, b)
    assert service.grants(db, user_id) == {RoleGrant(Role.CUSTOMER, a)}


def test_a_role_on_an_unknown_site_or_an_unknown_role_is_refused(
    db: Session, service: IdentityService, sites: tuple[int, int]
) -> None:
    user_id = make_user(db, service)
    with pytest.raises(NotFoundError, match="no site with id 999"):
        service.grant_role(db, user_id, Role.CUSTOMER, 999)
    with pytest.raises(ValidationError, match="unknown role 'superuser'"):
        service.grant_role(db, user_id, "superuser", sites[0])


# -- login -------------------------------------------------------------------------------------------------


def test_a_customer_logs_in_with_username_and_password(
    db: Session, service: IdentityService, sites: tuple[int, int], clock: ManualClock
) -> None:
    a, _ = sites
    user_id = make_user(db, service, roles=((Role.CUSTOMER, a),))
    result = service.authenticate(db, "ALICE", PASSWORD, None, clock.now())
    assert result.ok
    assert result.refusal is None
    assert result.principal is not None
    assert result.principal.user_id == user_id
    assert result.principal.site_ids == {a}
    assert result.principal.has_role(Role.CUSTOMER, a)
    assert not result.principal.has_role(Role.CUSTOMER, a + 1)


def test_unknown_user_and_wrong_password_look_the_same_and_both_cost_one_verification(
    db: Session, service: IdentityService, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_user(db, service)
    calls: list[str] = []
    real = passwords.verify_password

    def counting(stored: str, password: str, cost: Argon2Cost) -> PasswordCheck:
        calls.append(stored)
        return real(stored, password, cost)

    monkeypatch.setattr(identity, "verify_password", counting)
    unknown = service.authenticate(db, "mallory", PASSWORD, None, clock.now())
    wrong = service.authenticate(db, "alice", "wrong password 99", None, clock.now())
    assert unknown.refusal is wrong.refusal is AuthRefusal.INVALID_CREDENTIALS
    assert unknown.message == wrong.message == "wrong username or password"
    assert unknown.retry_at is wrong.retry_at is None
    assert len(calls) == 2
    assert all(stored.startswith("$argon2id$") for stored in calls)


def test_five_failures_lock_for_a_minute_then_the_right_password_works(
    db: Session, service: IdentityService, clock: ManualClock
) -> None:
    make_user(db, service)
    for _ in range(5):
        assert service.authenticate(db, "alice", "wrong password 1", None, clock.now()).refusal is (
            AuthRefusal.INVALID_CREDENTIALS
        )
        db.commit()
    locked = service.authenticate(db, "alice", PASSWORD, None, clock.now())
    assert locked.refusal is AuthRefusal.LOCKED
    assert locked.retry_at == clock.now() + MINUTE
    assert "try again after" in locked.message
    clock.advance(MINUTE)
    assert service.authenticate(db, "alice", PASSWORD, None, clock.now()).ok
    db.commit()
    assert service.login_failures(db, "alice") == (0, None)  # a success forgets the failures


def test_guesses_during_a_lock_are_not_checked_and_do_not_extend_it(
    db: Session, service: IdentityService, clock: ManualClock
) -> None:
    make_user(db, service)
    for _ in range(5):
        service.authenticate(db, "alice", "wrong password 1", None, clock.now())
    until = clock.now() + MINUTE
    for _ in range(20):
        assert service.authenticate(db, "alice", "wrong password 2", None, clock.now()).refusal is (
            AuthRefusal.LOCKED
        )
    db.commit()
    assert service.login_failures(db, "alice") == (5, until)


def test_locks_double_up_to_fifteen_minutes_and_never_longer(
    db: Session, service: IdentityService, clock: ManualClock
) -> None:
    make_user(db, service)
    seen = []
    for _ in range(7):
        for _ in range(5):
            service.authenticate(db, "alice", "wrong password 1", None, clock.now())
        result = service.authenticate(db, "alice", "wrong password 1", None, clock.now())
        assert result.retry_at is not None
        seen.append(result.retry_at - clock.now())
        clock.set(result.retry_at)
    db.commit()
    assert seen == [MINUTE, 2 * MINUTE, 4 * MINUTE, 8 * MINUTE, 15 * MINUTE, 15 * MINUTE, 15 * MINUTE]
    assert service.authenticate(db, "alice", PASSWORD, None, clock.now()).ok


def test_lockout_duration_model() -> None:
    durations = {n: lockout_duration(n) for n in range(0, 41)}
    assert {n for n, d in durations.items() if d is not None} == {5, 10, 15, 20, 25, 30, 35, 40}
    assert durations[5] == MINUTE
    assert durations[20] == 8 * MINUTE
    assert durations[25] == durations[40] == 15 * MINUTE
    assert lockout_duration(10**6) == 15 * MINUTE


def test_the_failure_count_survives_the_transaction(
    session_factory: sessionmaker[Session], service: IdentityService, clock: ManualClock
) -> None:
    with session_factory() as s:
        make_user(s, service)
    for _ in range(5):
        with session_factory() as s:
            service.authenticate(s, "alice", "wrong password 1", None, clock.now())
            s.commit()
    with session_factory() as s:
        assert service.authenticate(s, "alice", PASSWORD, None, clock.now()).refusal is AuthRefusal.LOCKED


def test_a_new_password_lifts_the_lock(db: Session, service: IdentityService, clock: ManualClock) -> None:
    user_id = make_user(db, service)
    for _ in range(5):
        service.authenticate(db, "alice", "wrong password 1", None, clock.now())
    service.set_password(db, user_id, "a fresh Password 2")
    assert not service.authenticate(db, "alice", PASSWORD, None, clock.now()).ok
    assert service.authenticate(db, "alice", "a fresh Password 2", None, clock.now()).ok


def test_set_password_applies_the_policy_and_keeps_the_old_one_on_refusal(
    db: Session, service: IdentityService, clock: ManualClock
) -> None:
    user_id = make_user(db, service)
    with pytest.raises(ValidationError, match="username"):
        service.set_password(db, user_id, "ALICE-password-1")
    assert service.authenticate(db, "alice", PASSWORD, None, clock.now()).ok


def test_a_disabled_user_is_told_so_only_with_the_right_password(
    db: Session, service: IdentityService, clock: ManualClock
) -> None:
    user_id = make_user(db, service)
    service.set_disabled(db, user_id, True)
    assert service.authenticate(db, "alice", "wrong password 1", None, clock.now()).refusal is (
        AuthRefusal.INVALID_CREDENTIALS
    )
    assert service.authenticate(db, "alice", PASSWORD, None, clock.now()).refusal is AuthRefusal.DISABLED


def test_a_hash_at_an_old_cost_is_replaced_on_login(
    db: Session, service: IdentityService, clock: ManualClock
) -> None:
    user_id = make_user(db, service)
    stronger = IdentityService(clock, cost=Argon2Cost(time_cost=2, memory_kib=16, parallelism=1))
    assert stronger.authenticate(db, "alice", PASSWORD, None, clock.now()).ok
    row = db.get(AppUser, user_id)
    assert row is not None
    assert "$m=16,t=2,p=1$" in row.password_hash


# -- second factor -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.ADMIN, Role.OPERATOR, Role.BILLING])
def test_roles_that_cut_power_or_move_money_need_an_enrolled_second_factor(
    db: Session, service: IdentityService, sites: tuple[int, int], clock: ManualClock, role: Role
) -> None:
    make_user(db, service, roles=((Role.CUSTOMER, sites[0]), (role, sites[1])))
    result = service.authenticate(db, "alice", PASSWORD, None, clock.now())
    assert result.refusal is AuthRefusal.TOTP_NOT_ENROLLED
    assert "ask an administrator" in result.message


@pytest.mark.parametrize("role", [Role.FIELD_TECHNICIAN, Role.AUDITOR, Role.CUSTOMER])
def test_other_roles_log_in_without_a_second_factor(
    db: Session, service: IdentityService, sites: tuple[int, int], clock: ManualClock, role: Role
) -> None:
    make_user(db, service, roles=((role, sites[0]),))
    assert service.authenticate(db, "alice", PASSWORD, None, clock.now()).ok


def test_an_operator_logs_in_once_per_code(
    db: Session, service: IdentityService, sites: tuple[int, int], clock: ManualClock
) -> None:
    user_id = make_user(db, service, roles=((Role.OPERATOR, sites[0]),))
    enrolment = service.enroll_totp(db, user_id, issuer="openami")
    assert enrolment.uri.startswith("otpauth://totp/")
    assert service.get_user(db, user_id).totp_enrolled

    assert service.authenticate(db, "alice", PASSWORD, None, clock.now()).refusal is AuthRefusal.TOTP_REQUIRED
    first = service.authenticate(db, "alice", PASSWORD, totp_code(enrolment.secret, clock.now()), clock.now())
    assert first.ok
    assert first.principal is not None
    assert first.principal.has_role(Role.OPERATOR)
    # The clock fixture starts on a step boundary: 10 s later is the same 30 s step, so the same code.
    clock.advance(timedelta(seconds=10))
    again = service.authenticate(db, "alice", PASSWORD, totp_code(enrolment.secret, clock.now()), clock.now())
    assert again.refusal is AuthRefusal.TOTP_REUSED
    clock.advance(timedelta(seconds=30))
    assert service.authenticate(
        db, "alice", PASSWORD, totp_code(enrolment.secret, clock.now()), clock.now()
    ).ok


def test_a_code_replayed_in_its_window_is_refused(
    db: Session, service: IdentityService, sites: tuple[int, int], clock: ManualClock
) -> None:
    user_id = make_user(db, service, roles=((Role.BILLING, sites[0]),))
    secret = service.enroll_totp(db, user_id).secret
    code = totp_code(secret, clock.now())
    assert service.authenticate(db, "alice", PASSWORD, code, clock.now()).ok
    db.commit()
    replay = service.authenticate(db, "alice", PASSWORD, code, clock.now() + timedelta(seconds=5))
    assert replay.refusal is AuthRefusal.TOTP_REUSED
    assert "already used" in replay.message


def test_wrong_codes_count_towards_the_lock(
    db: Session, service: IdentityService, sites: tuple[int, int], clock: ManualClock
) -> None:
    user_id = make_user(db, service, roles=((Role.ADMIN, sites[0]),))
    secret = service.enroll_totp(db, user_id).secret
    right = totp_code(secret, clock.now())
    wrong = f"{(int(right) + 500_000) % 1_000_000:06d}"
    for _ in range(4):
        assert (
            service.authenticate(db, "alice", PASSWORD, wrong, clock.now()).refusal
            is AuthRefusal.TOTP_INVALID
        )
    assert service.authenticate(db, "alice", PASSWORD, "12", clock.now()).refusal is AuthRefusal.TOTP_INVALID
    assert service.authenticate(db, "alice", PASSWORD, right, clock.now()).refusal is AuthRefusal.LOCKED


def test_a_user_who_enrolled_a_second_factor_always_needs_it(
    db: Session, service: IdentityService, sites: tuple[int, int], clock: ManualClock
) -> None:
    user_id = make_user(db, service, roles=((Role.CUSTOMER, sites[0]),))
    service.enroll_totp(db, user_id)
    assert service.authenticate(db, "alice", PASSWORD, None, clock.now()).refusal is AuthRefusal.TOTP_REQUIRED


# -- API tokens --------------------------------------------------------------------------------------------


def test_a_token_is_shown_once_stored_hashed_and_resolves_to_its_scopes(
    db: Session, service: IdentityService, sites: tuple[int, int], clock: ManualClock
) -> None:
    a, b = sites
    user_id = make_user(db, service, roles=((Role.OPERATOR, a), (Role.AUDITOR, a), (Role.OPERATOR, b)))
    token_id, secret = service.issue_token(
        db, user_id, "meter import", [Role.OPERATOR], [a], timedelta(days=30)
    )
    db.commit()
    match = re.fullmatch(r"oa_([0-9a-f]{8})_[a-z2-7]{52}", secret)
    assert match is not None
    row = db.get(ApiToken, token_id)
    assert row is not None
    assert row.token_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert row.prefix == match.group(1)
    assert secret not in {row.token_hash, row.scopes, row.name}
    assert row.expires_at == clock.now() + timedelta(days=30)
    result = service.resolve_token(db, secret, clock.now())
    assert result.ok
    assert result.principal is not None
    assert result.principal.token_id == token_id
    assert result.principal.user_id == user_id
    assert result.principal.grants == {RoleGrant(Role.OPERATOR, a)}


def test_a_token_expires_at_its_ttl(
    db: Session, service: IdentityService, sites: tuple[int, int], clock: ManualClock
) -> None:
    user_id = make_user(db, service, roles=((Role.CUSTOMER, sites[0]),))
    _, secret = service.issue_token(db, user_id, "script", ["customer"], [sites[0]], timedelta(hours=1))
    assert service.resolve_token(db, secret, clock.now() + timedelta(minutes=59)).ok
    expired = service.resolve_token(db, secret, clock.now() + timedelta(hours=1))
    assert expired.refusal is TokenRefusal.EXPIRED
    assert expired.message == "this API token has expired"


def test_a_revoked_token_is_refused_and_revoking_twice_keeps_the_first_time(
    db: Session, service: IdentityService, sites: tuple[int, int], clock: ManualClock
) -> None:
    user_id = make_user(db, service, roles=((Role.CUSTOMER, sites[0]),))
    token_id, secret = service.issue_token(db, user_id, "script", ["customer"], [sites[0]], timedelta(days=1))
    service.revoke_token(db, token_id)
    revoked_at = clock.now()
    clock.advance(MINUTE)
    service.revoke_token(db, token_id)
    row = db.get(ApiToken, token_id)
    assert row is not None
    assert row.revoked_at == revoked_at
    assert service.resolve_token(db, secret, clock.now()).refusal is TokenRefusal.REVOKED
    with pytest.raises(NotFoundError, match="no API token with id 999"):
        service.revoke_token(db, 999)


def test_unknown_and_malformed_tokens_are_refused(
    db: Session, service: IdentityService, sites: tuple[int, int], clock: ManualClock
) -> None:
    user_id = make_user(db, service, roles=((Role.CUSTOMER, sites[0]),))
    _, secret = service.issue_token(db, user_id, "script", ["customer"], [sites[0]], timedelta(days=1))
    forged = secret[:-1] + ("a" if secret[-1] != "a" else "b")
    assert service.resolve_token(db, forged, clock.now()).refusal is TokenRefusal.UNKNOWN
    for bad in ["", "Bearer " + secret, secret.upper(), "oa_1234_abc", secret + "x"]:
        refused = service.resolve_token(db, bad, clock.now())
        assert refused.refusal is TokenRefusal.MALFORMED
        assert "not an openami API token" in refused.message


def test_a_disabled_owner_makes_the_token_useless(
    db: Session, service: IdentityService, sites: tuple[int, int], clock: ManualClock
) -> None:
    user_id = make_user(db, service, roles=((Role.CUSTOMER, sites[0]),))
    _, secret = service.issue_token(db, user_id, "script", ["customer"], [sites[0]], timedelta(days=1))
    service.set_disabled(db, user_id, True)
    assert service.resolve_token(db, secret, clock.now()).refusal is TokenRefusal.DISABLED


def test_taking_a_role_from_a_person_takes_it_from_their_tokens(
    db: Session, service: IdentityService, sites: tuple[int, int], clock: ManualClock
) -> None:
    a, b = sites
    user_id = make_user(db, service, roles=((Role.AUDITOR, a), (Role.AUDITOR, b)))
    _, secret = service.issue_token(db, user_id, "report", ["auditor"], [a, b], timedelta(days=1))
    service.revoke_role(db, user_id, Role.AUDITOR, b)
    principal = service.resolve_token(db, secret, clock.now()).principal
    assert principal is not None
    assert principal.grants == {RoleGrant(Role.AUDITOR, a)}


@pytest.mark.parametrize(
    ("name", "roles", "site_index", "ttl", "where", "words"),
    [
        ("x", ["billing"], [0], timedelta(days=1), "roles", "holds billing on none"),
        ("x", ["customer"], [1], timedelta(days=1), "roles", "holds customer on none"),
        ("x", ["customer"], [0, 1], timedelta(days=1), "site_ids", "none of these roles on site"),
        ("x", ["root"], [0], timedelta(days=1), "roles", "unknown role 'root'"),
        ("x", [], [0], timedelta(days=1), "roles", "at least one role"),
        ("x", ["customer"], [], timedelta(days=1), "site_ids", "at least one site"),
        ("  ", ["customer"], [0], timedelta(days=1), "token name", "1 to 100 characters"),
        ("x", ["customer"], [0], timedelta(0), "ttl", "must be positive"),
        ("x", ["customer"], [0], timedelta(days=400), "ttl", "at most 366 days"),
    ],
)
def test_a_token_cannot_exceed_its_owner(
    db: Session,
    service: IdentityService,
    sites: tuple[int, int],
    name: str,
    roles: list[str],
    site_index: list[int],
    ttl: timedelta,
    where: str,
    words: str,
) -> None:
    user_id = make_user(db, service, roles=((Role.CUSTOMER, sites[0]),))
    with pytest.raises(ValidationError, match=words) as caught:
        service.issue_token(db, user_id, name, roles, [sites[i] for i in site_index], ttl)
    assert caught.value.location == where
    assert db.scalar(select(ApiToken.id)) is None


def test_guesses_from_one_address_never_lock_the_person_out_from_another(
    db: Session, service: IdentityService, clock: ManualClock
) -> None:
    make_user(db, service)
    for _ in range(4):  # an attacker keeps the account locked for their own address, hour after hour
        for _ in range(5):
            service.authenticate(db, "alice", "a guess 12345678", None, clock.now(), "203.0.113.9")
        assert service.authenticate(db, "alice", PASSWORD, None, clock.now(), "203.0.113.9").refusal is (
            AuthRefusal.LOCKED
        )
        # ... while the real person, from home, signs in every time.
        assert service.authenticate(db, "alice", PASSWORD, None, clock.now(), "198.51.100.7").ok
        clock.advance(timedelta(minutes=15))
    db.commit()
    assert service.login_failures(db, "alice", "203.0.113.9")[0] == 20
    assert service.login_failures(db, "alice", "198.51.100.7") == (0, None)


def test_an_address_spraying_many_names_is_throttled_as_a_whole(
    db: Session, service: IdentityService, clock: ManualClock
) -> None:
    make_user(db, service)
    sprayer = "203.0.113.66"
    for n in range(ADDRESS_MAX_FAILURES):  # a few guesses at each of many names, real or not
        service.authenticate(db, f"user{n // 2}", "Summer2026!x", None, clock.now(), sprayer)
    throttled = service.authenticate(db, "alice", PASSWORD, None, clock.now(), sprayer)
    assert throttled.refusal is AuthRefusal.LOCKED  # even the right password, from there
    assert throttled.retry_at == clock.now() + ADDRESS_WINDOW
    assert service.authenticate(db, "alice", PASSWORD, None, clock.now(), "198.51.100.7").ok
    clock.advance(ADDRESS_WINDOW + timedelta(seconds=1))
    assert service.authenticate(db, "alice", PASSWORD, None, clock.now(), sprayer).ok
