"""Meter keys sealed with AES-256-GCM: round trip, what refuses to open, master key configuration."""

from __future__ import annotations

import base64
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from openami.bootstrap import bootstrap
from openami.common.errors import ConfigurationError, ValidationError
from openami.config import Settings
from openami.security.meter_keys import (
    FORMAT_VERSION,
    NONCE_BYTES,
    MasterKey,
    MeterKeyCipher,
    MeterKeyError,
    generate_master_key,
    is_legacy_plaintext,
    load_master_keys,
    new_master_key_id,
    parse_master_keys,
)

METER_KEY = bytes(range(32))
OLD = MasterKey("old", bytes(range(100, 132)))
NEW = MasterKey("new", bytes(range(200, 232)))
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/openami"


def _secrets_in(text: str, *keys: bytes) -> list[str]:
    """The forms of `keys` (hex either case, base64, Python repr) that appear in `text`."""
    forms = []
    for key in keys:
        forms += [key.hex(), key.hex().upper(), base64.b64encode(key).decode(), repr(key)[2:-1]]
    return [f for f in forms if f in text]


def test_a_sealed_key_opens_for_its_meter_only() -> None:
    cipher = MeterKeyCipher([NEW])
    sealed = cipher.seal("SN0001", METER_KEY)
    assert cipher.open("SN0001", sealed) == METER_KEY
    assert METER_KEY not in sealed
    assert not is_legacy_plaintext(sealed)
    # version, id length, id, nonce, ciphertext and tag
    assert sealed[0] == FORMAT_VERSION
    assert sealed[1:5] == b"\x03new"
    assert len(sealed) == 2 + 3 + NONCE_BYTES + 32 + 16
    assert cipher.key_id_of("SN0001", sealed) == "new"
    with pytest.raises(MeterKeyError, match=r"^meter 'SN0002': its sealed key does not open") as caught:
        cipher.open("SN0002", sealed)  # copied to another meter's row
    assert caught.value.serial == "SN0002"
    assert _secrets_in(str(caught.value), METER_KEY, NEW.key, sealed) == []


def test_every_seal_draws_a_fresh_nonce() -> None:
    cipher = MeterKeyCipher([NEW])
    first, second = cipher.seal("SN0001", METER_KEY), cipher.seal("SN0001", METER_KEY)
    header = 2 + len("new")
    assert first[header : header + NONCE_BYTES] != second[header : header + NONCE_BYTES]
    assert first != second


@pytest.mark.parametrize("position", [2, 6, 20, -1], ids=["key id", "nonce", "ciphertext", "tag"])
def test_a_changed_byte_anywhere_refuses_to_open(position: int) -> None:
    cipher = MeterKeyCipher([NEW, MasterKey("nex", OLD.key)])
    sealed = bytearray(cipher.seal("SN0001", METER_KEY))
    if position == 2:
        sealed[2:5] = b"nex"  # names the other configured master key: the header is authenticated too
    else:
        sealed[position] ^= 0x01
    with pytest.raises(MeterKeyError, match="does not open"):
        cipher.open("SN0001", bytes(sealed))


def test_unknown_master_key_id_names_it_and_the_meter() -> None:
    sealed = MeterKeyCipher([OLD]).seal("SN0001", METER_KEY)
    with pytest.raises(MeterKeyError) as caught:
        MeterKeyCipher([NEW]).open("SN0001", sealed)
    message = str(caught.value)
    assert "meter 'SN0001'" in message
    assert "master key 'old', which is not configured" in message
    assert "OPENAMI_MASTER_KEYS" in message
    assert _secrets_in(message, METER_KEY, OLD.key, NEW.key) == []


def test_the_newest_master_key_seals_and_any_configured_one_opens() -> None:
    sealed_old = MeterKeyCipher([OLD]).seal("SN0001", METER_KEY)
    both = MeterKeyCipher([NEW, OLD])
    assert both.open("SN0001", sealed_old) == METER_KEY
    sealed_new = both.seal("SN0001", METER_KEY)
    assert both.key_id_of("SN0001", sealed_new) == "new"
    assert MeterKeyCipher([NEW]).open("SN0001", sealed_new) == METER_KEY
    with pytest.raises(MeterKeyError):
        MeterKeyCipher([OLD]).open("SN0001", sealed_new)


def test_what_is_not_a_sealed_key_is_refused_clearly() -> None:
    cipher = MeterKeyCipher([NEW])
    sealed = cipher.seal("SN0001", METER_KEY)
    with pytest.raises(MeterKeyError, match="format version 2"):
        cipher.open("SN0001", b"\x02" + sealed[1:])
    with pytest.raises(MeterKeyError, match=r"has 63 bytes; a sealed key with this header has 65"):
        cipher.open("SN0001", sealed[:-2])
    with pytest.raises(MeterKeyError, match="is not a sealed meter key"):
        cipher.open("SN0001", b"\x01")
    with pytest.raises(ValidationError, match="a meter key has 32 bytes, got 31"):
        cipher.seal("SN0001", METER_KEY[:31])


def test_keys_stay_out_of_reprs() -> None:
    assert NEW.key.hex() not in repr(NEW)
    assert "b'" not in repr(NEW)
    assert repr(MeterKeyCipher([NEW, OLD])) == "MeterKeyCipher(key_ids=['new', 'old'])"
    settings = Settings(master_keys=SecretStr(NEW.entry()))
    assert _secrets_in(repr(settings) + str(settings), NEW.key) == []


