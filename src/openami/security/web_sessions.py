"""Browser sessions: a random secret in a Secure, HttpOnly, SameSite=Strict cookie, and a CSRF token per session.

Only SHA-256 hashes of the cookie secret and of the CSRF token are stored, so a copy of the database opens no
session. A session ends at logout, after `IDLE_TIMEOUT` without a request, `MAX_AGE` after login however active,
when its person is disabled, and when its person's password changes. Never commits: the caller's transaction does.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from openami.common.clock import Clock, ensure_aware
from openami.security.models import AppUser, WebSession

COOKIE_NAME = "openami_session"
CSRF_HEADER = "X-CSRF-Token"
MAX_AGE = timedelta(hours=12)
IDLE_TIMEOUT = timedelta(minutes=30)
# A request refreshes `last_seen_at` only when it is older than this: one write per minute, not per request.
TOUCH_EVERY = timedelta(minutes=1)
_SECRET_BYTES = 32
_MAX_SECRET_CHARS = 100  # a cookie longer than this is no session of ours: refused before hashing


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class SessionRefusal(enum.StrEnum):
    UNKNOWN = "unknown"  # forged, or from another database
    EXPIRED = "expired"
    IDLE = "idle"
    REVOKED = "revoked"  # logged out, or ended by a password change
    DISABLED = "disabled"


_MESSAGES = {
    SessionRefusal.UNKNOWN: "the session cookie is not a valid session: sign in again",
    SessionRefusal.EXPIRED: "the session has expired: sign in again",
    SessionRefusal.IDLE: "the session ended after inactivity: sign in again",
    SessionRefusal.REVOKED: "the session was ended (signed out or password changed): sign in again",
    SessionRefusal.DISABLED: "the account of this session is disabled",
}


@dataclass(frozen=True, slots=True)
class NewSession:
    session_id: int
    secret: str  # for the cookie; shown once
    csrf_token: str  # for the client to send back in the X-CSRF-Token header; shown once
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class SessionCheck:
    session_id: int | None
    user_id: int | None
    refusal: SessionRefusal | None = None
    csrf_hash: str = ""

    @property
    def ok(self) -> bool:
        return self.refusal is None

    @property
    def message(self) -> str:
        return "valid" if self.refusal is None else _MESSAGES[self.refusal]

    def csrf_matches(self, token: str | None) -> bool:
        """Whether `token` is this session's CSRF token (compared in constant time)."""
        if not token or len(token) > _MAX_SECRET_CHARS or not self.csrf_hash:
            return False
        return hmac.compare_digest(_digest(token), self.csrf_hash)


class WebSessions:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    def start(
        self, session: Session, user_id: int, *, address: str | None, user_agent: str | None
    ) -> NewSession:
        """A new session for `user_id`, who has just proved who they are (password and, if needed, TOTP)."""
        now = ensure_aware(self._clock.now(), "clock")
        secret = secrets.token_urlsafe(_SECRET_BYTES)
        csrf = secrets.token_urlsafe(_SECRET_BYTES)
        row = WebSession(
            user_id=user_id,
            token_hash=_digest(secret),
            csrf_hash=_digest(csrf),
            created_at=now,
            expires_at=now + MAX_AGE,
            last_seen_at=now,
            address=(address or "")[:64] or None,
            user_agent=(user_agent or "")[:200] or None,
        )
        session.add(row)
        session.flush()
        return NewSession(row.id, secret, csrf, row.expires_at)

    def check(self, session: Session, secret: str) -> SessionCheck:
        """Whose session the cookie `secret` is, now; refreshes its idle clock."""
        if not secret or len(secret) > _MAX_SECRET_CHARS:
            return SessionCheck(None, None, SessionRefusal.UNKNOWN)
        now = ensure_aware(self._clock.now(), "clock")
        row = session.scalar(select(WebSession).where(WebSession.token_hash == _digest(secret)))
        if row is None:
            return SessionCheck(None, None, SessionRefusal.UNKNOWN)
        refusal = None
        if row.revoked_at is not None:
            refusal = SessionRefusal.REVOKED
        elif now >= row.expires_at:
            refusal = SessionRefusal.EXPIRED
        elif now >= row.last_seen_at + IDLE_TIMEOUT:
            refusal = SessionRefusal.IDLE
        elif session.scalar(select(AppUser.disabled).where(AppUser.id == row.user_id)):
            refusal = SessionRefusal.DISABLED
        if refusal is not None:
            return SessionCheck(row.id, row.user_id, refusal)
        if now - row.last_seen_at >= TOUCH_EVERY:
            row.last_seen_at = now
            session.flush()
        return SessionCheck(row.id, row.user_id, None, row.csrf_hash)

    def end(self, session: Session, session_id: int) -> None:
        """Sign out: the session's cookie opens nothing from now on."""
        now = ensure_aware(self._clock.now(), "clock")
        session.execute(
            update(WebSession)
            .where(WebSession.id == session_id, WebSession.revoked_at.is_(None))
            .values(revoked_at=now)
        )

    def end_all(self, session: Session, user_id: int, *, except_id: int | None = None) -> int:
        """End every open session of `user_id` (but `except_id`); how many were ended."""
        now = ensure_aware(self._clock.now(), "clock")
        stmt = update(WebSession).where(WebSession.user_id == user_id, WebSession.revoked_at.is_(None))
        if except_id is not None:
            stmt = stmt.where(WebSession.id != except_id)
        result = session.execute(stmt.values(revoked_at=now))
        return int(getattr(result, "rowcount", 0) or 0)
