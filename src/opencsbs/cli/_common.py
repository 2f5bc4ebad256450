"""What every command group shares: the command-line state (``Ctx``), the runtime they act through, the state
options (``--config``, ``--data-dir``, ``--database-url``) accepted before or after a command's name, and the
translation of a use case's failure into one line for the operator."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator

import click

from opencsbs.config import Settings, load_settings
from opencsbs.core.errors import CSBSError
from opencsbs.core.lifecycle import ItemStatus, RestoreStatus


class ConfigExit(click.ClickException):
    """A configuration mistake: one line, exit code 2."""

    exit_code = 2


class BadValue(ConfigExit):
    """A bad value given to a command (e.g. a ``--file`` that is not JSON): one line, exit code 2."""


class KeyValue(click.ParamType):
    """An option's ``KEY=VALUE`` (``--tag case=c-42``, ``--param policy_id=...``) as the pair ``(KEY, VALUE)``; a
    value without ``=`` or with an empty KEY is a usage error (exit 2) showing ``example``."""

    name = "KEY=VALUE"

    def __init__(self, example: str):
        self.example = example

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        key, sep, rest = str(value).partition("=")
        if not sep or not key:
            self.fail(f"{value!r} is not KEY=VALUE (e.g. {self.example})", param, ctx)
        return key, rest


class Ctx:
    """Carries the options common to every command."""

    def __init__(self, config: str | None, data_dir: str | None, database_url: str | None):
        self.config = config
        self.data_dir = data_dir
        self.database_url = database_url
        #: client mode (cli/remote.py): ``--url``/``--token`` or ``--os-cloud``
        self.url: str | None = None
        self.token: str | None = None
        self.os_cloud: str | None = None
        self.debug = False

    def settings(self, **overrides) -> Settings:
        """Settings (command line > environment > config file > defaults); a bad value exits with its reason."""
        from pydantic import ValidationError

        from opencsbs.config import ConfigError

        try:
            settings = load_settings(self.config, data_dir=self.data_dir, database_url=self.database_url,
                                     **overrides)
            _check_bank_schedules(settings)
            return settings
        except ConfigError as exc:
            raise ConfigExit(f"invalid settings: {exc}") from None
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            raise ConfigExit(f"invalid settings: {problems}") from None
        except (OSError, ValueError) as exc:
            raise ConfigExit(f"invalid settings: {exc}") from None

    def runtime(self, **overrides):
        return build_runtime(self.settings(**overrides))


def _check_bank_schedules(settings: Settings) -> None:
    """Refuse an ``engine.gc_schedule``/``verify_schedule`` that is not a schedule (``ValueError`` naming the
    key), at start rather than at the scheduler's first pass."""
    from opencsbs.engine.bank_checks import bank_schedule

    for key in ("gc_schedule", "verify_schedule"):
        if getattr(settings.engine, key):
            bank_schedule(getattr(settings.engine, key), key)


def build_runtime(settings: Settings):
    """``bootstrap.build_runtime``; settings a driver refuses when it is built (e.g. a missing Ceph keyring) exit
    with one line saying what is missing."""
    from opencsbs import bootstrap
    from opencsbs.clouds.sandbox.inventory import InventoryError

    try:
        return bootstrap.build_runtime(settings)
    except InventoryError as exc:
        where = str(settings.cloud.inventory)
        text = str(exc)
        raise click.ClickException(f"invalid inventory {text if text.startswith(where) else f'{where}: {text}'}") \
            from exc
    except ValueError as exc:
        raise click.ClickException(f"invalid settings: {exc}") from exc


pass_ctx = click.make_pass_decorator(Ctx)


@contextlib.contextmanager
def csbs_errors(explain: Callable[[CSBSError], list[str]] | None = None) -> Iterator[None]:
    """Turn a use case's ``CSBSError`` into the one line ``Error: CSBS.xxxx: message`` (exit 1) with the facts
    ``explain(error)`` gives (what the wire text leaves out: the policy a server is bound to, why a server is
    refused, ...) added to it by :func:`refusal_line`."""
    try:
        yield
    except CSBSError as exc:
        raise click.ClickException(refusal_line(exc, explain(exc) if explain else ())) from exc


def refusal_line(exc: CSBSError, facts) -> str:
    """``CSBS.xxxx: message`` and ``facts`` in one line: a fact that repeats the message (a server's own
    refusal, ``"<id>: CSBS.xxxx: message ..."``) adds only what it says beyond it, other facts follow after
    ``; ``."""
    line = f"{exc.error_code}: {exc.error_msg}"
    others = []
    for fact in facts:
        if line in fact:
            beyond = fact.split(line, 1)[1].strip()
            line = f"{line} {beyond}" if beyond else line
        else:
            others.append(fact)
    return "; ".join([line, *others])


