"""Meter keys sealed at rest: each meter's 32-byte HMAC key, encrypted with AES-256-GCM under a master key.

What `meter.auth_key` (and `meter.previous_auth_key`) hold is a sealed key:

    version (1 byte, 0x01) | key id length (1 byte) | key id (ASCII) | nonce (12 bytes) | ciphertext + tag (48 bytes)

The associated data is everything before the nonce followed by the meter's serial (UTF-8): a sealed key copied to
another meter's row, or a header edited to name another master key, does not open. Every seal draws a fresh random
nonce. Several master keys may be configured, newest first: the newest seals, any of them opens, so the master key
can be rotated (add a new one in front, run `openami keys rewrap`, then retire the old one).

The master keys come from configuration (`OPENAMI_MASTER_KEYS` or `OPENAMI_MASTER_KEY_FILE`, see
`load_master_keys`). No function here logs or puts a key, master or meter, into an error message.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from openami.common.clock import SystemClock
from openami.common.errors import ConfigurationError, OpenAMIError, ValidationError
from openami.config import DEFAULT_MASTER_KEY_PATH, Settings
from openami.storage.db import normalise_url

__all__ = [
    "FORMAT_VERSION",
    "MASTER_KEY_BYTES",
    "METER_KEY_BYTES",
    "MasterKey",
    "MeterKeyCipher",
    "MeterKeyError",
    "generate_master_key",
    "is_legacy_plaintext",
    "load_master_keys",
    "new_master_key_id",
    "new_meter_key",
    "parse_master_keys",
]

log = structlog.get_logger(__name__)

FORMAT_VERSION = 1
MASTER_KEY_BYTES = 32  # AES-256
METER_KEY_BYTES = 32  # HMAC-SHA256 key of one meter (registry.validation.AUTH_KEY_BYTES)
NONCE_BYTES = 12  # 96 bits, the size GCM is made for
TAG_BYTES = 16
MAX_KEY_ID_CHARS = 32
_KEY_ID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_KEY_ID_CHARS - 1}}}")
_ENV = "OPENAMI_MASTER_KEYS"
_FILE_ENV = "OPENAMI_MASTER_KEY_FILE"
_HOW_TO_SET = (
    f"set {_ENV} to comma-separated `id:base64` entries, newest first (`openami keys generate` prints one), "
    f"or {_FILE_ENV} to a file holding them one per line"
)


class MeterKeyError(OpenAMIError):
    """A meter's stored key cannot be opened: wrong or missing master key, or a changed or misplaced value.

    `serial` names the meter; the message never contains key material.
    """

    def __init__(self, serial: str, detail: str) -> None:
        self.serial = serial
        self.detail = detail
        super().__init__(f"meter {serial!r}: {detail}")


@dataclass(frozen=True, slots=True)
class MasterKey:
    """One configured master key: its id (stored in every key it seals) and its 32 bytes (never in repr)."""

    key_id: str
    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not _KEY_ID.fullmatch(self.key_id):
            # Not echoed: an entry written the wrong way round would put the key itself here.
            raise ValidationError(
                f"must be 1 to {MAX_KEY_ID_CHARS} characters: letters, digits, '.', '_' and '-', "
                "starting with a letter or digit",
                location="master key id",
            )
        if len(self.key) != MASTER_KEY_BYTES:
            raise ValidationError(
                f"must be {MASTER_KEY_BYTES} bytes, got {len(self.key)}",
                location=f"master key {self.key_id!r}",
            )

    def entry(self) -> str:
        """The `id:base64` form configuration takes. Secret: print it once, never log it."""
        return f"{self.key_id}:{base64.b64encode(self.key).decode('ascii')}"


def new_master_key_id(now: datetime) -> str:
    """A fresh id that tells when the key was made, e.g. 'k20260302-9f3a' (the random tail keeps ids unique)."""
    return f"k{now:%Y%m%d}-{secrets.token_hex(2)}"


def generate_master_key(key_id: str) -> MasterKey:
    return MasterKey(key_id, secrets.token_bytes(MASTER_KEY_BYTES))


def new_meter_key() -> bytes:
    """A fresh random 32-byte meter key, for provisioning or rotation."""
    return secrets.token_bytes(METER_KEY_BYTES)


def is_legacy_plaintext(stored: bytes) -> bool:
    """A stored value from before keys were sealed (migration 0004): the bare 32-byte key.

    A sealed key is never 32 bytes long (at least 2 + 1 + 12 + 48), so the length alone tells them apart.
    """
    return len(stored) == METER_KEY_BYTES


def parse_master_keys(text: str, source: str) -> tuple[MasterKey, ...]:
    """The master keys in `text`: `id:base64` entries separated by commas or line breaks, newest first.

    Blank entries and lines starting with '#' are skipped. Errors name `source` and the entry's position, never
    its content.
    """
    keys: list[MasterKey] = []
    seen: set[str] = set()
    lines = (line.strip() for line in text.splitlines())
    entries = [e.strip() for line in lines if not line.startswith("#") for e in line.split(",")]
    position = 0
    for entry in entries:
        if not entry:
            continue
        position += 1
        where = f"{source}, entry {position}"
        key_id, colon, encoded = entry.partition(":")
        key_id = key_id.strip()
        if not colon or not key_id:
            raise ConfigurationError(f"{where}: expected `id:base64` (e.g. from `openami keys generate`)")
        if not _KEY_ID.fullmatch(key_id):  # not echoed: an entry written the wrong way round is the key
            raise ConfigurationError(
                f"{where}: the id before ':' must be 1 to {MAX_KEY_ID_CHARS} letters, digits, '.', '_' or '-'"
            )
        try:
            raw = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise ConfigurationError(f"{where} ({key_id!r}): the key is not valid base64") from None
        try:
            key = MasterKey(key_id, raw)
        except ValidationError as exc:
            raise ConfigurationError(f"{where}: {exc}") from None
        if key_id in seen:
            raise ConfigurationError(f"{where}: master key id {key_id!r} appears twice")
        seen.add(key_id)
        keys.append(key)
    if not keys:
        raise ConfigurationError(f"{source} holds no master key; {_HOW_TO_SET}")
    return tuple(keys)


class MeterKeyCipher:
    """Seals and opens meter keys under the configured master keys (the first one, the newest, seals)."""

    def __init__(self, master_keys: Sequence[MasterKey]) -> None:
        if not master_keys:
            raise ConfigurationError(f"no master key configured; {_HOW_TO_SET}")
        ids = [k.key_id for k in master_keys]
        if len(set(ids)) != len(ids):
            raise ConfigurationError(f"master key ids must be unique, got {ids}")
        self._aeads = {k.key_id: AESGCM(k.key) for k in master_keys}
        self._key_ids = tuple(ids)

    @classmethod
    def from_settings(cls, settings: Settings) -> MeterKeyCipher:
        """The cipher for `settings` (see `load_master_keys`)."""
        return cls(load_master_keys(settings))

    def __repr__(self) -> str:
        return f"MeterKeyCipher(key_ids={list(self._key_ids)})"

    @property
    def newest_key_id(self) -> str:
        return self._key_ids[0]

    @property
    def key_ids(self) -> tuple[str, ...]:
        """The configured master key ids, newest first."""
        return self._key_ids

    @staticmethod
    def _header(key_id: str) -> bytes:
        encoded = key_id.encode("ascii")
        return bytes((FORMAT_VERSION, len(encoded))) + encoded

    def seal(self, serial: str, key: bytes) -> bytes:
        """`key` (32 bytes) sealed for the meter `serial` under the newest master key, with a fresh nonce."""
        if not isinstance(key, bytes | bytearray) or len(key) != METER_KEY_BYTES:
            size = len(key) if isinstance(key, bytes | bytearray) else type(key).__name__
            raise ValidationError(f"a meter key has {METER_KEY_BYTES} bytes, got {size}", f"meter {serial!r}")
        header = self._header(self.newest_key_id)
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aeads[self.newest_key_id].encrypt(nonce, bytes(key), header + serial.encode("utf-8"))
        return header + nonce + sealed

    def key_id_of(self, serial: str, blob: bytes) -> str:
        """The id of the master key `blob` was sealed under (MeterKeyError if it is not a sealed key)."""
        return self._parse(serial, blob)[0]

    def open(self, serial: str, blob: bytes) -> bytes:
        """The 32-byte key sealed in `blob` for the meter `serial`; MeterKeyError naming the meter otherwise."""
        key_id, header, nonce, sealed = self._parse(serial, blob)
        aead = self._aeads.get(key_id)
        if aead is None:
            raise MeterKeyError(
                serial,
                f"its key is sealed under master key {key_id!r}, which is not configured "
                f"(configured: {', '.join(self._key_ids)}); add {key_id!r} after the newest in {_ENV} "
                f"or {_FILE_ENV}",
            )
        try:
            key = aead.decrypt(nonce, sealed, header + serial.encode("utf-8"))
        except InvalidTag:
            raise MeterKeyError(
                serial,
                f"its sealed key does not open under master key {key_id!r}: the stored value was changed or "
                f"belongs to another meter, or the master key configured as {key_id!r} is not the one it was "
                "sealed with",
            ) from None
        if len(key) != METER_KEY_BYTES:  # only a forger holding the master key could get here
            raise MeterKeyError(serial, f"its sealed key has {len(key)} bytes, not {METER_KEY_BYTES}")
        return key

    @staticmethod
    def _parse(serial: str, blob: bytes) -> tuple[str, bytes, bytes, bytes]:
        blob = bytes(blob)
        if len(blob) < 2:
            raise MeterKeyError(serial, f"the stored key ({len(blob)} bytes) is not a sealed meter key")
        version, id_length = blob[0], blob[1]
        if version != FORMAT_VERSION:
            raise MeterKeyError(
                serial, f"the stored key has format version {version}; this openami reads {FORMAT_VERSION}"
            )
        header_end = 2 + id_length
        expected = header_end + NONCE_BYTES + METER_KEY_BYTES + TAG_BYTES
        if len(blob) != expected:
            raise MeterKeyError(
                serial, f"the stored key has {len(blob)} bytes; a sealed key with this header has {expected}"
            )
        try:
            key_id = blob[2:header_end].decode("ascii")
        except UnicodeDecodeError:
            raise MeterKeyError(serial, "the stored key's master key id is not ASCII") from None
        nonce_end = header_end + NONCE_BYTES
        return key_id, blob[:header_end], blob[header_end:nonce_end], blob[nonce_end:]


# --- configuration --------------------------------------------------------------------------------------------


def _is_embedded(settings: Settings) -> bool:
    try:
        return make_url(normalise_url(settings.database_url)).get_backend_name() == "sqlite"
    except ArgumentError as exc:
        raise ConfigurationError(f"OPENAMI_DATABASE_URL is not a database URL: {exc}") from exc


def load_master_keys(settings: Settings) -> tuple[MasterKey, ...]:
    """The master keys, newest first, from `OPENAMI_MASTER_KEYS` or the file `OPENAMI_MASTER_KEY_FILE`.

    With neither set, the embedded mode (SQLite) uses `var/master.key`, creating it (mode 0600) on first use so
    that a fresh machine runs the demo; the server mode (PostgreSQL) has no default and raises
    ConfigurationError saying what to set.
    """
    inline = settings.master_keys.get_secret_value() if settings.master_keys is not None else ""
    if inline.strip() and settings.master_key_file is not None:
        raise ConfigurationError(f"set either {_ENV} or {_FILE_ENV}, not both")
    if inline.strip():
        return parse_master_keys(inline, _ENV)
    if settings.master_key_file is not None:
        return _read_key_file(settings.master_key_file, _FILE_ENV)
    if not _is_embedded(settings):
        raise ConfigurationError(
            "no master key to seal meter keys with: the server mode (PostgreSQL) has no default; "
            f"{_HOW_TO_SET}. Keep a copy of it apart from the database backups: losing it loses every meter key"
        )
    path = DEFAULT_MASTER_KEY_PATH
    if not path.exists():
        # Dated by the wall clock: a demo's fast clock would put a simulated date in the id.
        _create_key_file(path, SystemClock().now())
    return _read_key_file(path, str(path))


def _read_key_file(path: Path, source: str) -> tuple[MasterKey, ...]:
    try:
        text = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ConfigurationError(f"{source}: master key file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigurationError(f"{source}: cannot read master key file {str(path)!r}: {reason}") from None
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("master_key_file_open_to_others", path=str(path), mode=oct(stat.S_IMODE(mode)))
    return parse_master_keys(text, f"{source} {str(path)!r}")


def _create_key_file(path: Path, now: datetime) -> None:
    """Write a new master key to `path` (mode 0600) unless another process just did; never a half-written file."""
    key = generate_master_key(new_master_key_id(now))
    text = (
        "# openami master key: seals every meter's key in the database. Back it up apart from the database;\n"
        "# losing it loses every meter key. Entries `id:base64`, newest first.\n"
        f"{key.entry()}\n"
    )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.link(draft, path)  # atomic, and fails if another process created the file meanwhile
        except FileExistsError:
            return  # that process's key is the one: the caller reads it
        finally:
            draft.unlink(missing_ok=True)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot create the master key file {str(path)!r}: {exc.strerror}; {_HOW_TO_SET}"
        ) from exc
    log.warning(
        "master_key_created",
        path=str(path),
        key_id=key.key_id,
        advice="back this file up apart from the database: losing it loses every meter key",
    )
