"""``clipaudit theory``: placeholder group, filled in by its issue."""

from __future__ import annotations

import typer

app = typer.Typer(help="theory commands.", no_args_is_help=True)
