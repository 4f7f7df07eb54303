"""`openami worker` refuses to start in one clear line and a non-zero status, never with a traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from openami.headend import worker

# A server-mode URL: bootstrap() asks for a master key before it would ever connect to the database.
POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/openami_worker_test"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """`worker.main` configures structlog for the process; give the next test the configuration it had."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def _closed_port() -> int:
    """A local TCP port nothing listens on (bound once, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_no_master_key_on_postgresql_exits_2_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("OPENAMI_MASTER_KEYS", raising=False)
    monkeypatch.delenv("OPENAMI_MASTER_KEY_FILE", raising=False)

    status = worker.main(["--database-url", POSTGRES_URL])

    assert status == worker.EXIT_CONFIGURATION == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("openami worker: cannot start: no master key")
    assert "OPENAMI_MASTER_KEYS" in lines[0]


def test_unreachable_broker_exits_1_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = _closed_port()

    status = worker.main(
        ["--database-url", f"sqlite:///{tmp_path / 'w.db'}", "--mqtt-port", str(port), "--log-level", "ERROR"]
    )

    assert status == worker.EXIT_UNREACHABLE == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(
        f"openami worker: cannot start: cannot connect to the MQTT broker at 127.0.0.1:{port}"
    )


def test_malformed_setting_is_named_without_its_value(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OPENAMI_MQTT_PORT", "not-a-port-42")

    status = worker.main([])

    assert status == worker.EXIT_CONFIGURATION
    err = capsys.readouterr().err
    assert err.startswith("openami worker: cannot start: OPENAMI_MQTT_PORT: ")
    assert "not-a-port-42" not in err
    assert len(err.splitlines()) == 1


def test_the_command_prints_no_traceback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """What an operator sees from `python -m openami.headend.worker` itself (the `openami worker` entry)."""
    monkeypatch.delenv("OPENAMI_MASTER_KEYS", raising=False)
    monkeypatch.delenv("OPENAMI_MASTER_KEY_FILE", raising=False)

    result = subprocess.run(
        [sys.executable, "-m", "openami.headend.worker", "--database-url", POSTGRES_URL],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1
    assert "cannot start: no master key" in result.stderr