def test_a_cipher_needs_unique_master_keys() -> None:
    with pytest.raises(ConfigurationError, match="no master key"):
        MeterKeyCipher([])
    with pytest.raises(ConfigurationError, match="unique"):
        MeterKeyCipher([NEW, MasterKey("new", OLD.key)])


# --- configuration ---------------------------------------------------------------------------------------------


def test_master_keys_are_parsed_newest_first_from_commas_or_lines() -> None:
    assert parse_master_keys(f"{NEW.entry()}, {OLD.entry()}", "env") == (NEW, OLD)
    text = f"# the site's keys\n{NEW.entry()}\n\n# retired next month, before: {OLD.entry()}\n{OLD.entry()}\n"
    assert parse_master_keys(text, "file") == (NEW, OLD)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("new", "entry 1: expected `id:base64`"),
        (f"{NEW.entry()},:{base64.b64encode(OLD.key).decode()}", "entry 2: expected `id:base64`"),
        ("new:not base64!", "entry 1 ('new'): the key is not valid base64"),
        (f"new:{base64.b64encode(b'short').decode()}", "master key 'new': must be 32 bytes, got 5"),
        (f"{NEW.entry()},{NEW.entry()}", "entry 2: master key id 'new' appears twice"),
        ("# nothing but a comment", "holds no master key"),
    ],
)
def test_bad_master_key_entries_are_named_by_position(text: str, expected: str) -> None:
    with pytest.raises(ConfigurationError, match=r"^OPENAMI_MASTER_KEYS") as caught:
        parse_master_keys(text, "OPENAMI_MASTER_KEYS")
    assert expected in str(caught.value)


def test_an_entry_written_the_wrong_way_round_is_not_echoed() -> None:
    encoded = base64.b64encode(NEW.key).decode()
    with pytest.raises(ConfigurationError) as caught:
        parse_master_keys(f"{encoded}:new", "OPENAMI_MASTER_KEYS")
    assert "entry 1: the id before ':'" in str(caught.value)
    assert _secrets_in(str(caught.value), NEW.key) == []


def test_generated_master_keys_are_random_and_dated() -> None:
    now = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    key_id = new_master_key_id(now)
    assert key_id.startswith("k20260302-")
    first, second = generate_master_key(key_id), generate_master_key(key_id)
    assert first.key != second.key
    assert parse_master_keys(first.entry(), "printed") == (first,)
    with pytest.raises(ValidationError, match="master key id"):
        generate_master_key("has space")


def test_settings_take_the_keys_from_the_environment_or_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAMI_MASTER_KEYS", f"{NEW.entry()},{OLD.entry()}")
    assert load_master_keys(Settings(database_url=PG_URL)) == (NEW, OLD)
    path = tmp_path / "keys"
    path.write_text(f"{OLD.entry()}\n")
    monkeypatch.setenv("OPENAMI_MASTER_KEY_FILE", str(path))
    with pytest.raises(ConfigurationError, match="not both"):
        load_master_keys(Settings(database_url=PG_URL))
    monkeypatch.delenv("OPENAMI_MASTER_KEYS")
    assert load_master_keys(Settings(database_url=PG_URL)) == (OLD,)
    monkeypatch.setenv("OPENAMI_MASTER_KEY_FILE", str(tmp_path / "missing"))
    with pytest.raises(
        ConfigurationError, match=r"OPENAMI_MASTER_KEY_FILE: master key file .* does not exist"
    ):
        load_master_keys(Settings(database_url=PG_URL))


def test_the_server_mode_has_no_default_master_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAMI_MASTER_KEYS")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError) as caught:
        bootstrap(Settings(database_url=PG_URL))
    message = str(caught.value)
    assert "server mode (PostgreSQL) has no default" in message
    assert "set OPENAMI_MASTER_KEYS" in message
    assert "OPENAMI_MASTER_KEY_FILE" in message
    assert not (tmp_path / "var").exists()


def test_the_embedded_mode_makes_its_master_key_once_on_first_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAMI_MASTER_KEYS")
    monkeypatch.chdir(tmp_path)
    settings = Settings()  # SQLite under ./var
    with capture_logs() as logs:
        first = MeterKeyCipher.from_settings(settings)
    path = tmp_path / "var" / "master.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    (created,) = [e for e in logs if e["event"] == "master_key_created"]
    assert created["path"] == os.path.join("var", "master.key")
    (key,) = load_master_keys(settings)
    assert first.key_ids == (key.key_id,)
    assert _secrets_in(str(logs), key.key) == []
    # A second start (another process, the API after the demo) uses the same key and makes no other.
    sealed = first.seal("SN0001", METER_KEY)
    with capture_logs() as again:
        assert MeterKeyCipher.from_settings(Settings()).open("SN0001", sealed) == METER_KEY
    assert again == []
    assert sorted(p.name for p in path.parent.iterdir()) == ["master.key"]


def test_a_master_key_file_open_to_others_is_warned_about(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "keys"
    path.write_text(NEW.entry())
    path.chmod(0o644)
    monkeypatch.delenv("OPENAMI_MASTER_KEYS")
    monkeypatch.setenv("OPENAMI_MASTER_KEY_FILE", str(path))
    with capture_logs() as logs:
        load_master_keys(Settings())
    assert [(e["event"], e["mode"]) for e in logs] == [("master_key_file_open_to_others", "0o644")]
