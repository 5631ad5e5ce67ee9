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
from clipaudit.cli import concepts, coverage, demo, theory, zeroshot

app = typer.Typer(
    name="clipaudit",
    help="Audit which visual concepts an OpenCLIP model is aware of, and explain why from its captions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(concepts.app, name="concepts")
app.add_typer(coverage.app, name="coverage")
app.add_typer(theory.app, name="theory")
zeroshot.register(app)
demo.register(app)


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
    """Entry point: run the app, turning library errors into one line and an exit code."""
    from clipaudit.errors import ClipAuditError

    try:
        # without standalone mode, click returns (not raises) the exit code of an aborted command
        code = app(args=argv, standalone_mode=False)
    except ClipAuditError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.secho("interrupted; finished work is kept and the run can be resumed", err=True)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(1)
    except Exception as exc:  # click's usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    if code == 130:
        typer.secho("interrupted; finished work is kept and the run can be resumed", err=True)
    if isinstance(code, int) and code:
        sys.exit(code)
