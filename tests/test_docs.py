"""The command lines the docs show parse as the CLI has them: every `clipaudit ...` line of the
README's and the notebooks' bash blocks names commands and options that exist, with values of the
right kind and the required arguments present. Nothing runs: click only parses each line, so a
renamed flag or subcommand fails here, not in a newcomer's terminal. Below, what the README's prose
names: commands and options in inline code, links, files, modules, the Layout tree and API names;
and its Python blocks run as pasted into a script."""

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


# What the README's prose names, checked against the code: inline options, files, modules, API
# names and its Python blocks. Each check takes the markdown text, so that the test below can show
# it catches a drifted copy, not only that the real README passes.

FENCED = re.compile(r"```.*?```", re.S)
REPO_PATH = re.compile(
    r"(\.\./shared|clipaudit|tests|benchmarks|notebooks|concepts|docs)/\S*(\.\w+|/)"
)
MODULE = re.compile(r"[a-z_]+(\.py|/)")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def inline_spans(markdown: str) -> list[str]:
    """The inline code spans outside fenced blocks, a span wrapped over lines joined."""
    return [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", FENCED.sub("", markdown))]


def command_options() -> dict[tuple[str, ...], tuple[object, set[str]]]:
    """Every command path (`("coverage", "count")`) with its click command and option names."""
    found: dict[tuple[str, ...], tuple[object, set[str]]] = {}

    def walk(command: object, path: tuple[str, ...]) -> None:
        names = {n for p in command.params for n in (*p.opts, *p.secondary_opts)} | {"--help"}
        found[path] = (command, names)
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, (*path, name))

    walk(typer.main.get_command(app), ())
    return found


def option_names(words: list[str]) -> list[str]:
    return [w.split("=", 1)[0] for w in words if re.match(r"--?[A-Za-z]", w)]


def prose_option_problems(markdown: str) -> list[str]:
    """A `clipaudit CMD ... --opt` span names a command and its options; a span that starts with
    an option (`--skip-bad`) names one that some command has."""
    commands = command_options()
    every_option = set().union(*(names for _, names in commands.values()))
    problems = []
    for span in inline_spans(markdown):
        words = span.split()
        if words[0] == "clipaudit" and len(words) > 1 and not words[1].startswith("-"):
            path: tuple[str, ...] = ()
            rest = words[1:]
            while rest and hasattr(commands[path][0], "commands"):
                if "/" in rest[0]:  # `clipaudit concepts list/show/validate`: a list of commands
                    problems += [
                        f"`{span}`: no command 'clipaudit {' '.join((*path, part))}'"
                        for part in rest[0].split("/")
                        if (*path, part) not in commands
                    ]
                    break
                path = (*path, rest.pop(0))
                if path not in commands:
                    problems.append(f"`{span}`: no command 'clipaudit {' '.join(path)}'")
                    break
            else:  # a whole command named: what follows are its options and values
                problems += [
                    f"`{span}`: 'clipaudit {' '.join(path)}' has no option {name}"
                    for name in option_names(rest)
                    if name not in commands[path][1]
                ]
        elif words[0].startswith("-"):
            problems += [
                f"`{span}`: no clipaudit command has the option {name}"
                for name in option_names(words)
                if name not in every_option
            ]
    return problems


def path_problems(markdown: str, root: Path) -> list[str]:
    """Links, images and the repository paths and modules named in spans exist (paths under
    `../shared` only where that folder is there)."""
    shared = (root / ".." / "shared").is_dir()
    problems = []
    for target in LINK.findall(FENCED.sub("", markdown)):
        if not re.match(r"[a-z]+://", target) and not (root / target.split("#")[0]).exists():
            problems.append(f"link to {target}: no such file")
    for span in inline_spans(markdown):
        if REPO_PATH.fullmatch(span):
            if (shared or not span.startswith("../shared/")) and not (root / span).exists():
                problems.append(f"`{span}`: no such file or folder")
        elif MODULE.fullmatch(span) and not any(
            (r / span).exists() for r in (root / "clipaudit", root)
        ):
            problems.append(f"`{span}`: no such module in clipaudit/ (nor folder)")
    return problems


def resolve(name: str) -> object:
    """The object a dotted name (`clipaudit.semantic.store.EMBEDDING_PROCEDURE`) names."""
    import importlib

    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            found = getattr(found, attribute)
        return found
    raise ImportError(name)


def api_name_problems(markdown: str) -> list[str]:
    """Every `clipaudit.NAME...` in a span is importable."""
    problems = []
    for span in inline_spans(markdown):
        for name in re.findall(r"\bclipaudit(?:\.[A-Za-z_]\w*)+", span):
            try:
                resolve(name)
            except (ImportError, AttributeError) as exc:
                problems.append(f"`{span}`: {name} does not resolve ({exc})")
    return problems


