"""``opencsbs rules show``: the API's authorization rules (not the backup policies: ``opencsbs policy``)."""

from __future__ import annotations

import click

from opencsbs.cli._common import Ctx, config_option, pass_ctx


@click.group()
def rules() -> None:
    """API authorization rules (auth.policy_file). Backup policies are ``opencsbs policy``."""


@rules.command("show")
@config_option
@click.option("--defaults", is_flag=True, help="the built-in defaults, ignoring auth.policy_file")
@pass_ctx
def rules_show(ctx: Ctx, defaults: bool) -> None:
    """Print the effective rules as a policy file (YAML)."""
    from opencsbs.auth.rules import Enforcer, PolicyFileError, render_rules

    settings = ctx.settings()
    try:
        enforcer = Enforcer.from_file(None if defaults else settings.auth.policy_file)
    except PolicyFileError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(render_rules(enforcer.rules), nl=False)
