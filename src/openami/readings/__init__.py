"""Readings: VEE (validation, estimation, editing), completeness, storage of intervals and registers."""