def layout_problems(markdown: str, root: Path) -> list[str]:
    """The Layout section's tree names the package's modules, every one of them, and its folders."""
    block = re.search(r"## Layout\n+```\n(.*?)```", markdown, re.S).group(1)
    package = root / "clipaudit"
    shown = {f"{name}.py" for name in re.findall(r"\b(\w+)\.py\b", block)}
    unlisted = {p.name for p in package.glob("*.py")} - {"__init__.py", "__main__.py"}
    problems = [f"Layout: clipaudit/{n} does not exist" for n in sorted(shown - unlisted)]
    problems += [f"Layout: clipaudit/{n} is not listed" for n in sorted(unlisted - shown)]
    for folder, members in re.findall(r"(\w+)/ \(([^)]*)\)", block):
        names = {m.strip() for m in members.split(",")}
        if not (package / folder).is_dir():
            problems.append(f"Layout: clipaudit/{folder}/ does not exist")
        elif all(" " not in n for n in names):  # a list of modules, not a description
            on_disk = {
                p.stem for p in (package / folder).iterdir() if p.suffix == ".py" or p.is_dir()
            }
            on_disk -= {"__init__", "__pycache__"}
            problems += [
                f"Layout: clipaudit/{folder}/{n} does not exist" for n in sorted(names - on_disk)
            ]
            problems += [
                f"Layout: clipaudit/{folder}/{n} is not listed" for n in sorted(on_disk - names)
            ]
    for line in block.splitlines():
        top = re.match(r"(\S+/)\s", line)
        if top and not (root / top.group(1)).is_dir():
            problems.append(f"Layout: {top.group(1)} does not exist")
    return problems


def run_python_blocks(markdown: str) -> None:
    """Run each `python` block on its own, as a newcomer pasting it into a script would: no name
    given to it from outside, in the current folder."""
    for number, block in enumerate(re.findall(r"```python\n(.*?)```", markdown, re.S)):
        exec(
            compile(block, f"README.md python block {number + 1}", "exec"), {"__name__": "__main__"}
        )


README_TEXT = (REPO / "README.md").read_text(encoding="utf-8")


def test_the_readme_prose_names_real_commands_and_options():
    assert prose_option_problems(README_TEXT) == []


def test_the_readme_links_files_and_modules_exist():
    assert path_problems(README_TEXT, REPO) == []


def test_the_readme_api_names_resolve():
    assert api_name_problems(README_TEXT) == []


def test_the_readme_layout_is_the_package():
    assert layout_problems(README_TEXT, REPO) == []


def test_every_python_block_of_the_readme_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_python_blocks(README_TEXT)
    assert (tmp_path / "runs" / "x" / "manifest.json").is_file()


@pytest.mark.parametrize(
    ("shown", "drifted", "check"),
    [
        ("`--skip-bad`", "`--skip-bads`", prose_option_problems),
        (
            "`clipaudit zeroshot --templates",
            "`clipaudit zeroshot --template",
            prose_option_problems,
        ),
        (
            "`clipaudit coverage count/eval",
            "`clipaudit coverage count/merge",
            prose_option_problems,
        ),
        ("`clipaudit theory run/check`", "`clipaudit theories run/check`", prose_option_problems),
        ("(docs/demo.png)", "(docs/demo.jpg)", lambda md: path_problems(md, REPO)),
        ("`benchmarks/RESULTS.md`", "`benchmarks/RESULT.md`", lambda md: path_problems(md, REPO)),
        (
            "`registry.py`, `concepts/`",
            "`registries.py`, `concepts/`",
            lambda md: path_problems(md, REPO),
        ),
        ("store.EMBEDDING_PROCEDURE", "store.EMBEDDING_PROCEDURES", api_name_problems),
        ("goldeval.py", "gold.py", lambda md: layout_problems(md, REPO)),
        ("counting, calibration,", "counting,", lambda md: layout_problems(md, REPO)),
    ],
)
def test_the_readme_checks_catch_a_drifted_readme(shown, drifted, check):
    """Each check reports the README with one name changed, so a passing check means something."""
    assert shown in README_TEXT, "the README no longer holds the text this case changes"
    assert check(README_TEXT) == []
    assert check(README_TEXT.replace(shown, drifted, 1)) != []


def test_a_python_block_that_needs_a_name_from_outside_fails(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(NameError):
        run_python_blocks("```python\ncoverage = count(captions)\n```\n")
