"""`make bench` on a fresh machine: with no master key configured, the PostgreSQL benchmark still runs, because each
run makes a throwaway key for its container and its worker processes."""

from __future__ import annotations

import pytest
from bench import ingest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_postgres_ingest_runs_with_no_master_key_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAMI_MASTER_KEYS", raising=False)
    monkeypatch.delenv("OPENAMI_MASTER_KEY_FILE", raising=False)
    monkeypatch.delenv("OPENAMI_DATABASE_URL", raising=False)

    # The worker subprocess must open the meters' keys the container sealed: every frame stored (checked inside).
    figures = ingest.postgres_mqtt(3, 2, workers=1)

    assert figures.intervals == 3 * 2 * 96
    assert figures.e2e_seconds > 0
