"""Value types, the clock, errors and units shared by every context. Imports nothing else of openami."""
