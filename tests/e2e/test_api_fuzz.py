"""Property-based fuzz of the whole API from its OpenAPI schema: whatever is sent, the server never fails (no 500).

The app runs in-process (ASGI) over a small demo site, so generated ids and serials sometimes name real objects.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from rich.console import Console

from openami.api.app import create_app
from openami.cli.demo import run_demo


@pytest.fixture(scope="module")
def demo_app(tmp_path_factory: pytest.TempPathFactory) -> object:
    workdir: Path = tmp_path_factory.mktemp("fuzz")
    url = f"sqlite:///{workdir / 'fuzz.db'}"
    _summary, container = run_demo(
        meters=6,
        days=2,
        seed=3,
        database_url=url,
        console=Console(quiet=True),
        show_progress=False,
        now=datetime(2026, 3, 2, 12, tzinfo=UTC),
        log_file=workdir / "demo.log",
    )
    return create_app(container)


def test_no_request_makes_the_server_fail(demo_app: object) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", demo_app)
    sent = 0
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 30  # every route of the API is in the schema, so every route gets fuzzed

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def no_server_error(case: schemathesis.Case) -> None:
            nonlocal sent
            response = case.call()
            sent += 1
            assert response.status_code < 500, (
                f"{case.method} {case.formatted_path}: {response.status_code} {response.text}"
            )

        no_server_error()
    print(f"fuzz: {sent} requests over {len(operations)} operations, no server error")
