"""What every command group shares: how a group is made, and the options many commands take."""

from __future__ import annotations

import copy
from typing import Any

import typer
from rich.console import Console
from typer.core import TyperArgument, TyperGroup

from clipaudit.registry import DEFAULT_REGISTRY
from clipaudit.text import inert_line


class _Argument(TyperArgument):
    """An argument written as usage lines conventionally write one: its name upper-case, "..."
    when it takes several, in brackets when it may be left out (RUNS..., NAME, [PATH]). typer
    writes a required one as "{runs}..." in the usage and "runs..." in the help."""

    def make_metavar(self, ctx: Any, *, usage: bool = False) -> str:
        name = self.metavar or (self.name or "").upper()
        if self.nargs != 1:
            name += "..."
        return f"[{name}]" if usage and not self.required else name

    def get_error_hint(self, ctx: Any) -> str:  # "Missing argument 'RUNS...'."
        return f"'{self.make_metavar(ctx)}'"


class CommandGroup(TyperGroup):
    """A group whose commands' arguments read as usage lines conventionally write them, and
    whose help lists its commands in :attr:`order` (then any other, as registered)."""

    order: tuple[str, ...] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # typer makes each argument itself (no hook chooses its class): the group, which every
        # command goes through, gives them the conventional names. A subgroup's are its own.
        for command in self.commands.values():
            if isinstance(command, TyperGroup):
                continue
            for parameter in command.params:
                if type(parameter) is TyperArgument:
                    parameter.__class__ = _Argument

    def list_commands(self, ctx: Any) -> list[str]:
        rank = {name: i for i, name in enumerate(self.order)}
        return sorted(self.commands, key=lambda name: rank.get(name, len(rank)))


def command_group(help: str) -> typer.Typer:
    """A command group with plain help (no rich panels) and conventional argument names."""
    return typer.Typer(
        help=help,
        no_args_is_help=True,
        add_completion=False,
        rich_markup_mode=None,
        cls=CommandGroup,
    )


class _PlainConsole(Console):
    """Prints each line of text inert: the file names, labels and reasons it shows come from
    corpora and image sets off the web, and rich passes an escape sequence in them on to the
    terminal (which clears, recolours or retitles it)."""

    def print(self, *objects: Any, **options: Any) -> None:
        super().print(*(inert_line(o) if isinstance(o, str) else o for o in objects), **options)


def plain_console() -> Console:
    """A console that prints text as given: paths, captions and concept names may hold "[...]"
    or ":name:", which rich would otherwise read as markup (and fail on) or as emoji codes; and
    their control characters are spaces (:func:`clipaudit.text.inert_line`). A line longer than
    the terminal is not broken (soft wrap): a path printed whole is one to copy."""
    return _PlainConsole(markup=False, emoji=False, soft_wrap=True)


RegistryOption = typer.Option(
    DEFAULT_REGISTRY, "--registry", "-r", help="Built-in registry name or YAML file."
)
OverwriteOption = typer.Option(
    False, "--overwrite", help="Replace a run of other settings in --out instead of refusing."
)
MaxPixelsOption = typer.Option(
    None,
    "--max-pixels",
    help="Skip images of more pixels than this as decompression bombs (default: Pillow's limit, "
    "about 89 million); raise it for large images you trust.",
)
AllConceptsOption = typer.Option(
    False,
    "--all-concepts",
    help="Classify among all concepts of a group, not only those with images (distractors count "
    "as errors).",
)


def for_stage(option: Any, stage: str) -> Any:
    """A shared option whose help names the stage of a multi-stage command it is for
    ("[zero-shot] ..."), as ``clipaudit audit`` marks its options."""
    marked = copy.copy(option)
    marked.help = f"[{stage}] {option.help}"
    return marked
