"""Who is asking, and may they: every API route declares a permission with `require(...)` (or `PUBLIC`).

A request proves who it comes from with an API token (`Authorization: Bearer oa_...`) or a browser session (the
`openami_session` cookie set at sign-in). A session's state-changing requests must also carry the session's CSRF
token in the `X-CSRF-Token` header; a token needs none (no browser sends it on its own). The route then gets an
`Access`: the person, the permission, and where it reaches (whole sites, or only the person's own accounts).
Objects out of reach answer exactly as objects that do not exist (404), so guessing ids teaches nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

import structlog
from fastapi import Depends, HTTPException, Request, status
from sqlalchemy import select
from sqlalchemy.orm import Session

from openami.api.deps import get_container, get_session
from openami.bootstrap import Container
from openami.registry.interfaces import MeterInfo
from openami.registry.models import Account
from openami.security.audit import AuditLog
from openami.security.identity import IdentityService, Principal
from openami.security.models import Role, UserCustomer
from openami.security.permissions import ROLE_PERMISSIONS, Permission, Reach, reach
from openami.security.web_sessions import COOKIE_NAME, CSRF_HEADER, WebSessions

log = structlog.get_logger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_SIGN_IN = "sign in (POST /api/v1/auth/login) or send 'Authorization: Bearer <API token>'"


def _refuse(request: Request, code: int, reason: str, message: str) -> HTTPException:
    log.warning(
        "request_refused",
        status=code,
        reason=reason,
        method=request.method,
        path=request.url.path,
        address=client_address(request),
    )
    headers = {"WWW-Authenticate": "Bearer"} if code == status.HTTP_401_UNAUTHORIZED else None
    return HTTPException(code, detail=message, headers=headers)


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


@dataclass(frozen=True)
class Caller:
    """An authenticated request: the person, how they came (API token or browser session)."""

    principal: Principal
    via: str  # "token" or "session"
    session_id: int | None
    address: str | None


def authenticate(request: Request, session: Session, container: Container) -> Caller:
    """The caller of `request`, or an HTTPException: 401 without valid credentials, 403 for a CSRF-less write."""
    identity = IdentityService(container.clock)
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise _refuse(
                request, 401, "bad_authorization", "the Authorization header must be 'Bearer <API token>'"
            )
        result = identity.resolve_token(session, value, container.clock.now())
        if result.principal is None:
            raise _refuse(request, 401, f"token_{result.refusal}", result.message)
        return Caller(result.principal, "token", None, client_address(request))
    cookie = request.cookies.get(COOKIE_NAME)
    if cookie is None:
        raise _refuse(request, 401, "unauthenticated", f"authentication required: {_SIGN_IN}")
    check = WebSessions(container.clock).check(session, cookie)
    if check.user_id is None or not check.ok:
        raise _refuse(request, 401, f"session_{check.refusal}", check.message)
    if request.method not in SAFE_METHODS and not check.csrf_matches(request.headers.get(CSRF_HEADER)):
        raise _refuse(
            request,
            403,
            "csrf",
            f"missing or wrong CSRF token: send the {CSRF_HEADER} header you were given at sign-in",
        )
    session.commit()  # keeps the session's idle clock, whatever the route then does with the transaction
    user = identity.get_user(session, check.user_id)
    principal = Principal(user.id, user.username, identity.grants(session, user.id))
    return Caller(principal, "session", check.session_id, client_address(request))


@dataclass
class Access:
    """What a route may do for its caller: `permission`, reaching `reach`. Also writes the operation log."""

    caller: Caller
    permission: Permission
    reach: Reach
    audit_log: AuditLog
    customer_ids: frozenset[int] = frozenset()
    own_account_ids: frozenset[int] = (
        frozenset()
    )  # accounts of `customer_ids` on the sites of `reach.own_site_ids`
    _role: str = field(default="")

    @property
    def principal(self) -> Principal:
        return self.caller.principal

    @property
    def actor(self) -> str:
        token = self.principal.token_id
        return self.principal.username if token is None else f"{self.principal.username} (API token #{token})"

    @property
    def role(self) -> str:
        """The roles whose grant of the permission the request relied on, for the operation log ("none" for a
        public route)."""
        return self._role or "none"

    def sees_site(self, site_id: int | None) -> bool:
        return site_id is not None and self.reach.whole_site(site_id)

    def sees_meter(self, meter: MeterInfo) -> bool:
        if self.reach.whole_site(meter.site_id):
            return True
        return meter.site_id in self.reach.own_site_ids and meter.account_id in self.own_account_ids

    def sees_account(self, site_id: int, account_id: int) -> bool:
        return self.reach.whole_site(site_id) or (
            site_id in self.reach.own_site_ids and account_id in self.own_account_ids
        )

    def site_ids_filter(self, site_id: int | None) -> list[int]:
        """The sites a site-wide list may show: the one asked for if in reach (else none), or all in reach."""
        if site_id is not None:
            return [site_id] if self.reach.whole_site(site_id) else []
        return sorted(self.reach.site_ids)

    def record(
        self,
        session: Session,
        *,
        action: str,
        object_type: str,
        object_id: str,
        before: Any = None,
        after: Any = None,
        reason: str | None = None,
        site_id: int | None = None,
    ) -> None:
        """Append to the operation log in `session`'s transaction (commit it with the change it describes)."""
        self.audit_log.append(
            session,
            actor=self.actor,
            role=self.role,
            action=action,
            object_type=object_type,
            object_id=object_id,
            before=before,
            after=after,
            reason=reason,
            address=self.caller.address,
            site_id=site_id,
        )


