"""The ``opencsbs`` command: ``serve``, ``token create``, ``db upgrade``, ``sandbox ...``, ``policy ...``.

One module per command group (``serve``, ``backup``, ``restore``, ``token``, ``rules``, ``db``, ``sandbox``,
``policy``, ``bank``, ``locks`` with ``holds``); each calls the use cases of ``opencsbs.service`` and prints what they return.
Every command takes ``--config FILE``, ``--data-dir DIR`` and ``--database-url URL`` before or after its name
(also ``OPENCSBS_CONFIG``/``OPENCSBS_DATA_DIR``/``OPENCSBS_DATABASE_URL``).
"""

from __future__ import annotations

import click

from opencsbs.cli import backup, bank, db, locks, policy, restore, rules, sandbox, serve, token
from opencsbs.cli import verify as verify_cli
from opencsbs.cli._common import Ctx, add_state_options


@click.group()
@click.option("--config", "config", type=click.Path(dir_okay=False), envvar="OPENCSBS_CONFIG", help="YAML config file")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="state directory")
@click.option("--database-url", default=None, help="SQLAlchemy database URL (default: SQLite in the data dir)")
@click.version_option(package_name="opencsbs")
@click.pass_context
def main(ctx: click.Context, config: str | None, data_dir: str | None, database_url: str | None) -> None:
    """opencsbs: the Cloud Server Backup Service (CSBS v1 API)."""
    ctx.obj = Ctx(config, data_dir, database_url)


for _command in (serve.serve, serve.worker, serve.scheduler, backup.backup, restore.restore, token.token,
                 rules.rules, db.db, sandbox.sandbox, policy.policy, bank.bank, locks.locks, locks.holds,
                 verify_cli.verify, verify_cli.drill):
    main.add_command(_command)
add_state_options(main)


def run() -> None:  # pragma: no cover
    main(prog_name="opencsbs")
