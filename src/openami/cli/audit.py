"""`openami audit ...`: verify the operation log, sign and export checkpoints. Mounted on the main app as `audit`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from sqlalchemy.exc import SQLAlchemyError

from openami.cli.common import DatabaseUrl
from openami.cli.common import fail as _fail
from openami.common.errors import OpenAMIError, ValidationError

if TYPE_CHECKING:
    from openami.security.audit_chain import Checkpoint

app = typer.Typer(
    help="The operation log: verify its hash chain, sign and export checkpoints.", no_args_is_help=True
)

_out = Console()


@app.callback()
def audit() -> None:
    """The operation log: verify its hash chain, sign and export checkpoints."""


def _read_checkpoints(path: Path) -> list[Checkpoint]:
    from openami.security.audit import checkpoint_from_dict

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValidationError(f"cannot read: {exc.strerror}", str(path)) from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValidationError(f"not JSON: {exc}", str(path)) from exc
    items = data.get("checkpoints") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ValidationError('expected a list of checkpoints (or {"checkpoints": [...]})', str(path))
    return [checkpoint_from_dict(item, f"{path}, checkpoint {i + 1}") for i, item in enumerate(items)]


@app.command("verify")
def verify(
    database_url: DatabaseUrl = None,
    checkpoints: Annotated[
        Path | None,
        typer.Option("--checkpoints", help="exported checkpoints (JSON) kept outside the database"),
    ] = None,
    public_key: Annotated[
        list[str] | None,
        typer.Option("--public-key", help="trusted Ed25519 public key (hex); repeat for several"),
    ] = None,
) -> None:
    """Check the hash chain and every checkpoint; exit 1 naming the first bad entry when anything was changed."""
    from openami.bootstrap import bootstrap
    from openami.config import Settings
    from openami.security.audit import AuditLog

    try:
        extra = _read_checkpoints(checkpoints) if checkpoints else []
    except OpenAMIError as exc:
        raise _fail(str(exc), 2) from exc
    container = bootstrap(Settings(database_url=database_url) if database_url else Settings())
    try:
        with container.session_factory() as session:
            report = AuditLog(container.clock).verify(session, public_key or None, extra)
    except OpenAMIError as exc:
        raise _fail(str(exc)) from exc
    except SQLAlchemyError as exc:
        raise _fail(f"cannot use the audit log's database: {str(exc).splitlines()[0]}") from exc
    finally:
        container.close()
    if not report.ok:
        where = f"entry #{report.first_bad_id}: " if report.first_bad_id is not None else ""
        raise _fail(f"audit log tampered with: {where}{report.problem}")
    last = report.last_checkpoint
    tail = f"last checkpoint #{last.id} (entry #{last.entry_id})" if last else "no checkpoint yet"
    if last is not None and last.id is None:
        tail = f"last checkpoint at entry #{last.entry_id} (from {checkpoints})"
    _out.print(f"{report.checked} entries, chain intact, {tail}", soft_wrap=True)


@app.command("checkpoint")
def checkpoint(
    key: Annotated[Path, typer.Option("--key", help="the site's Ed25519 private key (unencrypted PEM)")],
    database_url: DatabaseUrl = None,
) -> None:
    """Sign the newest entry with KEY and store the checkpoint."""
    from openami.bootstrap import bootstrap
    from openami.config import Settings
    from openami.security.audit import AuditLog, load_signing_key
    from openami.storage.db import unit_of_work

    try:
        signing_key = load_signing_key(key.read_bytes(), str(key))
    except OSError as exc:
        raise _fail(f"{key}: cannot read: {exc.strerror}", 2) from exc
    except OpenAMIError as exc:
        raise _fail(str(exc), 2) from exc
    container = bootstrap(Settings(database_url=database_url) if database_url else Settings())
    try:
        with unit_of_work(container.session_factory) as session:
            cp = AuditLog(container.clock).checkpoint(session, signing_key)
    except OpenAMIError as exc:
        raise _fail(str(exc)) from exc
    except SQLAlchemyError as exc:
        raise _fail(f"cannot use the audit log's database: {str(exc).splitlines()[0]}") from exc
    finally:
        container.close()
    _out.print(f"checkpoint #{cp.id} signs entry #{cp.entry_id} ({cp.entry_hash})", soft_wrap=True)


@app.command("export-checkpoints")
def export_checkpoints(
    out: Annotated[Path, typer.Option("--out", help="the JSON file to write")],
    database_url: DatabaseUrl = None,
) -> None:
    """Write every checkpoint to OUT, to keep outside the database (it shows a cut-off tail)."""
    from openami.bootstrap import bootstrap
    from openami.config import Settings
    from openami.security.audit import AuditLog

    container = bootstrap(Settings(database_url=database_url) if database_url else Settings())
    try:
        with container.session_factory() as session:
            exported = AuditLog(container.clock).export_checkpoints(session)
    except SQLAlchemyError as exc:
        raise _fail(f"cannot use the audit log's database: {str(exc).splitlines()[0]}") from exc
    finally:
        container.close()
    partial = out.with_name(out.name + ".partial")
    try:
        partial.write_text(json.dumps({"checkpoints": exported}, indent=2) + "\n", encoding="utf-8")
        partial.replace(out)  # whole file or nothing: an interrupted export leaves the old copy intact
    except OSError as exc:
        raise _fail(f"{out}: cannot write: {exc.strerror}", 2) from exc
    _out.print(f"{len(exported)} checkpoint(s) written to {out}", soft_wrap=True)


@app.command("generate-key")
def generate_key(
    out: Annotated[Path, typer.Option("--out", help="where to write the private key (PEM, mode 0600)")],
) -> None:
    """Create a new Ed25519 signing key in OUT and print its public key (hex) to give to `verify --public-key`."""
    from openami.security.audit import generate_signing_key

    pem, public_hex = generate_signing_key()
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise _fail(f"{out} already exists; refusing to overwrite a key", 2) from exc
    except OSError as exc:
        raise _fail(f"{out}: cannot create: {exc.strerror}", 2) from exc
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    _out.print(public_hex)
