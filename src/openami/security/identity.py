"""Who someone is: users, passwords, second factor, login throttling, roles per site and API tokens.

The service never commits: the caller's transaction decides, and must commit after a refused login too, so the
failure counter and lock are kept. Refusals are returned as values with a stable reason, not raised.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import json
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from openami.common.clock import Clock, ensure_aware
from openami.common.errors import ConflictError, NotFoundError, ValidationError
from openami.registry.service import RegistryService
from openami.security.models import (
    SECOND_FACTOR_ROLES,
    ApiToken,
    AppUser,
    LoginFailure,
    Role,
    UserCustomer,
    UserRole,
)
from openami.security.passwords import (
    DEFAULT_COST,
    Argon2Cost,
    check_password_policy,
    hash_password,
    verify_password,
)
from openami.security.totp import TotpRefusal, new_totp_secret, provisioning_uri, verify_totp

LOCKOUT_AFTER_FAILURES = 5
# One address failing this often (at any names) within the window is refused for the rest of it: password spraying.
ADDRESS_MAX_FAILURES = 50
ADDRESS_WINDOW = timedelta(minutes=15)
LOCKOUT_FIRST = timedelta(minutes=1)
LOCKOUT_MAX = timedelta(minutes=15)
TOKEN_MAX_TTL = timedelta(days=366)

_USERNAME = re.compile(r"[a-z0-9][a-z0-9._@+-]{2,149}")
_TOKEN = re.compile(r"oa_(?P<prefix>[0-9a-f]{8})_[a-z2-7]{52}")


def lockout_duration(failed_logins: int) -> timedelta | None:
    """How long to lock an account after its `failed_logins`-th consecutive failure, or None for no lock.

    Every 5th failure locks: 1 min, then 2, 4, 8, and 15 min at most, so guessing slows to a crawl while the
    real user is never locked out for longer than 15 minutes.
    """
    if failed_logins < LOCKOUT_AFTER_FAILURES or failed_logins % LOCKOUT_AFTER_FAILURES:
        return None
    doublings = min(failed_logins // LOCKOUT_AFTER_FAILURES - 1, 4)
    return min(LOCKOUT_FIRST * (1 << doublings), LOCKOUT_MAX)


def needs_second_factor(roles: set[Role] | frozenset[Role]) -> bool:
    """Whether holding `roles` means logging in needs a TOTP code (a role that can cut power or move money)."""
    return bool(SECOND_FACTOR_ROLES & roles)


@dataclass(frozen=True, slots=True)
class RoleGrant:
    role: Role
    site_id: int


@dataclass(frozen=True, slots=True)
class Principal:
    """Someone authenticated, with what they may do where. `token_id` is set when they came with an API token."""

    user_id: int
    username: str
    grants: frozenset[RoleGrant]
    token_id: int | None = None

    @property
    def site_ids(self) -> frozenset[int]:
        return frozenset(g.site_id for g in self.grants)

    def has_role(self, role: Role, site_id: int | None = None) -> bool:
        """Whether the principal holds `role` on `site_id`, or on any site when `site_id` is None."""
        return any(g.role == role and (site_id is None or g.site_id == site_id) for g in self.grants)


@dataclass(frozen=True, slots=True)
class UserInfo:
    id: int
    username: str
    display_name: str
    created_at: datetime
    disabled: bool
    totp_enrolled: bool


class AuthRefusal(enum.StrEnum):
    INVALID_CREDENTIALS = "invalid_credentials"  # unknown user or wrong password: deliberately the same
    LOCKED = "locked"
    DISABLED = "disabled"
    TOTP_REQUIRED = "totp_required"
    TOTP_NOT_ENROLLED = "totp_not_enrolled"
    TOTP_INVALID = "totp_invalid"
    TOTP_REUSED = "totp_reused"


_AUTH_MESSAGES = {
    AuthRefusal.INVALID_CREDENTIALS: "wrong username or password",
    AuthRefusal.LOCKED: "too many failed logins",
    AuthRefusal.DISABLED: "this account is disabled",
    AuthRefusal.TOTP_REQUIRED: "a one-time code from the authenticator app is required",
    AuthRefusal.TOTP_NOT_ENROLLED: "this account's roles need a second factor, but none is enrolled: ask an administrator",
    AuthRefusal.TOTP_INVALID: "wrong or expired one-time code",
    AuthRefusal.TOTP_REUSED: "this one-time code was already used; wait for the next one",
}


@dataclass(frozen=True, slots=True)
class AuthResult:
    principal: Principal | None
    refusal: AuthRefusal | None = None
    retry_at: datetime | None = None  # set with LOCKED

    @property
    def ok(self) -> bool:
        return self.principal is not None

    @property
    def message(self) -> str:
        if self.refusal is None:
            return "logged in"
        if self.refusal is AuthRefusal.LOCKED and self.retry_at is not None:
            return f"{_AUTH_MESSAGES[self.refusal]}: try again after {self.retry_at.isoformat()}"
        return _AUTH_MESSAGES[self.refusal]


class TokenRefusal(enum.StrEnum):
    MALFORMED = "malformed"
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    REVOKED = "revoked"
    DISABLED = "disabled"


_TOKEN_MESSAGES = {
    TokenRefusal.MALFORMED: "not an openami API token (expected oa_<8 hex>_<52 base32>)",
    TokenRefusal.UNKNOWN: "unknown API token",
    TokenRefusal.EXPIRED: "this API token has expired",
    TokenRefusal.REVOKED: "this API token was revoked",
    TokenRefusal.DISABLED: "the account owning this API token is disabled",
}


@dataclass(frozen=True, slots=True)
class TokenResult:
    principal: Principal | None
    refusal: TokenRefusal | None = None

    @property
    def ok(self) -> bool:
        return self.principal is not None

    @property
    def message(self) -> str:
        return "accepted" if self.refusal is None else _TOKEN_MESSAGES[self.refusal]


@dataclass(frozen=True, slots=True)
class TokenInfo:
    id: int
    user_id: int
    name: str
    prefix: str
    roles: tuple[str, ...]
    site_ids: tuple[int, ...]
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None


def _token_info(row: ApiToken) -> TokenInfo:
    scopes = json.loads(row.scopes)
    return TokenInfo(
        id=row.id,
        user_id=row.user_id,
        name=row.name,
        prefix=row.prefix,
        roles=tuple(scopes["roles"]),
        site_ids=tuple(scopes["site_ids"]),
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
    )


class IssuedToken(NamedTuple):
    token_id: int
    secret: str  # shown once: only its SHA-256 is stored


class TotpEnrollment(NamedTuple):
    secret: str
    uri: str  # otpauth:// for a QR code


def token_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def user_info(user: AppUser) -> UserInfo:
    return UserInfo(
        id=user.id,
        username=user.username,
        display_name=user.display_name,
        created_at=user.created_at,
        disabled=user.disabled,
        totp_enrolled=user.totp_secret is not None,
    )


def _normalise_username(username: str) -> str:
    return username.strip().lower()


def _address_key(address: str | None) -> str:
    return (address or "")[:64]


class IdentityService:
    """Users, logins, roles and API tokens. Reads time only from `clock`; hashes passwords at `cost`."""

    def __init__(self, clock: Clock, cost: Argon2Cost = DEFAULT_COST) -> None:
        self._clock = clock
        self._cost = cost
        self._registry = RegistryService(clock)
        self._dummy_hash: str | None = None

    # -- users -----------------------------------------------------------------------------------------------

    @staticmethod
    def _user(session: Session, user_id: int) -> AppUser:
        user = session.get(AppUser, user_id)
        if user is None:
            raise NotFoundError(f"no user with id {user_id}")
        return user

    def create_user(self, session: Session, username: str, display_name: str, password: str) -> UserInfo:
        """A new user (username stored lower-case). Raises ValidationError for a bad field, ConflictError if taken."""
        name = _normalise_username(username)
        if not _USERNAME.fullmatch(name):
            raise ValidationError(
                "must be 3 to 150 characters: letters, digits and . _ @ + -, starting with a letter or digit",
                "username",
            )
        display_name = display_name.strip()
        if not display_name or len(display_name) > 200:
            raise ValidationError("must be 1 to 200 characters", "display_name")
        check_password_policy(password, name)
        if session.scalar(select(AppUser.id).where(AppUser.username == name)) is not None:
            raise ConflictError(f"username {name!r} is taken")
        user = AppUser(
            username=name,
            display_name=display_name,
            password_hash=hash_password(password, self._cost),
            created_at=ensure_aware(self._clock.now(), "clock"),
            disabled=False,
        )
        session.add(user)
        try:
            session.flush()
        except IntegrityError as exc:
            raise ConflictError(f"username {name!r} was taken at the same time; retry ({exc.orig})") from exc
        return user_info(user)

    def get_user(self, session: Session, user_id: int) -> UserInfo:
        return self.user_info(session, user_id)

    @staticmethod
    def user_info(session: Session, user_id: int) -> UserInfo:
        """The user `user_id`; NotFoundError when there is none. Needs no service (no clock, no hashing)."""
        return user_info(IdentityService._user(session, user_id))

    def set_password(self, session: Session, user_id: int, password: str) -> None:
        """Replace the password (after the policy) and lift any lock: for a change or an administrator's reset."""
        user = self._user(session, user_id)
        check_password_policy(password, user.username)
        user.password_hash = hash_password(password, self._cost)
        session.execute(delete(LoginFailure).where(LoginFailure.username == user.username))
        session.flush()

    def set_disabled(self, session: Session, user_id: int, disabled: bool) -> None:
        self._user(session, user_id).disabled = disabled
        session.flush()

    def enroll_totp(self, session: Session, user_id: int, issuer: str = "openami") -> TotpEnrollment:
        """Give the user a new TOTP secret (replacing any old one) and the URI to show as a QR code once."""
        user = self._user(session, user_id)
        secret = new_totp_secret()
        user.totp_secret = secret
        user.totp_last_step = None
        session.flush()
        return TotpEnrollment(secret, provisioning_uri(secret, user.username, issuer))

    # -- roles -----------------------------------------------------------------------------------------------

    def grant_role(self, session: Session, user_id: int, role: Role | str, site_id: int) -> None:
        """Let the user act as `role` on `site_id`. Granting a role already held changes nothing."""
        self._user(session, user_id)
        role = _role(role, "role")
        self._registry.get_site(session, site_id)
        if session.get(UserRole, (user_id, role, site_id)) is None:
            session.add(UserRole(user_id=user_id, role=role, site_id=site_id))
            session.flush()

    def revoke_role(self, session: Session, user_id: int, role: Role | str, site_id: int) -> None:
        role = _role(role, "role")
        session.execute(
            delete(UserRole).where(
                UserRole.user_id == user_id, UserRole.role == role, UserRole.site_id == site_id
            )
        )
        session.flush()

    def grants(self, session: Session, user_id: int) -> frozenset[RoleGrant]:
        rows = session.execute(select(UserRole.role, UserRole.site_id).where(UserRole.user_id == user_id))
        return frozenset(RoleGrant(Role(r.role), r.site_id) for r in rows)

    def users_of_sites(self, session: Session, site_ids: Iterable[int]) -> list[UserInfo]:
        """The people holding any role on any of `site_ids`, by id."""
        holders = select(UserRole.user_id).where(UserRole.site_id.in_(list(site_ids)))
        rows = session.scalars(select(AppUser).where(AppUser.id.in_(holders)).order_by(AppUser.id))
        return [user_info(user) for user in rows]

    def link_customer(self, session: Session, user_id: int, customer_id: int) -> None:
        """Let the user see the accounts of registry customer `customer_id` (with the customer role there)."""
        self._user(session, user_id)
        self._registry.get_customer(session, customer_id)
        if session.get(UserCustomer, (user_id, customer_id)) is None:
            session.add(UserCustomer(user_id=user_id, customer_id=customer_id))
            session.flush()

    def linked_customers(self, session: Session, user_id: int) -> list[int]:
        rows = session.scalars(
            select(UserCustomer.customer_id)
            .where(UserCustomer.user_id == user_id)
            .order_by(UserCustomer.customer_id)
        )
        return list(rows)

    def principal(self, session: Session, user_id: int) -> Principal:
        """The user as a principal with their grants of now (for a browser session)."""
        user = self._user(session, user_id)
        return Principal(user.id, user.username, self.grants(session, user.id))

    def check_password(
        self, session: Session, user_id: int, password: str, now: datetime, address: str | None = None
    ) -> bool:
        """Whether `password` is the user's, for a change of password; a wrong one counts as a failed login."""
        now = ensure_aware(now, "now")
        user = self._user(session, user_id)
        if self._lock_of(session, user.username, address, now) is not None:
            return False
        if verify_password(user.password_hash, password, self._cost).matches:
            return True
        self._failed(session, user.username, address, AuthRefusal.INVALID_CREDENTIALS, now)
        return False

    def login_failures(
        self, session: Session, username: str, address: str | None = None
    ) -> tuple[int, datetime | None]:
        """(consecutive failures, locked until) of `username` from `address`: (0, None) when none."""
        row = session.get(LoginFailure, (_normalise_username(username)[:150], _address_key(address)))
        return (0, None) if row is None else (row.failures, row.locked_until)

    def _lock_of(
        self, session: Session, username: str, address: str | None, now: datetime
    ) -> datetime | None:
        """Until when `username` is locked for `address` (its own lock, or the address's spraying throttle)."""
        key = _address_key(address)
        row = session.scalar(
            select(LoginFailure)
            .where(LoginFailure.username == username, LoginFailure.address == key)
            .with_for_update()  # concurrent guesses from one place take turns and cannot lose a failure
        )
        if row is not None and row.locked_until is not None and now < row.locked_until:
            return row.locked_until
        if key:
            since = now - ADDRESS_WINDOW
            recent = session.execute(
                select(
                    func.coalesce(func.sum(LoginFailure.failures), 0), func.max(LoginFailure.last_failure_at)
                ).where(LoginFailure.address == key, LoginFailure.last_failure_at >= since)
            ).one()
            if int(recent[0]) >= ADDRESS_MAX_FAILURES and recent[1] is not None:
                return ensure_aware(recent[1], "last_failure_at") + ADDRESS_WINDOW
        return None

    # -- login -----------------------------------------------------------------------------------------------

    def _verify_dummy(self, password: str) -> None:
        # An unknown username costs one argon2 verification, like a known one, so timing does not tell them apart.
        if self._dummy_hash is None:
            self._dummy_hash = hash_password(secrets.token_urlsafe(16), self._cost)
        verify_password(self._dummy_hash, password, self._cost)

    def authenticate(
        self,
        session: Session,
        username: str,
        password: str,
        totp_code: str | None,
        now: datetime,
        address: str | None = None,
    ) -> AuthResult:
        """Check a sign-in at `now` from `address`. The caller must commit whatever the result (failures and
        locks are stored).

        Failures lock the name for the address they come from (`lockout_duration`), so an attacker cannot keep the
        real person out; an address failing at many names is throttled as a whole. A locked attempt is answered
        LOCKED without checking the password, so guesses made during a lock teach nothing.
        """
        now = ensure_aware(now, "now")
        name = _normalise_username(username)[:150]
        # Row locks always in this order (the person, then their failures from this address): concurrent
        # attempts at one account take turns, and two of them can never wait for each other.
        user = session.scalar(select(AppUser).where(AppUser.username == name).with_for_update())
        locked = self._lock_of(session, name, address, now)
        if locked is not None:
            return AuthResult(None, AuthRefusal.LOCKED, retry_at=locked)
        if user is None:
            self._verify_dummy(password)
            return self._failed(session, name, address, AuthRefusal.INVALID_CREDENTIALS, now)
        check = verify_password(user.password_hash, password, self._cost)
        if not check.matches:
            return self._failed(session, name, address, AuthRefusal.INVALID_CREDENTIALS, now)
        if user.disabled:
            return AuthResult(None, AuthRefusal.DISABLED)
        grants = self.grants(session, user.id)
        if user.totp_secret is not None or needs_second_factor({g.role for g in grants}):
            if user.totp_secret is None:
                return AuthResult(None, AuthRefusal.TOTP_NOT_ENROLLED)
            if totp_code is None:
                return AuthResult(None, AuthRefusal.TOTP_REQUIRED)
            totp = verify_totp(user.totp_secret, totp_code, now, user.totp_last_step)
            if totp.accepted_step is None:
                reused = totp.refusal is TotpRefusal.REUSED
                refusal = AuthRefusal.TOTP_REUSED if reused else AuthRefusal.TOTP_INVALID
                return self._failed(session, name, address, refusal, now)
            user.totp_last_step = totp.accepted_step
        if check.needs_rehash:
            user.password_hash = hash_password(password, self._cost)
        session.execute(
            delete(LoginFailure).where(
                LoginFailure.username == name, LoginFailure.address == _address_key(address)
            )
        )
        session.flush()
        return AuthResult(Principal(user.id, user.username, grants))

    @staticmethod
    def _failed(
        session: Session, name: str, address: str | None, refusal: AuthRefusal, now: datetime
    ) -> AuthResult:
        # Wrong one-time codes count too: a stolen password must not allow unlimited guessing of the 6 digits.
        key = _address_key(address)
        dialect = session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        stmt = insert(LoginFailure).values(
            username=name, address=key, failures=1, last_failure_at=now, locked_until=None
        )
        # One statement, so two first failures of the same name and address at once both count.
        failures = session.execute(
            stmt.on_conflict_do_update(
                index_elements=["username", "address"],
                set_={"failures": LoginFailure.failures + 1, "last_failure_at": now},
            ).returning(LoginFailure.failures)
        ).scalar_one()
        lock = lockout_duration(failures)
        if lock is not None:
            session.execute(
                update(LoginFailure)
                .where(LoginFailure.username == name, LoginFailure.address == key)
                .values(locked_until=now + lock)
            )
        for loaded in list(session.identity_map.values()):
            if isinstance(loaded, LoginFailure):
                session.expire(loaded)  # written around the ORM above
        return AuthResult(None, refusal)

    # -- API tokens ------------------------------------------------------------------------------------------

    def issue_token(
        self,
        session: Session,
        user_id: int,
        name: str,
        roles: list[Role | str] | tuple[Role | str, ...] | set[Role],
        site_ids: list[int] | tuple[int, ...] | set[int],
        ttl: timedelta,
    ) -> IssuedToken:
        """A token acting for the user with at most `roles` on `site_ids`, each of which the user must hold.

        The secret (`oa_<prefix>_<random>`) is returned once; only its SHA-256 is stored.
        """
        user = self._user(session, user_id)
        name = name.strip()
        if not name or len(name) > 100:
            raise ValidationError("must be 1 to 100 characters", "token name")
        if ttl <= timedelta(0) or ttl > TOKEN_MAX_TTL:
            raise ValidationError(f"must be positive and at most {TOKEN_MAX_TTL.days} days, got {ttl}", "ttl")
        wanted_roles = {_role(r, "roles") for r in roles}
        wanted_sites = set(site_ids)
        if not wanted_roles:
            raise ValidationError("a token needs at least one role", "roles")
        if not wanted_sites:
            raise ValidationError("a token needs at least one site", "site_ids")
        held = {
            g for g in self.grants(session, user.id) if g.site_id in wanted_sites and g.role in wanted_roles
        }
        missing_roles = sorted(wanted_roles - {g.role for g in held})
        if missing_roles:
            raise ValidationError(
                f"user {user.username!r} holds {', '.join(missing_roles)} on none of these sites", "roles"
            )
        missing_sites = sorted(wanted_sites - {g.site_id for g in held})
        if missing_sites:
            raise ValidationError(
                f"user {user.username!r} holds none of these roles on site(s) {missing_sites}", "site_ids"
            )
        prefix = secrets.token_hex(4)
        body = base64.b32encode(secrets.token_bytes(32)).decode().rstrip("=").lower()
        secret = f"oa_{prefix}_{body}"
        now = ensure_aware(self._clock.now(), "clock")
        row = ApiToken(
            user_id=user.id,
            name=name,
            token_hash=token_hash(secret),
            prefix=prefix,
            scopes=json.dumps({"roles": sorted(wanted_roles), "site_ids": sorted(wanted_sites)}),
            created_at=now,
            expires_at=now + ttl,
        )
        session.add(row)
        session.flush()
        return IssuedToken(row.id, secret)

    def resolve_token(self, session: Session, secret: str, now: datetime) -> TokenResult:
        """Who `secret` acts for at `now`: the owner's current grants narrowed to the token's scopes, or a refusal."""
        now = ensure_aware(now, "now")
        secret = secret.strip()
        if not _TOKEN.fullmatch(secret):
            return TokenResult(None, TokenRefusal.MALFORMED)
        row = session.scalar(select(ApiToken).where(ApiToken.token_hash == token_hash(secret)))
        if row is None:
            return TokenResult(None, TokenRefusal.UNKNOWN)
        if row.revoked_at is not None:
            return TokenResult(None, TokenRefusal.REVOKED)
        if now >= row.expires_at:
            return TokenResult(None, TokenRefusal.EXPIRED)
        user = self._user(session, row.user_id)
        if user.disabled:
            return TokenResult(None, TokenRefusal.DISABLED)
        scopes = json.loads(row.scopes)
        roles, sites = set(scopes["roles"]), set(scopes["site_ids"])
        # Narrowed by the user's grants of today: taking a role away from a person takes it from their tokens too.
        grants = frozenset(g for g in self.grants(session, user.id) if g.role in roles and g.site_id in sites)
        return TokenResult(Principal(user.id, user.username, grants, token_id=row.id))

    def tokens(self, session: Session, user_id: int) -> list[TokenInfo]:
        """The user's API tokens, newest first, without their secrets (never stored anyway)."""
        rows = session.scalars(
            select(ApiToken).where(ApiToken.user_id == user_id).order_by(ApiToken.id.desc())
        )
        return [_token_info(row) for row in rows]

    def token(self, session: Session, token_id: int) -> TokenInfo:
        row = session.get(ApiToken, token_id)
        if row is None:
            raise NotFoundError(f"no API token with id {token_id}")
        return _token_info(row)

    def revoke_token(self, session: Session, token_id: int) -> None:
        """Revoke the token now; revoking it again keeps the first revocation time."""
        row = session.get(ApiToken, token_id)
        if row is None:
            raise NotFoundError(f"no API token with id {token_id}")
        if row.revoked_at is None:
            row.revoked_at = ensure_aware(self._clock.now(), "clock")
            session.flush()


def _role(value: Role | str, where: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        known = ", ".join(r.value for r in Role)
        raise ValidationError(f"unknown role {value!r} (known: {known})", where) from None
