"""`python -m connector_core` runs the `connector` command."""

from connector_core.cli import console

console()
