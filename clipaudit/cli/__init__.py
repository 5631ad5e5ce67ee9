"""The ``clipaudit`` command line: a thin layer over the library.

Each command parses options, makes one library call and prints. Commands come in git-style groups
(``clipaudit concepts ...``, ``clipaudit coverage ...``); each group lives in its own module here.
Library errors (:class:`clipaudit.errors.ClipAuditError`) become one line on stderr and an exit code,
in :func:`main` and nowhere else.
"""

from __future__ import annotations

import sys

import typer

from clipaudit import __version__
from clipaudit.cli import audit, concepts, coverage, demo, report, theory, world, zeroshot
from clipaudit.cli._common import CommandGroup


class _Commands(CommandGroup):
    # as a user meets them: the demo, then the audit and its parts (the concepts, caption
    # coverage, zero-shot awareness, the report), then the world and the theory; typer itself
    # lists commands as registered, and every command before every group
    order = ("demo", "audit", "concepts", "coverage", "zeroshot", "report", "world", "theory")


app = typer.Typer(
    name="clipaudit",
    help="Audit which visual concepts an OpenCLIP model is aware of, and explain why from its captions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    cls=_Commands,
)
app.add_typer(concepts.app, name="concepts")
app.add_typer(coverage.app, name="coverage")
app.add_typer(theory.app, name="theory")
app.add_typer(world.app, name="world")
zeroshot.register(app)
demo.register(app)
report.register(app)
audit.register(app)

INTERRUPTED = "interrupted; finished work is kept: run the same command again to resume"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"clipaudit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Audit which visual concepts an OpenCLIP model is aware of, and explain why from its captions."""


def main(argv: list[str] | None = None) -> None:
    """Entry point, and the one place where errors become messages and exit codes: a usage
    mistake is one line and the usage (exit 2), a library error one line (its exit code, 2),
    an interrupt one line (130; SIGTERM during a run 143); never a traceback for any of them."""
    import importlib
    import os

    from clipaudit.errors import WRITE_ERRNOS, ClipAuditError, Stopped, cannot_write
    from clipaudit.text import inert_line

    # before torch is imported: its OpenMP threads then sleep instead of spinning while they wait,
    # which on a busy machine makes small models' steps over ten times slower
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    # typer raises the exceptions of the click it bundles; find them where typer takes them from
    click = importlib.import_module(typer.BadParameter.__module__)
    try:
        code = app(args=argv, prog_name="clipaudit", standalone_mode=False)
    except ClipAuditError as exc:
        # a message names paths, captions and labels the user or the web wrote: its control
        # characters (a line break, an escape sequence) must not reach the terminal
        _fail(f"error: {inert_line(str(exc))}", exc.exit_code)
    except Stopped as exc:  # SIGTERM during a run: as a shell reports it, 128 + 15
        _fail(f"{exc}; {INTERRUPTED.removeprefix('interrupted; ')}", 143)
    except KeyboardInterrupt:
        _fail(INTERRUPTED, 130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        _fail("aborted", 130)
    except click.NoArgsIsHelpError as exc:  # a bare command group: its help is the answer
        typer.echo(exc.ctx.get_help())
        sys.exit(0)
    except click.UsageError as exc:
        usage = exc.ctx.get_usage() if exc.ctx is not None else ""
        command = exc.ctx.command_path if exc.ctx is not None else "clipaudit"
        _fail(
            f"error: {inert_line(exc.format_message())}\n{usage} (more: {command} --help)".strip(),
            exc.exit_code,
        )
    except click.ClickException as exc:
        _fail(f"error: {inert_line(exc.format_message())}", exc.exit_code)
    except OSError as exc:  # a full or read-only disk met by any write: the fix, not a traceback
        if exc.errno not in WRITE_ERRNOS:
            raise
        _fail(f"error: {inert_line(cannot_write(str(exc.filename or 'the output'), exc))}", 2)
    if code == 130:  # typer turns Ctrl-C into Exit(130) and, here, returns that code
        _fail(INTERRUPTED, 130)
    if isinstance(code, int) and code:
        sys.exit(code)


def _fail(message: str, code: int) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    sys.exit(code)
