"""Imports every context's models so Base.metadata knows every table (for Alembic and for tests)."""

from openami.storage.base import Base

# Each import registers its tables on Base.metadata. Add a context's models module here when it gains tables.
from openami.registry import models as registry_models  # noqa: F401  (imported for its tables)

metadata = Base.metadata