def _own_accounts(session: Session, customer_ids: frozenset[int], site_ids: frozenset[int]) -> frozenset[int]:
    if not customer_ids or not site_ids:
        return frozenset()
    rows = session.scalars(
        select(Account.id).where(Account.customer_id.in_(customer_ids), Account.site_id.in_(site_ids))
    )
    return frozenset(rows)


class Require:
    """The dependency a route declares: `Depends(require(Permission.X))` gives the route an `Access` or refuses
    with 401 (who are you?) or 403 (your roles do not allow this anywhere)."""

    def __init__(self, permission: Permission) -> None:
        self.permission = permission

    def __repr__(self) -> str:
        return f"require({self.permission.value!r})"

    def __call__(
        self,
        request: Request,
        session: Annotated[Session, Depends(get_session)],
        container: Annotated[Container, Depends(get_container)],
    ) -> Access:
        caller = authenticate(request, session, container)
        grants = frozenset((g.role, g.site_id) for g in caller.principal.grants)
        where = reach(grants, self.permission)
        if not where.any:
            raise _refuse(
                request,
                403,
                "forbidden",
                f"your roles do not allow {self.permission.value!r} on any site",
            )
        roles = sorted({role.value for role, _ in grants if self.permission in ROLE_PERMISSIONS[role]})
        customer_ids: frozenset[int] = frozenset()
        own_accounts: frozenset[int] = frozenset()
        if where.own_site_ids:
            customer_ids = frozenset(
                session.scalars(
                    select(UserCustomer.customer_id).where(UserCustomer.user_id == caller.principal.user_id)
                )
            )
            own_accounts = _own_accounts(session, customer_ids, where.own_site_ids)
        return Access(
            caller,
            self.permission,
            where,
            AuditLog(container.clock),
            customer_ids,
            own_accounts,
            ",".join(roles),
        )


def require(permission: Permission) -> Any:
    """`Depends(require(Permission.X))`, for a route's `Annotated[Access, ...]` parameter."""
    return Depends(Require(permission))


class Public:
    """The declaration of a route anyone may call (health check, sign-in): the route-permission test accepts it."""

    permission = None

    def __repr__(self) -> str:
        return "public"

    def __call__(self) -> None:
        return None


PUBLIC = Depends(Public())


__all__ = [
    "PUBLIC",
    "Access",
    "Caller",
    "Permission",
    "Public",
    "Require",
    "Role",
    "authenticate",
    "require",
]
