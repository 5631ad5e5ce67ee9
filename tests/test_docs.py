"""The command lines the docs show parse as the CLI has them: every `clipaudit ...` line of the
README's and the notebooks' bash blocks names commands and options that exist, with values of the
right kind and the required arguments present. Nothing runs: click only parses each line, so a
renamed flag or subcommand fails here, not in a newcomer's terminal."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import typer

from clipaudit.cli import app

REPO = Path(__file__).resolve().parent.parent


def bash_blocks(markdown: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", markdown, re.S)


def command_lines(block: str) -> list[list[str]]:
    """The `clipaudit` invocations of a bash block, continuation lines joined and comments dropped,
    each as its arguments after `clipaudit` (one that follows `--`, as in `kubectl exec ... --`,
    counts too)."""
    found = []
    for line in block.replace("\\\n", " ").splitlines():
        # other lines (an `echo` of a quoted text spanning lines) need not split as shell words
        if re.match(r"(\S.* -- )?clipaudit ", line):
            words = shlex.split(line, comments=True)
            found.append(words[words.index("clipaudit") + 1 :])
    return found


def documented_commands() -> list[tuple[str, list[str]]]:
    sources = {"README.md": (REPO / "README.md").read_text(encoding="utf-8")}
    for notebook in sorted((REPO / "notebooks").glob("*.ipynb")):
        cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
        markdown = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
        sources[f"notebooks/{notebook.name}"] = markdown
    return [
        (f"{name}: clipaudit {shlex.join(args)}", args)
        for name, text in sources.items()
        for block in bash_blocks(text)
        for args in command_lines(block)
    ]


COMMANDS = documented_commands()


def test_the_docs_show_every_command():
    """Every top-level command is shown at least once, which also keeps the parsing test below
    from passing on an empty list (a changed code fence, say)."""
    shown = {args[0] for _, args in COMMANDS}
    assert set(typer.main.get_command(app).commands) <= shown


@pytest.mark.parametrize("args", [a for _, a in COMMANDS], ids=[i for i, _ in COMMANDS])
def test_a_documented_command_line_parses(args):
    # typer carries its own copy of click, so a group is told by its commands, not its class
    command = typer.main.get_command(app)
    words = list(args)
    names = []
    while hasattr(command, "commands"):
        name = words.pop(0)
        names.append(name)
        assert name in command.commands, f"no command 'clipaudit {' '.join(names)}'"
        command = command.commands[name]
    # parses options, types and required arguments; the command's function is not called
    command.make_context(f"clipaudit {' '.join(names)}", words)
