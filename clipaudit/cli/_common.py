"""What every command group shares: how a group is made, and the options many commands take."""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console

from clipaudit.registry import DEFAULT_REGISTRY
from clipaudit.text import inert_line


def command_group(help: str) -> typer.Typer:
    """A command group with plain help (flags shown as flags, no type placeholders)."""
    return typer.Typer(help=help, no_args_is_help=True, add_completion=False, rich_markup_mode=None)


class _PlainConsole(Console):
    """Prints each line of text inert: the file names, labels and reasons it shows come from
    corpora and image sets off the web, and rich passes an escape sequence in them on to the
    terminal (which clears, recolours or retitles it)."""

    def print(self, *objects: Any, **options: Any) -> None:
        super().print(*(inert_line(o) if isinstance(o, str) else o for o in objects), **options)


def plain_console() -> Console:
    """A console that prints text as given: paths, captions and concept names may hold "[...]"
    or ":name:", which rich would otherwise read as markup (and fail on) or as emoji codes; and
    their control characters are spaces (:func:`clipaudit.text.inert_line`)."""
    return _PlainConsole(markup=False, emoji=False)


RegistryOption = typer.Option(
    DEFAULT_REGISTRY, "--registry", "-r", help="Built-in registry name or YAML file."
)
OverwriteOption = typer.Option(
    False, "--overwrite", help="Replace a run of other settings in --out instead of refusing."
)
