"""`openami users`: the first admin of a site, and password resets, from the server's shell.

openami ships no default password: the first person who can sign in is made here, with a generated password and
second factor shown once. Everything is recorded in the operation log as `cli:<os user>`.
"""

from __future__ import annotations

import secrets
from typing import Annotated

import typer
from rich.markup import escape
from sqlalchemy.exc import SQLAlchemyError

from openami.bootstrap import Container, bootstrap
from openami.cli.common import DatabaseUrl, cli_actor, err
from openami.cli.common import fail as _fail
from openami.common.errors import ConfigurationError, OpenAMIError
from openami.config import Settings
from openami.security.audit import AuditLog
from openami.security.identity import IdentityService
from openami.security.models import Role
from openami.storage.db import unit_of_work

app = typer.Typer(help="People: the first admin of a site, password resets.", no_args_is_help=True)
console = err  # messages on stderr, as every command's


def generated_password() -> str:
    """A password of 20 random URL-safe characters (about 120 bits), meeting the password policy."""
    while True:
        candidate = secrets.token_urlsafe(15)
        if any(c.isdigit() for c in candidate) and any(c.isalpha() for c in candidate):
            return candidate


def _container(database_url: str | None) -> Container:
    settings = Settings() if database_url is None else Settings(database_url=database_url)
    try:
        return bootstrap(settings)
    except ConfigurationError as exc:
        raise _fail(str(exc), 2) from exc


@app.command("create-admin")
def create_admin(
    site: Annotated[
        str, typer.Option("--site", help="the site's code (create it first, e.g. by registry import)")
    ],
    username: Annotated[str, typer.Option("--username", help="the new admin's username")],
    display_name: Annotated[str | None, typer.Option("--display-name", help="their full name")] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Make an admin of SITE with a generated password and second factor, both printed once."""
    container = _container(database_url)
    identity = IdentityService(container.clock)
    password = generated_password()
    try:
        with unit_of_work(container.session_factory) as session:
            site_info = container.registry.site_by_code(session, site)
            user = identity.create_user(session, username, display_name or username, password)
            identity.grant_role(session, user.id, Role.ADMIN, site_info.id)
            enrollment = identity.enroll_totp(session, user.id)
            AuditLog(container.clock).append(
                session,
                actor=cli_actor(),
                role="cli",
                action="users.admin_created",
                object_type="user",
                object_id=str(user.id),
                after={"username": user.username, "role": Role.ADMIN.value, "site_id": site_info.id},
                site_id=site_info.id,
            )
    except OpenAMIError as exc:
        raise _fail(str(exc)) from exc
    except SQLAlchemyError as exc:
        first = str(exc).splitlines()[0]
        raise _fail(f"cannot use the database: {first} (run `openami db upgrade` first?)") from exc
    finally:
        container.close()
    console.print(f"admin [bold]{escape(user.username)}[/bold] of site {escape(site)} created.")
    console.print("Shown once, keep them safe:")
    typer.echo(f"password: {password}")
    typer.echo(f"second factor (TOTP) secret: {enrollment.secret}")
    typer.echo(f"authenticator app URI: {enrollment.uri}")


@app.command("reset-password")
def reset_password(
    username: Annotated[str, typer.Argument(help="whose password")],
    reason: Annotated[str, typer.Option("--reason", help="why (kept in the operation log)")],
    database_url: DatabaseUrl = None,
) -> None:
    """Give USERNAME a new generated password (printed once) and end their sessions."""
    from sqlalchemy import select

    from openami.security.models import AppUser
    from openami.security.web_sessions import WebSessions

    if not reason.strip():
        raise _fail("--reason: say why the password is reset", 2)
    container = _container(database_url)
    identity = IdentityService(container.clock)
    password = generated_password()
    try:
        with unit_of_work(container.session_factory) as session:
            user_id = session.scalar(select(AppUser.id).where(AppUser.username == username.strip().lower()))
            if user_id is None:
                raise _fail(f"no user {username!r}")
            identity.set_password(session, user_id, password)
            ended = WebSessions(container.clock).end_all(session, user_id)
            AuditLog(container.clock).append(
                session,
                actor=cli_actor(),
                role="cli",
                action="users.password_reset",
                object_type="user",
                object_id=str(user_id),
                after={"sessions_ended": ended},
                reason=reason.strip(),
            )
    except OpenAMIError as exc:
        raise _fail(str(exc)) from exc
    finally:
        container.close()
    console.print(f"password of {escape(username)} reset; {ended} session(s) ended. Shown once:")
    typer.echo(f"password: {password}")
