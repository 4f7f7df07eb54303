"""Sign-in, self-service, people and the operation log, under /api/v1.

- `/auth/*`: sign in (a browser session: cookie + CSRF token), sign out, who am I, change one's password, enrol
  one's second factor, one's API tokens. Tokens are issued and passwords changed only from a browser session.
- `/users/*`: people of the caller's sites, their roles, customer links, password resets and disabling.
- `/audit`: browsing and filtering the operation log (auditors and admins), for the caller's sites.
Every change is written to the operation log in the same transaction.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response, status
from sqlalchemy import select
from sqlalchemy.orm import Session

from openami.api.auth import PUBLIC, Access, client_address, require
from openami.api.deps import ContainerDep, SessionDep
from openami.bootstrap import Container
from openami.common.errors import NotFoundError, ValidationError
from openami.registry.models import Customer
from openami.security.audit import AuditEntry, AuditLog, decode_json
from openami.security.identity import AuthRefusal, IdentityService, TokenInfo, UserInfo
from openami.security.models import Role, UserRole
from openami.security.permissions import Permission
from openami.security.schemas import (
    AuditEntryOut,
    CustomerLinkIn,
    DisableIn,
    GrantIn,
    GrantOut,
    IssuedTokenOut,
    LoginIn,
    LoginOut,
    MeOut,
    PasswordChangeIn,
    PasswordResetIn,
    TokenIn,
    TokenOut,
    TotpEnrollmentOut,
    UserDetailOut,
    UserIn,
    UserOut,
)
from openami.security.web_sessions import COOKIE_NAME, MAX_AGE, WebSessions

router = APIRouter(prefix="/api/v1", tags=["people and access"])

Self = Annotated[Access, require(Permission.SELF)]
UsersRead = Annotated[Access, require(Permission.USERS_READ)]
UsersManage = Annotated[Access, require(Permission.USERS_MANAGE)]
AuditRead = Annotated[Access, require(Permission.AUDIT_READ)]
UserId = Annotated[int, Path(ge=1, le=2**31 - 1, description="The person's id.")]
TokenId = Annotated[int, Path(ge=1, le=2**31 - 1, description="The API token's id.")]
MAX_AUDIT_PAGE = 500

_LOGIN_STATUS = {
    AuthRefusal.INVALID_CREDENTIALS: status.HTTP_401_UNAUTHORIZED,
    AuthRefusal.LOCKED: status.HTTP_429_TOO_MANY_REQUESTS,
    AuthRefusal.DISABLED: status.HTTP_403_FORBIDDEN,
    AuthRefusal.TOTP_REQUIRED: status.HTTP_401_UNAUTHORIZED,
    AuthRefusal.TOTP_NOT_ENROLLED: status.HTTP_403_FORBIDDEN,
    AuthRefusal.TOTP_INVALID: status.HTTP_401_UNAUTHORIZED,
    AuthRefusal.TOTP_REUSED: status.HTTP_401_UNAUTHORIZED,
}


def _identity(container: Container) -> IdentityService:
    return IdentityService(container.clock)


def _grants_out(access_or_grants: Any) -> list[GrantOut]:
    return [
        GrantOut(role=g.role, site_id=g.site_id)
        for g in sorted(access_or_grants, key=lambda g: (g.site_id, g.role))
    ]


def _token_out(info: TokenInfo) -> TokenOut:
    return TokenOut(
        id=info.id,
        name=info.name,
        prefix=info.prefix,
        roles=list(info.roles),
        site_ids=list(info.site_ids),
        created_at=info.created_at,
        expires_at=info.expires_at,
        revoked_at=info.revoked_at,
    )


def _browser_only(access: Access, what: str) -> None:
    if access.caller.via != "session":
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, detail=f"{what} needs a signed-in browser session, not an API token"
        )


# --- sign-in and self-service ---------------------------------------------------------------------------------


@router.post("/auth/login", response_model=LoginOut, dependencies=[PUBLIC])
def login(
    body: LoginIn, request: Request, response: Response, session: SessionDep, container: ContainerDep
) -> Any:
    """Sign in with username, password and (for roles that can cut power or move money) a one-time code.

    Sets the session cookie (Secure, HttpOnly, SameSite=Strict) and returns the CSRF token to send back in the
    X-CSRF-Token header of every state-changing request.
    """
    identity = _identity(container)
    log = AuditLog(container.clock)
    address = client_address(request)
    now = container.clock.now()
    result = identity.authenticate(
        session, body.username, body.password.get_secret_value(), body.totp_code, now, address
    )
    attempted = body.username.strip().lower()[:150] or "(empty)"
    if result.principal is None or result.refusal is not None:
        refusal = result.refusal or AuthRefusal.INVALID_CREDENTIALS
        log.append(
            session,
            actor=attempted,
            role="none",
            action="auth.login_refused",
            object_type="user",
            object_id=attempted,
            reason=refusal.value,
            address=address,
        )
        session.commit()  # the failure counter and lock are kept, and so is the record of the attempt
        headers = None
        if refusal is AuthRefusal.LOCKED and result.retry_at is not None:
            headers = {"Retry-After": str(max(1, int((result.retry_at - now).total_seconds()) + 1))}
        raise HTTPException(_LOGIN_STATUS[refusal], detail=result.message, headers=headers)
    principal = result.principal
    started = WebSessions(container.clock).start(
        session, principal.user_id, address=address, user_agent=request.headers.get("user-agent")
    )
    log.append(
        session,
        actor=principal.username,
        role=",".join(sorted({g.role.value for g in principal.grants})) or "none",
        action="auth.login",
        object_type="user",
        object_id=str(principal.user_id),
        after={"session_id": started.session_id, "expires_at": started.expires_at.isoformat()},
        address=address,
    )
    user = identity.get_user(session, principal.user_id)
    customers = identity.linked_customers(session, principal.user_id)
    session.commit()
    response.set_cookie(
        COOKIE_NAME,
        started.secret,
        max_age=int(MAX_AGE.total_seconds()),
        path="/",
        secure=True,
        httponly=True,
        samesite="strict",
    )
    return LoginOut(
        user_id=user.id,
        username=user.username,
        display_name=user.display_name,
        grants=_grants_out(principal.grants),
        customer_ids=customers,
        via="session",
        token_id=None,
        csrf_token=started.csrf_token,
        expires_at=started.expires_at,
    )


@router.post("/auth/logout", status_code=status.HTTP_204_NO_CONTENT)
def logout(access: Self, response: Response, session: SessionDep, container: ContainerDep) -> Response:
    """Sign out of this browser session (its cookie opens nothing any more)."""
    session_id = access.caller.session_id
    if access.caller.via != "session" or session_id is None:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail="an API token does not sign out: revoke it with DELETE /api/v1/auth/tokens/{id}",
        )
    WebSessions(container.clock).end(session, session_id)
    access.record(session, action="auth.logout", object_type="user", object_id=str(access.principal.user_id))
    session.commit()
    response.status_code = status.HTTP_204_NO_CONTENT
    response.delete_cookie(COOKIE_NAME, path="/", secure=True, httponly=True, samesite="strict")
    return response


@router.get("/auth/me", response_model=MeOut)
def me(access: Self, session: SessionDep, container: ContainerDep) -> Any:
    """Who the caller is, with their roles per site (narrowed to the token's scope when using a token)."""
    identity = _identity(container)
    user = identity.get_user(session, access.principal.user_id)
    return MeOut(
        user_id=user.id,
        username=user.username,
        display_name=user.display_name,
        grants=_grants_out(access.principal.grants),
        customer_ids=identity.linked_customers(session, user.id),
        via=access.caller.via,
        token_id=access.principal.token_id,
    )


@router.post("/auth/password", status_code=status.HTTP_204_NO_CONTENT)
def change_password(
    body: PasswordChangeIn, access: Self, session: SessionDep, container: ContainerDep
) -> Response:
    """Change one's own password (the current one is asked again); every other session of the person ends."""
    _browser_only(access, "changing a password")
    identity = _identity(container)
    user_id = access.principal.user_id
    if not identity.check_password(
        session,
        user_id,
        body.current_password.get_secret_value(),
        container.clock.now(),
        access.caller.address,
    ):
        session.commit()  # a wrong current password counts as a failed login
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="the current password is wrong")
    identity.set_password(session, user_id, body.new_password.get_secret_value())
    ended = WebSessions(container.clock).end_all(session, user_id, except_id=access.caller.session_id)
    access.record(
        session,
        action="auth.password_changed",
        object_type="user",
        object_id=str(user_id),
        after={"other_sessions_ended": ended},
    )
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/auth/tokens", response_model=list[TokenOut])
def my_tokens(access: Self, session: SessionDep, container: ContainerDep) -> Any:
    """One's own API tokens (never their secrets)."""
    return [_token_out(t) for t in _identity(container).tokens(session, access.principal.user_id)]


