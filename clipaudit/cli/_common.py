"""What every command group shares: how a group is made, and the options many commands take."""

from __future__ import annotations

import typer
from rich.console import Console

from clipaudit.registry import DEFAULT_REGISTRY


def command_group(help: str) -> typer.Typer:
    """A command group with plain help (flags shown as flags, no type placeholders)."""
    return typer.Typer(help=help, no_args_is_help=True, add_completion=False, rich_markup_mode=None)


def plain_console() -> Console:
    """A console that prints text as given: paths, captions and concept names may hold "[...]"
    or ":name:", which rich would otherwise read as markup (and fail on) or as emoji codes."""
    return Console(markup=False, emoji=False)


RegistryOption = typer.Option(
    DEFAULT_REGISTRY, "--registry", "-r", help="Built-in registry name or YAML file."
)
OverwriteOption = typer.Option(
    False, "--overwrite", help="Replace a run of other settings in --out instead of refusing."
)