def server_refusals(runtime, principal, project_id: str, server_ids) -> list[str]:
    """``"<server id>: CSBS.xxxx: <why>"`` for each of ``server_ids`` that check_protectable refuses or that is
    bound to a policy (its verdict names the policy), and whether a backup or restore of it is running."""
    from opencsbs.service import protectable

    ids = list(dict.fromkeys(server_ids))
    if not ids:
        return []
    from opencsbs.service.servers import find_server

    items = [(sid, server.resource_type if (server := find_server(runtime, sid)) else "OS::Nova::Server")
             for sid in ids]
    states = protectable.protection_states(runtime, ids)
    lines = []
    for verdict in protectable.check_protectable(runtime, principal, project_id, items):
        if verdict.error_code is None:
            continue
        running = states.get(verdict.resource_id)
        busy = f" (a {running.busy_operation} of it is running)" if running and running.busy_operation else ""
        lines.append(f"{verdict.resource_id}: {verdict.error_code}: {verdict.error_msg}{busy}")
    return lines


def database_location(settings: Settings) -> str:
    """Where the settings' database is: the SQLite file, or the URL without its password."""
    from sqlalchemy.engine import make_url

    url = make_url(settings.db_url)
    if url.get_backend_name() == "sqlite" and url.database:
        return url.database
    return url.render_as_string(hide_password=True)


def echo_json(obj) -> None:
    """Print ``obj`` as indented JSON with sorted keys (the API's bodies, as the API would answer)."""
    click.echo(json.dumps(obj, indent=2, sort_keys=True))


def operator_of(runtime, server_id: str, hint: str = ""):
    """The principal the CLI acts as: an admin of the project owning ``server_id``; exits with
    ``server '<id>' not found`` and ``hint`` when the cloud has no such server."""
    from opencsbs.auth.base import Principal
    from opencsbs.service.servers import find_server

    server = find_server(runtime, server_id)
    if server is None:
        raise click.ClickException(f"server '{server_id}' not found{hint}")
    return Principal.operator(server.project_id, CLI_USER)


#: the user id the CLI acts as (``Principal.operator``)
CLI_USER = "opencsbs-cli"

#: statuses of a backup or restore whose job still runs
RUNNING = (RestoreStatus.IN_PROGRESS, ItemStatus.PROTECTING, ItemStatus.WAITING_RESTORE, ItemStatus.RESTORING)


class _DirectContext(click.Context):
    """The context of a :class:`DefaultGroup`'s default subcommand: its command path is the group's
    (``opencsbs backup``, not ``opencsbs backup now``), so its usage and errors name the command as it is typed."""

    @property
    def command_path(self) -> str:
        return self.parent.command_path if self.parent is not None else super().command_path


class DefaultGroup(click.Group):
    """A command group whose first argument, when it names none of its subcommands, goes to the hidden subcommand
    ``default`` (``opencsbs backup SERVER`` and ``opencsbs backup cancel ITEM``). Its help shows that direct form
    first: its usage line and options, then the subcommands."""

    default = ""

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        if (name or cmd.name) == self.default:
            cmd.context_class = _DirectContext
        super().add_command(cmd, name)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [self.default, *args]
        return super().parse_args(ctx, args)

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """``opencsbs backup [OPTIONS] SERVER_ID`` and ``or: opencsbs backup COMMAND [ARGS]...``."""
        direct = self.commands[self.default]
        formatter.write_usage(ctx.command_path, " ".join(direct.collect_usage_pieces(ctx)))
        formatter.write_usage(ctx.command_path, "COMMAND [ARGS]...", prefix="   or: ")

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The direct form's options (what ``opencsbs backup SERVER`` takes), then the subcommands."""
        direct = self.commands[self.default]
        rows = [row for param in direct.get_params(ctx)
                if isinstance(param, click.Option) and (row := param.get_help_record(ctx))]
        if rows:
            with formatter.section("Options"):
                formatter.write_dl(rows)
        self.format_commands(ctx, formatter)


class Interrupted(click.ClickException):
    """Ctrl-C while following a job: the job goes on in the service; exit code 130 (as a shell's SIGINT)."""

    exit_code = 130

    def show(self, file=None) -> None:
        click.echo(self.message, err=True)