@router.post("/auth/tokens", response_model=IssuedTokenOut, status_code=status.HTTP_201_CREATED)
def issue_token(body: TokenIn, access: Self, session: SessionDep, container: ContainerDep) -> Any:
    """A new API token acting for the caller with some of their roles on some of their sites. The secret is in
    this response only."""
    _browser_only(access, "issuing an API token")
    identity = _identity(container)
    issued = identity.issue_token(
        session,
        access.principal.user_id,
        body.name,
        set(body.roles),
        body.site_ids,
        timedelta(days=body.ttl_days),
    )
    info = identity.token(session, issued.token_id)
    access.record(
        session,
        action="auth.token_issued",
        object_type="api_token",
        object_id=str(info.id),
        after={
            "name": info.name,
            "roles": list(info.roles),
            "site_ids": list(info.site_ids),
            "expires_at": info.expires_at.isoformat(),
            "prefix": info.prefix,
        },
    )
    session.commit()
    return IssuedTokenOut(**_token_out(info).model_dump(), secret=issued.secret)


@router.delete("/auth/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
def revoke_my_token(
    token_id: TokenId, access: Self, session: SessionDep, container: ContainerDep
) -> Response:
    """Revoke one of one's own API tokens (a token may revoke itself)."""
    identity = _identity(container)
    try:
        info = identity.token(session, token_id)
    except NotFoundError:
        info = None
    if info is None or info.user_id != access.principal.user_id:
        raise NotFoundError(f"no API token with id {token_id}")
    identity.revoke_token(session, token_id)
    revoked = identity.token(session, token_id).revoked_at
    access.record(
        session,
        action="auth.token_revoked",
        object_type="api_token",
        object_id=str(token_id),
        before={"revoked_at": None if info.revoked_at is None else info.revoked_at.isoformat()},
        after={"revoked_at": None if revoked is None else revoked.isoformat()},
    )
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --- people of the caller's sites -----------------------------------------------------------------------------


def _visible_user(session: Session, access: Access, user_id: int, *, or_unassigned: bool = False) -> UserInfo:
    """The person `user_id` if they hold a role on a site in the caller's reach (or, with `or_unassigned`, none
    at all: just created); otherwise 404, as for a person who does not exist."""
    sites = set(session.scalars(select(UserRole.site_id).where(UserRole.user_id == user_id)))
    if not (sites & access.reach.site_ids or (or_unassigned and not sites)):
        raise NotFoundError(f"no user with id {user_id}")
    return IdentityService.user_info(session, user_id)  # the same 404 when there is no such person


def _detail(session: Session, identity: IdentityService, access: Access, user: UserInfo) -> UserDetailOut:
    grants = [g for g in identity.grants(session, user.id) if g.site_id in access.reach.site_ids]
    customers = [
        c
        for c in identity.linked_customers(session, user.id)
        if session.scalar(select(Customer.site_id).where(Customer.id == c)) in access.reach.site_ids
    ]
    return UserDetailOut(
        **UserOut.model_validate(user, from_attributes=True).model_dump(),
        grants=_grants_out(grants),
        customer_ids=customers,
    )


@router.get("/users", response_model=list[UserOut])
def list_users(access: UsersRead, session: SessionDep, container: ContainerDep) -> Any:
    """The people holding a role on the caller's sites."""
    return _identity(container).users_of_sites(session, access.reach.site_ids)


@router.get("/users/{user_id}", response_model=UserDetailOut)
def get_user(user_id: UserId, access: UsersRead, session: SessionDep, container: ContainerDep) -> Any:
    """A person, with their roles and customer links on the caller's sites only."""
    user = _visible_user(session, access, user_id)
    return _detail(session, _identity(container), access, user)


@router.post("/users", response_model=UserOut, status_code=status.HTTP_201_CREATED)
def create_user(body: UserIn, access: UsersManage, session: SessionDep, container: ContainerDep) -> Any:
    """A new person with a first password and no role yet: grant one next (POST /users/{id}/grants)."""
    user = _identity(container).create_user(
        session, body.username, body.display_name, body.password.get_secret_value()
    )
    access.record(
        session,
        action="users.created",
        object_type="user",
        object_id=str(user.id),
        after={"username": user.username, "display_name": user.display_name},
    )
    session.commit()
    return user


@router.post("/users/{user_id}/grants", response_model=UserDetailOut)
def grant_role(
    user_id: UserId, body: GrantIn, access: UsersManage, session: SessionDep, container: ContainerDep
) -> Any:
    """Let the person act as `role` on `site_id` (a site of the caller's)."""
    user = _visible_user(session, access, user_id, or_unassigned=True)
    if not access.reach.whole_site(body.site_id):
        raise NotFoundError(f"no site with id {body.site_id}")
    identity = _identity(container)
    identity.grant_role(session, user.id, body.role, body.site_id)
    access.record(
        session,
        action="users.role_granted",
        object_type="user",
        object_id=str(user.id),
        after={"role": body.role.value, "site_id": body.site_id},
        site_id=body.site_id,
    )
    session.commit()
    return _detail(session, identity, access, user)


@router.delete("/users/{user_id}/grants/{role}/{site_id}", response_model=UserDetailOut)
def revoke_role(
    user_id: UserId,
    role: Annotated[Role, Path()],
    site_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
    access: UsersManage,
    session: SessionDep,
    container: ContainerDep,
) -> Any:
    """Take a role on one of the caller's sites away from the person; their tokens lose it too."""
    user = _visible_user(session, access, user_id)
    if not access.reach.whole_site(site_id):
        raise NotFoundError(f"no site with id {site_id}")
    identity = _identity(container)
    identity.revoke_role(session, user.id, role, site_id)
    access.record(
        session,
        action="users.role_revoked",
        object_type="user",
        object_id=str(user.id),
        before={"role": role.value, "site_id": site_id},
        site_id=site_id,
    )
    session.commit()
    return _detail(session, identity, access, user)


@router.post("/users/{user_id}/customers", response_model=UserDetailOut)
def link_customer(
    user_id: UserId, body: CustomerLinkIn, access: UsersManage, session: SessionDep, container: ContainerDep
) -> Any:
    """Let the person (with the customer role on its site) see the accounts of a registry customer."""
    user = _visible_user(session, access, user_id, or_unassigned=True)
    site_id = session.scalar(select(Customer.site_id).where(Customer.id == body.customer_id))
    if site_id is None or not access.reach.whole_site(site_id):
        raise NotFoundError(f"no customer with id {body.customer_id}")
    identity = _identity(container)
    identity.link_customer(session, user.id, body.customer_id)
    access.record(
        session,
        action="users.customer_linked",
        object_type="user",
        object_id=str(user.id),
        after={"customer_id": body.customer_id},
        site_id=site_id,
    )
    session.commit()
    return _detail(session, identity, access, user)


@router.post("/users/{user_id}/password", status_code=status.HTTP_204_NO_CONTENT)
def reset_password(
    user_id: UserId, body: PasswordResetIn, access: UsersManage, session: SessionDep, container: ContainerDep
) -> Response:
    """Set a new password for a person who lost theirs (the reason is logged); their sessions end."""
    user = _visible_user(session, access, user_id, or_unassigned=True)
    _identity(container).set_password(session, user.id, body.new_password.get_secret_value())
    ended = WebSessions(container.clock).end_all(session, user.id)
    access.record(
        session,
        action="users.password_reset",
        object_type="user",
        object_id=str(user.id),
        after={"sessions_ended": ended},
        reason=body.reason,
    )
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/users/{user_id}/disabled", response_model=UserOut)
def set_disabled(
    user_id: UserId, body: DisableIn, access: UsersManage, session: SessionDep, container: ContainerDep
) -> Any:
    """Disable (or enable again) a person; disabling ends their sessions and stops their tokens."""
    user = _visible_user(session, access, user_id, or_unassigned=True)
    if user.id == access.principal.user_id and body.disabled:
        raise ValidationError("you cannot disable yourself", "disabled")
    identity = _identity(container)
    identity.set_disabled(session, user.id, body.disabled)
    if body.disabled:
        WebSessions(container.clock).end_all(session, user.id)
    access.record(
        session,
        action="users.disabled" if body.disabled else "users.enabled",
        object_type="user",
        object_id=str(user.id),
        before={"disabled": user.disabled},
        after={"disabled": body.disabled},
        reason=body.reason,
    )
    session.commit()
    return identity.get_user(session, user.id)


@router.post("/users/{user_id}/totp", response_model=TotpEnrollmentOut)
def enroll_totp(user_id: UserId, access: UsersManage, session: SessionDep, container: ContainerDep) -> Any:
    """Give the person a new second factor (replacing any old one); hand the secret or QR code over in person."""
    user = _visible_user(session, access, user_id, or_unassigned=True)
    enrollment = _identity(container).enroll_totp(session, user.id)
    access.record(session, action="users.totp_enrolled", object_type="user", object_id=str(user.id))
    session.commit()
    return TotpEnrollmentOut(secret=enrollment.secret, uri=enrollment.uri)


# --- the operation log -----------------------------------------------------------------------------------------


@router.get("/audit", response_model=list[AuditEntryOut])
def browse_audit(
    access: AuditRead,
    session: SessionDep,
    site_id: Annotated[
        int | None, Query(ge=1, le=2**31 - 1, description="Only entries of this site.")
    ] = None,
    actor: Annotated[str | None, Query(max_length=200, description="Exact actor, e.g. a username.")] = None,
    action: Annotated[
        str | None, Query(max_length=100, description="Exact action, or a prefix ending in '.'.")
    ] = None,
    object_type: Annotated[str | None, Query(max_length=50)] = None,
    object_id: Annotated[str | None, Query(max_length=200)] = None,
    since: Annotated[datetime | None, Query(description="ISO-8601 instant with offset (inclusive).")] = None,
    until: Annotated[datetime | None, Query(description="ISO-8601 instant with offset (exclusive).")] = None,
    after_id: Annotated[int, Query(ge=0, le=2**63 - 1, description="Entries after this id (paging).")] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_AUDIT_PAGE)] = 100,
) -> Any:
    """Entries of the caller's sites, oldest first, filtered. Entries that belong to no site (sign-ins, people
    without a site yet) are read with `openami audit verify`/export on the server, not here."""
    for name, value in (("since", since), ("until", until)):
        if value is not None and (value.tzinfo is None or value.utcoffset() is None):
            raise ValidationError(f"{value.isoformat()} has no UTC offset", name)
    sites = access.site_ids_filter(site_id)
    stmt = select(AuditEntry).where(AuditEntry.site_id.in_(sites), AuditEntry.id > after_id)
    if actor is not None:
        stmt = stmt.where(AuditEntry.actor == actor)
    if action is not None:
        stmt = stmt.where(
            AuditEntry.action.startswith(action, autoescape=True)
            if action.endswith(".")
            else AuditEntry.action == action
        )
    if object_type is not None:
        stmt = stmt.where(AuditEntry.object_type == object_type)
    if object_id is not None:
        stmt = stmt.where(AuditEntry.object_id == object_id)
    if since is not None:
        stmt = stmt.where(AuditEntry.at >= since)
    if until is not None:
        stmt = stmt.where(AuditEntry.at < until)
    rows = session.scalars(stmt.order_by(AuditEntry.id).limit(limit))
    return [
        AuditEntryOut(
            id=r.id,
            at=r.at,
            site_id=r.site_id,
            actor=r.actor,
            role=r.role,
            address=r.address,
            action=r.action,
            object_type=r.object_type,
            object_id=r.object_id,
            before=decode_json(r.before),
            after=decode_json(r.after),
            reason=r.reason,
            hash=r.hash,
        )
        for r in rows
    ]
