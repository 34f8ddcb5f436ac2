"""The `eventstore` command: read, follow, total and export an eventstore log.

    eventstore --db sqlite:///audit.db list --conversation c1 --after 7d
    eventstore show c1
    eventstore tail --type policy_violation
    eventstore costs --by model --after 2026-11-01
    eventstore export --format parquet --output events.parquet
    eventstore rebuild
    eventstore subscriptions
    eventstore budgets
    eventstore alerts --follow
    eventstore count --type policy_violation
    eventstore checkpoint -o today.checkpoint
    eventstore verify --checkpoint today.checkpoint
    eventstore prompts
    eventstore --master-key-file master.key retention --content-after 30d --dry-run

Data goes to stdout; progress bars, next-page cursors and errors go to stderr, so stdout
can always be piped. Errors are one line, `error: <message>`, with exit status 2 for bad
input (options, dates, cursors, URLs) and 1 for everything else (a missing database, an
unreachable server).
"""

from __future__ import annotations

import asyncio
import os
import sys

import click

from ..errors import EventStoreError, InvalidQueryError, UnsupportedURLError
from . import (
    budgets,
    costs,
    export,
    integrity,
    log,
    projections,
    prompts,
    retention,
    serve,
    subscriptions,
)
from .base import err, out

DEFAULT_URL = "sqlite:///eventstore.db"

# The command groups, each a module with a COMMANDS tuple; a new group is one more entry.
GROUPS = (log, costs, export, projections, subscriptions, serve, retention, prompts,
          integrity, budgets)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--db", default=DEFAULT_URL, show_default=True, envvar="EVENTSTORE_URL",
              show_envvar=True, metavar="URL",
              help="Store URL: sqlite:///path.db, sqlite:////abs/path.db, jsonl:///dir or "
                   "postgresql://user@host:port/db. A SQLite file or jsonl directory must "
                   "already exist (add ?create=1 to allow a new one).")
@click.option("--master-key-file", type=click.Path(dir_okay=False), metavar="FILE",
              envvar="EVENTSTORE_MASTER_KEY_FILE", show_envvar=True,
              help="The master key of an encrypted store (base64 or hex), so its personal "
                   "fields read decrypted, or [ERASED] once forgotten. EVENTSTORE_MASTER_KEY "
                   "may hold the key itself. Without a key they show as [ENCRYPTED].")
@click.version_option(package_name="eventstore")
def cli(db: str, master_key_file: str | None) -> None:
    """Read, follow, total and export an eventstore log."""


for _group in GROUPS:
    for _command in _group.COMMANDS:
        cli.add_command(_command)


# --- entry point ---------------------------------------------------------------------------


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _leaf(exc: BaseException) -> BaseException:
    """The one real error inside task-group wrappers."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def main(argv: list[str] | None = None) -> None:
    """Run the command; never lets a traceback reach the user for an expected failure."""
    try:
        code = cli.main(args=argv, prog_name="eventstore", standalone_mode=False)
    except BaseException as raised:  # sorted into exit codes below; the rest re-raised
        exc = _leaf(raised)
        if isinstance(exc, click.exceptions.NoArgsIsHelpError):
            # `eventstore` alone: the help, as --help prints it, not an error line.
            out.file.write(exc.ctx.get_help() + "\n")
            sys.exit(0)
        if isinstance(exc, click.exceptions.Exit):
            sys.exit(exc.exit_code)
        if isinstance(exc, BrokenPipeError):
            # The reader went away (`| head`): stop quietly, and keep Python from
            # complaining again when it flushes stdout at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)
        if isinstance(exc, click.ClickException):
            err.file.write(f"error: {_one_line(exc.format_message())}\n")
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort | KeyboardInterrupt | asyncio.CancelledError):
            err.file.write("error: interrupted\n")
            sys.exit(130)
        if isinstance(exc, InvalidQueryError | UnsupportedURLError):
            err.file.write(f"error: {_one_line(str(exc))}\n")
            sys.exit(2)
        if isinstance(exc, EventStoreError | OSError):
            err.file.write(f"error: {_one_line(str(exc)) or type(exc).__name__}\n")
            sys.exit(1)
        raise
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
