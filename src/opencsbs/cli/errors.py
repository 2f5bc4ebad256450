"""Every error of the ``opencsbs`` command in one line: the root group (:class:`OneLineErrors`) turns what a
command lets escape (a database it cannot reach, an invalid inventory, any other exception) into
``Error: <what>: <why>`` with exit code 2 for configuration mistakes and 1 for failures; ``--debug`` re-raises it
so Python prints the traceback; a reader that stops reading (``| head -1``) ends the command quietly (exit 0).
:func:`tidy_help` keeps reStructuredText markup out of ``--help``."""

from __future__ import annotations

import click

from opencsbs.cli._common import ConfigExit


class OneLineErrors(click.Group):
    """A click group whose commands never print a traceback unless ``--debug`` (``ctx.obj.debug``) is on, and
    end quietly with exit code 0 when the reader of their output goes away (``opencsbs backup list | head -1``)."""

    def make_context(self, info_name, args, parent=None, **extra) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except BrokenPipeError as exc:  # the reader of ``opencsbs -h`` went away
            if not output_closed(exc):
                raise
            raise reader_gone() from None

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - the one place where every other error becomes one line
            if isinstance(exc, BrokenPipeError) and output_closed(exc):
                raise reader_gone() from None
            if getattr(ctx.obj, "debug", False):
                raise
            raise one_line(exc, ctx.obj) from exc


def output_closed(exc: BrokenPipeError) -> bool:
    """Whether ``exc`` came from printing (``click.echo``: the reader of stdout or stderr went away) rather than
    from a pipe or socket the command itself writes to (a failure to report)."""
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code is click.utils.echo.__code__:
            return True
        tb = tb.tb_next
    return False


def reader_gone() -> click.exceptions.Exit:
    """The quiet end (exit code 0, no message) of a command whose reader stopped reading: stdout now goes to
    ``/dev/null``, so that the interpreter's final flush of what is still buffered does not fail (the Python
    docs' advice on SIGPIPE)."""
    import os
    import sys

    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (e.g. click's test runner): nothing to flush
        return click.exceptions.Exit(0)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)
    return click.exceptions.Exit(0)


def one_line(exc: Exception, state) -> click.ClickException:
    """The ``ClickException`` printed for ``exc`` (``state``: the command's ``Ctx``, for the database URL):
    exit 2 for a database URL that cannot be used, 1 for everything else."""
    from sqlalchemy import exc as sa_exc

    from opencsbs.clouds.sandbox.inventory import InventoryError
    from opencsbs.db import errors as db_errors

    url = _database_url(state)
    if url is not None:
        line = db_errors.describe(exc, url)
        if line is not None:
            config_mistake = isinstance(exc, (sa_exc.ArgumentError, ImportError))
            return ConfigExit(line) if config_mistake else click.ClickException(line)
    if isinstance(exc, InventoryError):
        return click.ClickException(f"invalid inventory: {exc}")
    if isinstance(exc, OSError) and exc.filename:
        return click.ClickException(f"{exc.filename}: {exc.strerror or exc}")
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return click.ClickException(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


def _database_url(state) -> str | None:
    """The database URL the command used: ``--database-url`` or what the settings give; ``None`` when they
    cannot be read."""
    if state is None:
        return None
    if getattr(state, "database_url", None):
        return state.database_url
    try:
        return state.settings().db_url
    except Exception:  # noqa: BLE001 - settings that cannot be read were reported by the command already
        return None


def tidy_help(group: click.Group) -> None:
    """Strip reStructuredText double backticks from the help of ``group`` and every command below it."""
    for command in [group, *group.commands.values()]:
        if command is not group and isinstance(command, click.Group):
            tidy_help(command)
            continue
        for attr in ("help", "short_help"):
            text = getattr(command, attr, None)
            if text:
                setattr(command, attr, text.replace("``", ""))
        for param in command.params:
            if isinstance(param, click.Option) and param.help:
                param.help = param.help.replace("``", "")
