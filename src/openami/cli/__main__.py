"""`python -m openami.cli` runs the `openami` command."""

from openami.cli.main import app

app()
