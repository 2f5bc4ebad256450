"""``opencsbs token create|list|revoke``: local tokens (auth.mode = local), optionally expiring, kept in the
service's database (no API: refused with --url/--os-cloud); ``opencsbs token login``: a Keystone user's token from
a keystone-mode opencsbs at --url (``POST /opencsbs/v1/auth/tokens``)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import click

from opencsbs.cli._common import Ctx, config_option, database_location, pass_ctx
from opencsbs.cli.output import Column, chosen_format, emit, human_time, output_options


def parse_expiry(value: str | None, now: datetime) -> datetime | None:
    """``--expires``: a duration from ``now`` (``90m``, ``12h``, ``30d``, ``2w``) or a UTC date/time
    (``2027-01-31``, ``2027-01-31T12:00``); ``None`` for none. Raises ``click.BadParameter``."""
    if not value:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*([mhdw])\s*", value)
    if match:
        amount, unit = int(match.group(1)), match.group(2)
        unit_name = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[unit]
        return now + timedelta(**{unit_name: amount})
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r}: give a duration (90m, 12h, 30d, 2w) or a UTC date "
                                 f"(2027-01-31 or 2027-01-31T12:00)", param_hint="--expires") from None
    if when.tzinfo is not None:
        when = (when - when.utcoffset()).replace(tzinfo=None)
    return when


@click.group()
def token() -> None:
    """Local tokens (auth.mode = local): create, list, revoke (on the service's machine); with --url, log in to a
    keystone-mode opencsbs (token login)."""


@token.command("login")
@click.option("--username", required=True, envvar="OS_USERNAME", help="Keystone user name (OS_USERNAME)")
@click.option("--password", prompt=True, hide_input=True, envvar="OS_PASSWORD",
              help="asked for when not given (OS_PASSWORD)")
@click.option("--project", "project_name", required=True, envvar="OS_PROJECT_NAME",
              help="project name or id (OS_PROJECT_NAME)")
@click.option("--domain", default="Default", show_default=True, envvar="OS_USER_DOMAIN_NAME",
              help="user and project domain (OS_USER_DOMAIN_NAME)")
@pass_ctx
def token_login(ctx: Ctx, username: str, password: str, project_name: str, domain: str) -> None:
    """Log in to the opencsbs at --url (auth.mode keystone) as a Keystone user; prints the token as the last
    line (use it as --token / OPENCSBS_TOKEN), its project and expiry on stderr."""
    from opencsbs.cli.remote import login

    if not ctx.url:
        raise click.UsageError("token login needs --url URL (or OPENCSBS_URL): the opencsbs to log in to")
    issued = login(ctx.url, username, password, project_name, domain)
    click.echo(f"token of {username} for project {issued['project_name']} ({issued['project_id']}), valid until "
               f"{human_time(issued['expires_at']) if issued['expires_at'] else 'revoked'} UTC; "
               f"export OPENCSBS_TOKEN=<the line below> and --project {issued['project_id']}", err=True)
    click.echo(issued["id"])


@token.command("create")
@click.option("--project", default=None, help="project id the token is scoped to (required but with --cloud-admin)")
@click.option("--role", type=click.Choice(["reader", "member", "admin"]), default="member", show_default=True)
@click.option("--cloud-admin", is_flag=True,
              help="a system-scoped admin token (no project) that may act on every project (rule context_is_admin)")
@click.option("--user", default=None, help="user id recorded with the token")
@click.option("--expires", default=None, metavar="WHEN",
              help="valid until: a duration (90m, 12h, 30d, 2w) or a UTC date (2027-01-31); default: until revoked")
@click.option("--data-dir", "data_dir_opt", type=click.Path(file_okay=False), default=None,
              help="state directory whose database keeps the token")
@config_option
@pass_ctx
def token_create(ctx: Ctx, project: str | None, role: str, cloud_admin: bool, user: str | None, expires,
                 data_dir_opt: str | None) -> None:
    """Create a token; it is printed once, as the last line. An ``admin`` token is admin of its own project only;
    ``--cloud-admin`` makes one for every project."""
    from opencsbs.core.timeutil import utcnow
    from opencsbs.service.tokens import create_local_token

    expires_at = parse_expiry(expires, utcnow())
    if not cloud_admin and not project:
        raise click.UsageError("--project is required (or --cloud-admin for a token of every project)")
    if data_dir_opt:
        ctx.data_dir = data_dir_opt
    runtime = ctx.runtime()
    try:
        value = create_local_token(runtime, project, role, user, cloud_admin=cloud_admin, expires_at=expires_at)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    finally:
        runtime.close()
    what = "cloud-admin token (every project)" if cloud_admin else f"token for project {project} with role {role}"
    until = f", valid until {human_time(expires_at.isoformat())} UTC" if expires_at else ""
    click.echo(f"{what}{until}, stored in {database_location(runtime.settings)} (store it: it is not shown "
               f"again):", err=True)
    click.echo(value)


TOKEN_COLUMNS = [
    Column("ID", lambda t: t["id"]),
    Column("PROJECT", lambda t: t["project_id"] or "(every project)"),
    Column("ROLE", lambda t: t["role"]),
    Column("USER", lambda t: t["user_id"]),
    Column("CREATED", lambda t: human_time(t["created_at"])),
    Column("EXPIRES", lambda t: human_time(t["expires_at"]) if t["expires_at"] else "never"),
    Column("STATE", lambda t: t["state"]),
]


@token.command("list")
@click.option("--project", default=None, help="only this project's tokens")
@click.option("--all", "include_inactive", is_flag=True, help="also revoked and expired tokens")
@output_options
@pass_ctx
def token_list(ctx: Ctx, project, include_inactive, fmt, as_json, columns) -> None:
    """List local tokens (their ids, never their values: only digests are stored)."""
    from opencsbs.service.tokens import list_local_tokens

    runtime = ctx.runtime()
    try:
        rows = list_local_tokens(runtime, project, include_inactive=include_inactive)
    finally:
        runtime.close()
    emit(rows, TOKEN_COLUMNS, chosen_format(fmt, as_json), columns)


@token.command("revoke")
@click.argument("token_ids", nargs=-1, required=True)
@pass_ctx
def token_revoke(ctx: Ctx, token_ids) -> None:
    """Revoke tokens by id (opencsbs token list shows them): the API refuses them from the next request on."""
    from opencsbs.service.tokens import revoke_local_token

    runtime = ctx.runtime()
    try:
        for token_id in token_ids:
            try:
                record = revoke_local_token(runtime, token_id)
            except LookupError:
                raise click.ClickException(f"token '{token_id}' not found (opencsbs token list shows them)") \
                    from None
            click.echo(f"token {token_id} of {record['project_id'] or 'every project'} ({record['role']}) revoked")
    finally:
        runtime.close()