def follow(runtime, read_progress: Callable[[], tuple[str, int]], label: str, running=RUNNING,
           target_id: str | None = None, interrupted: str = "") -> str:
    """Run the job of ``target_id`` (a checkpoint_item or restore id) in this process too, and only that job, so
    it finishes without a running server; show a progress bar until ``read_progress()`` returns a status not in
    ``running``; returns that status.

    Ctrl-C stops following (this process gives the job back at its next progress report, so a running
    ``serve``/``worker`` takes it over) and raises :class:`Interrupted` (exit 130) with the message
    ``interrupted``: what goes on and the commands to follow or cancel it."""
    worker = None
    thread = None
    try:
        import threading
        import time

        from opencsbs.service import jobs

        if target_id is not None:
            worker = jobs.worker_for(runtime, target_id)
            thread = threading.Thread(target=worker.run_forever, name=worker.name, daemon=True)
            thread.start()
        with click.progressbar(length=100, label=label, show_percent=True, file=sys.stderr) as bar:
            shown = 0
            while True:
                status, percent = read_progress()
                if percent > shown:
                    bar.update(percent - shown)
                    shown = percent
                if status not in running:
                    break
                time.sleep(0.3)
    except KeyboardInterrupt:
        _stop(worker, thread)
        raise Interrupted(interrupted or "interrupted: the job goes on in the service") from None
    _stop(worker, thread)
    return status


def _stop(worker, thread) -> None:
    """Stop the CLI's own worker: a running step is given back at its next progress report."""
    if worker is None or thread is None:
        return
    worker.stop.set()
    if worker.current is not None:
        worker.current.lost.set()
    thread.join(30)


def finish_cancel(runtime, kind: str, target_id: str, read_progress: Callable[[], tuple[str, int]],
                  running=RUNNING) -> str:
    """Wait for the cancelled ``kind`` job of ``target_id`` to end and return its final status (from
    ``read_progress()``): run it here when no worker holds it (its failure path runs at once), otherwise wait
    for the worker holding it to notice (at its next heartbeat or progress write); gives up after
    max(120 s, 3 leases) and returns the status then."""
    import time

    from opencsbs.service import jobs

    worker = jobs.worker_for(runtime, target_id)
    deadline = time.monotonic() + max(120.0, 3 * runtime.settings.engine.lease_seconds)
    while True:
        status, _ = read_progress()
        if status not in running or time.monotonic() > deadline:
            return status
        if jobs.job_holder(runtime, kind, target_id) is None:
            worker.run_one()
        else:
            time.sleep(0.5)


def workers_warning(runtime) -> str | None:
    """A warning line when no ``serve``/``worker`` process has been seen recently (engine/worker.py
    ``workers_seen``: their heartbeat rows), else None."""
    from opencsbs.service import jobs

    if jobs.workers_seen(runtime) > 0:
        return None
    return ("warning: no opencsbs serve or worker has been seen in the last minute: the job waits until one "
            "runs (or use --wait to run it here)")


def _set_data_dir(ctx: click.Context, _param, value):
    if value:
        ctx.find_object(Ctx).data_dir = value
    return value


def _set_database_url(ctx: click.Context, _param, value):
    if value:
        ctx.find_object(Ctx).database_url = value
    return value


def _set_config(ctx: click.Context, _param, value):
    if value:
        ctx.find_object(Ctx).config = value
    return value


#: ``--config`` also after a subcommand (``opencsbs serve --config FILE``).
config_option = click.option("--config", type=click.Path(exists=True, dir_okay=False), default=None,
                             expose_value=False, callback=_set_config, help="YAML config file")

#: ``--data-dir`` also after a subcommand (``opencsbs sandbox list --data-dir D``), as users type it.
data_dir_option = click.option("--data-dir", type=click.Path(file_okay=False), default=None, expose_value=False,
                               callback=_set_data_dir, is_eager=True, help="state directory")


def add_state_options(group: click.Group) -> None:
    """Give every subcommand the ``--data-dir``/``--config``/``--database-url`` it does not declare itself, so they
    work after the subcommand as they do before it (``opencsbs policy list --project P --data-dir D``)."""
    for command in group.commands.values():
        if isinstance(command, click.Group):
            add_state_options(command)
            continue
        declared = {flag for param in command.params for flag in getattr(param, "opts", ())}
        if "--data-dir" not in declared:
            command.params.append(click.Option(["--data-dir"], type=click.Path(file_okay=False), default=None,
                                               expose_value=False, callback=_set_data_dir, is_eager=True,
                                               help="state directory"))
        if "--config" not in declared:
            command.params.append(click.Option(["--config"], type=click.Path(exists=True, dir_okay=False),
                                               default=None, expose_value=False, callback=_set_config,
                                               help="YAML config file"))
        if "--database-url" not in declared:
            command.params.append(click.Option(["--database-url"], default=None, expose_value=False,
                                               callback=_set_database_url, is_eager=True,
                                               help="SQLAlchemy database URL (default: SQLite in the data dir)"))
