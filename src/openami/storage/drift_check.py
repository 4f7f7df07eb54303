"""`make db-check`: migrate a scratch SQLite database to head; fail when the models drifted from the migrations."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from openami.common.errors import ConfigurationError
from openami.storage import migrate


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'drift.db'}"
        migrate.upgrade(url)
        try:
            migrate.check(url)
        except ConfigurationError as exc:
            print(f"db-check: {exc}", file=sys.stderr)
            return 1
    print("db-check: models and migrations agree")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
