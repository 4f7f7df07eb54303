"""Who runs a command, as the operation log names them: `cli:<operating-system user>`."""

from __future__ import annotations

import getpass


def cli_actor() -> str:
    """The actor of an operation-log entry made from the command line: the operating-system user."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name for this uid (some containers)
        return "cli:unknown"
