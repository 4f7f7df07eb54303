"""What the `openami` commands share: the `--database-url` option, error output, and who runs a command."""

from __future__ import annotations

import getpass
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

# Messages and errors go to stderr, so that stdout carries only what a command prints for a script (JSON, a key).
err = Console(stderr=True)

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url", envvar="OPENAMI_DATABASE_URL", help="SQLAlchemy URL (default: SQLite under ./var)"
    ),
]


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print `message` in red on stderr; the exit to raise with `code`."""
    err.print(f"[red]{escape(message)}[/red]", soft_wrap=True)
    return typer.Exit(code)


def cli_actor() -> str:
    """The actor of an operation-log entry made from the command line: the operating-system user."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name for this uid (some containers)
        return "cli:unknown"
