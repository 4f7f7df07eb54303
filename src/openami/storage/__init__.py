"""Engine, session, declarative Base, bulk loaders and Alembic migrations."""
