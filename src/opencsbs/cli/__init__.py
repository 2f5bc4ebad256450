"""The ``opencsbs`` command: ``serve``, ``token create``, ``db upgrade``, ``sandbox ...``, ``policy ...``.

One module per command group (``serve``, ``backup``, ``restore``, ``token``, ``rules``, ``db``, ``sandbox``,
``policy``, ``bank``, ``locks`` with ``holds``, ``replication``, ``workers``; ``records`` adds ``backup list|show|delete``,
``restore list|show`` and ``check``); each calls the use cases of ``opencsbs.service`` and prints what they return.
Every command takes ``--config FILE``, ``--data-dir DIR`` and ``--database-url URL`` before or after its name
(also ``OPENCSBS_CONFIG``/``OPENCSBS_DATA_DIR``/``OPENCSBS_DATABASE_URL``).

With ``--url``/``--token`` or ``--os-cloud`` the commands that have an API ask a running opencsbs over HTTP
(:mod:`opencsbs.cli.remote`); the commands without an API (``remote.LOCAL_ONLY``: ``serve``, ``worker``, ``db``,
``bank``, ``token create``, ``sandbox``, ...) refuse client mode in one line (exit 2).

Errors are one line (``Error: ...``) with exit code 2 for usage and configuration mistakes and 1 for failures;
``--debug`` (or ``OPENCSBS_DEBUG=1``) shows the traceback instead. ``-h`` is ``--help`` everywhere.
"""

from __future__ import annotations

import click

from opencsbs.cli import backup, bank, db, locks, policy, records, replication, restore, rules, sandbox, serve, token
from opencsbs.cli import verify as verify_cli
from opencsbs.cli import workers as workers_cli
from opencsbs.cli._common import Ctx, add_state_options
from opencsbs.cli.errors import OneLineErrors, tidy_help
from opencsbs.cli.remote import refuse_client_mode


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config", type=click.Path(dir_okay=False), envvar="OPENCSBS_CONFIG", help="YAML config file")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="state directory")
@click.option("--database-url", default=None, help="SQLAlchemy database URL (default: SQLite in the data dir)")
@click.option("--url", envvar="OPENCSBS_URL", default=None, metavar="URL",
              help="a running opencsbs to ask over its API instead of the database (client mode)")
@click.option("--token", "api_token", envvar="OPENCSBS_TOKEN", default=None, help="the token for --url")
@click.option("--os-cloud", "os_cloud", envvar="OS_CLOUD", default=None, metavar="NAME",
              help="client mode through Keystone: the clouds.yaml entry to log in with (endpoint: data-protect)")
@click.option("--debug", is_flag=True, envvar="OPENCSBS_DEBUG",
              help="show the traceback of an error instead of its one-line summary")
@click.version_option(package_name="opencsbs")
@click.pass_context
def main(ctx: click.Context, config: str | None, data_dir: str | None, database_url: str | None,
         url: str | None, api_token: str | None, os_cloud: str | None, debug: bool) -> None:
    """opencsbs: the Cloud Server Backup Service (CSBS v1 API).

    Shell completion: eval "$(_OPENCSBS_COMPLETE=bash_source opencsbs)" (zsh_source, fish_source).
    """
    ctx.obj = Ctx(config, data_dir, database_url)
    ctx.obj.debug = debug
    ctx.obj.url, ctx.obj.token, ctx.obj.os_cloud = url, api_token, os_cloud


for _command in (serve.serve, serve.worker, serve.scheduler,
                 records.with_subcommands(backup.backup, records.backup_list, records.backup_show,
                                          records.backup_delete),
                 records.with_subcommands(restore.restore, records.restore_list, records.restore_show),
                 records.check, token.token, rules.rules, db.db, sandbox.sandbox, policy.policy, bank.bank,
                 locks.locks, locks.holds, replication.replication, verify_cli.verify, verify_cli.drill,
                 workers_cli.workers):
    main.add_command(_command)
bank.bank.add_command(replication.rebuild_catalog)
refuse_client_mode(main)
add_state_options(main)
tidy_help(main)


def run() -> None:  # pragma: no cover
    main(prog_name="opencsbs")
