"""``clipaudit concepts``: list, show and validate concept registries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from clipaudit.cli._common import RegistryOption, command_group, plain_console
from clipaudit.registry import Registry, list_registries, load_registry, resolve_registry_path
from clipaudit.text import counted

app = command_group("List, show and validate concept registries.")
console = plain_console()
_SHOWN = 3  # the synonyms or concepts a note of validate names (the paper's registry: 14)


@app.command("list")
def list_(
    registry: str = RegistryOption,
    group: str | None = typer.Option(None, "--group", help="Only this group."),
) -> None:
    """List the groups and concepts of a registry."""
    reg = load_registry(registry)
    if group is not None:
        reg = reg.select([group])
    table = Table(title=f"{reg.name} v{reg.version}: {_size(reg)}")
    for column in ("category", "group", "concepts"):
        table.add_column(column)
    for g in reg.groups:
        names = ", ".join(c.name for c in reg.concepts_in(g.name))
        table.add_row(g.category, g.name + (" (sensitive)" if g.sensitive else ""), names)
    console.print(table)
    # by file, not name: a registry of one's own may carry a built-in's name
    shown = reg.path.resolve() if reg.path else None
    others = [n for n in list_registries() if resolve_registry_path(n).resolve() != shown]
    if others:
        console.print(f"other built-in registries: {', '.join(others)}")


@app.command("show")
def show(
    name: str = typer.Argument(..., help="Concept name."), registry: str = RegistryOption
) -> None:
    """Show one concept: its gloss, synonyms, negative contexts, prompts and sense rules."""
    reg = load_registry(registry)
    concept = reg.concept(name)
    group = reg.group(concept.group)
    table = Table(
        show_header=False,
        title=f"{concept.name} ({group.category} / {group.name}"
        f"{', sensitive' if group.sensitive else ''}, v{concept.version})",
    )
    table.add_column(style="bold")
    table.add_column()
    table.add_row("gloss", concept.gloss)
    table.add_row("synonyms", ", ".join(concept.synonyms))
    table.add_row("negative contexts", ", ".join(concept.negative_contexts) or "-")
    table.add_row("prompts", ", ".join(concept.prompts))
    if group.templates:
        table.add_row("templates (group)", " | ".join(group.templates))
    table.add_row("paper synonyms", ", ".join(concept.paper_synonyms) or "-")
    # the sense rules change what counts as a mention: shown when set, the group's marked so
    # (they apply to every concept of the group)
    for key, label in (("modifier_of", "modifier of"), ("not_after", "not after")):
        for owner, items in (("group", getattr(group, key)), ("", getattr(concept, key))):
            if items:
                table.add_row(f"{label} ({owner})" if owner else label, ", ".join(items))
    for key in ("colourways", "makes"):
        if getattr(concept, key):
            table.add_row(key, ", ".join(getattr(concept, key)))
    if concept.together:
        table.add_row("together", " + ".join(f"[{', '.join(w)}]" for w in concept.together))
    console.print(table)


@app.command("validate")
def validate(path: Path = typer.Argument(..., help="Registry YAML file to check.")) -> None:
    """Validate a registry file; exits non-zero with file:line and the problem when it is invalid."""
    reg = load_registry(path)
    console.print(
        f"ok {path}: registry {reg.name!r} v{reg.version}, {_size(reg)}, "
        f"{counted(len(reg.categories), 'category', 'categories')}"
    )
    for note in _notes(reg):
        console.print(f"note: {note}")


def _notes(reg: Registry) -> list[str]:
    """What a valid registry counts that its author may not mean, each with the fix."""
    notes = []
    shared = reg.shared_synonyms()
    if shared:  # right where one word names two concepts, but a slip counts both without a word
        group = {c.name: c.group for c in reg.concepts}
        shown = [
            f"{word!r} ({', '.join(f'{name} in {group[name]}' for name in names)})"
            for word, names in list(shared.items())[:_SHOWN]
        ]
        more = len(shared) - len(shown)
        notes.append(
            f"{counted(len(shared), 'synonym')} {'counts' if len(shared) == 1 else 'count'} for "
            f"concepts of more than one group: {'; '.join(shown)}"
            f"{f'; and {more} more' if more > 0 else ''}; right where one word names both, else "
            "remove it from one"
        )
    # the paper profile refuses a registry with none, but counts 0 for a concept without them
    # and for one whose every synonym a later concept also lists
    from clipaudit.lexical import concepts_not_counted, has_paper_synonyms

    if not has_paper_synonyms(reg):
        return notes
    not_counted = concepts_not_counted(reg, "paper")
    unlisted = [name for name, why in not_counted.items() if why == "no paper_synonyms"]
    if unlisted:
        more = len(unlisted) - _SHOWN
        notes.append(
            f"the 'paper' profile never counts {counted(len(unlisted), 'concept')}, which "
            f"{'has' if len(unlisted) == 1 else 'have'} no paper_synonyms: "
            f"{', '.join(unlisted[:_SHOWN])}{f' and {more} more' if more > 0 else ''}; add "
            "them, or count with the 'curated' profile"
        )
    shadowed = [(name, why) for name, why in not_counted.items() if name not in unlisted]
    if shadowed:
        more = len(shadowed) - _SHOWN
        notes.append(
            f"the 'paper' profile never counts {counted(len(shadowed), 'concept')} whose every "
            "paper synonym a later concept also lists (a shared one counts for the last): "
            f"{', '.join(f'{name} ({why})' for name, why in shadowed[:_SHOWN])}"
            f"{f' and {more} more' if more > 0 else ''}; give "
            f"{'it a synonym of its own' if len(shadowed) == 1 else 'each a synonym of its own'}, "
            "or count with the 'curated' profile"
        )
    return notes


def _size(reg: Any) -> str:
    """ "146 concepts in 15 groups", "1 concept in 1 group"."""
    return f"{counted(len(reg.concepts), 'concept')} in {counted(len(reg.groups), 'group')}"
