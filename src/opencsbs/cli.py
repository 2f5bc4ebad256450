"""The ``opencsbs`` command: ``serve``, ``token create``, ``db upgrade``, ``sandbox ...``.

Every command takes ``--config FILE`` and ``--data-dir DIR`` (also ``OPENCSBS_CONFIG``/``OPENCSBS_DATA_DIR``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from opencsbs.config import Settings, load_settings


class Ctx:
    """Carries the options common to every command."""

    def __init__(self, config: str | None, data_dir: str | None, database_url: str | None):
        self.config = config
        self.data_dir = data_dir
        self.database_url = database_url

    def settings(self, **overrides) -> Settings:
        return load_settings(self.config, data_dir=self.data_dir, database_url=self.database_url, **overrides)

    def runtime(self, **overrides):
        from opencsbs.runtime import Runtime

        return Runtime.from_settings(self.settings(**overrides))


pass_ctx = click.make_pass_decorator(Ctx)


@click.group()
@click.option("--config", "config", type=click.Path(dir_okay=False), envvar="OPENCSBS_CONFIG", help="YAML config file")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="state directory")
@click.option("--database-url", default=None, help="SQLAlchemy database URL (default: SQLite in the data dir)")
@click.version_option(package_name="opencsbs")
@click.pass_context
def main(ctx: click.Context, config: str | None, data_dir: str | None, database_url: str | None) -> None:
    """opencsbs: the Cloud Server Backup Service (CSBS v1 API)."""
    ctx.obj = Ctx(config, data_dir, database_url)


@main.command()
@click.option("--host", default=None, help="listen address (default 127.0.0.1)")
@click.option("--port", type=int, default=None, help="listen port (default 8799)")
@click.option("--data-dir", "data_dir_opt", type=click.Path(file_okay=False), default=None, help="state directory")
@click.option("--inventory", type=click.Path(exists=True, dir_okay=False), default=None,
              help="sandbox inventory YAML to load at start-up")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), default=None,
              help="PEM certificate (chain) to serve HTTPS with; needs --tls-key")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), default=None, help="PEM private key")
@click.option("--forwarded-allow-ips", default=None,
              help="reverse proxies whose X-Forwarded-For/-Proto are trusted (default 127.0.0.1; '*': any)")
@pass_ctx
def serve(ctx: Ctx, host, port, data_dir_opt, inventory, tls_cert, tls_key, forwarded_allow_ips) -> None:
    """Run the CSBS v1 API (and its workers and scheduler). See docs/deployment.md for TLS and proxies."""
    import uvicorn

    from opencsbs.api.app import create_app

    if data_dir_opt:
        ctx.data_dir = data_dir_opt
    settings = ctx.settings(host=host, port=port, tls_cert=tls_cert, tls_key=tls_key,
                            forwarded_allow_ips=forwarded_allow_ips)
    if bool(settings.tls_cert) != bool(settings.tls_key):
        raise click.UsageError("--tls-cert and --tls-key go together")
    if inventory:
        settings.cloud.inventory = Path(inventory)
    from opencsbs.runtime import Runtime

    runtime = Runtime.from_settings(settings)
    runtime.start_workers()
    app = create_app(runtime)
    click.echo(f"opencsbs listening on http{'s' if settings.tls_cert else ''}://{settings.host}:{settings.port} "
               f"(data dir {settings.data_dir}, cloud driver {settings.cloud.driver})", err=True)
    try:
        uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                    ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
                    ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
                    timeout_keep_alive=int(settings.keepalive_timeout), proxy_headers=True,
                    forwarded_allow_ips=settings.forwarded_allow_ips)
    finally:
        runtime.close()


@main.command()
@click.option("--threads", type=int, default=1, show_default=True, help="jobs run at once by this process")
@pass_ctx
def worker(ctx: Ctx, threads: int) -> None:
    """Run backup/restore/delete jobs (for deployments with ``workers: 0`` in serve). Stops on SIGTERM/SIGINT;
    a killed worker's job is resumed by another worker once its lease expires."""
    import signal
    import threading

    runtime = ctx.runtime()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    pool = runtime.start_workers(max(threads, 1))
    click.echo(f"opencsbs worker: {len(pool.workers)} thread(s), data dir {runtime.settings.data_dir}", err=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        runtime.close()


# --- tokens -------------------------------------------------------------------------------------------------


@main.group()
def token() -> None:
    """Local tokens (auth.mode = local)."""


@token.command("create")
@click.option("--project", required=True, help="project id the token is scoped to")
@click.option("--role", type=click.Choice(["reader", "member", "admin"]), default="member", show_default=True)
@click.option("--user", default=None, help="user id recorded with the token")
@click.option("--data-dir", "data_dir_opt", type=click.Path(file_okay=False), default=None)
@pass_ctx
def token_create(ctx: Ctx, project: str, role: str, user: str | None, data_dir_opt: str | None) -> None:
    """Create a token; it is printed once, as the last line."""
    from opencsbs.auth.local import create_token
    from opencsbs.db.base import transaction

    if data_dir_opt:
        ctx.data_dir = data_dir_opt
    runtime = ctx.runtime()
    try:
        with transaction(runtime.sessions) as session:
            value = create_token(session, project, role, user)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    finally:
        runtime.close()
    click.echo(f"token for project {project} with role {role} (store it: it is not shown again):", err=True)
    click.echo(value)


# --- policy -------------------------------------------------------------------------------------------------


@main.group()
def policy() -> None:
    """API authorization rules (auth.policy_file)."""


@policy.command("show")
@click.option("--defaults", is_flag=True, help="the built-in defaults, ignoring auth.policy_file")
@pass_ctx
def policy_show(ctx: Ctx, defaults: bool) -> None:
    """Print the effective rules as a policy file (YAML)."""
    from opencsbs.auth.policy import Enforcer, PolicyFileError, render_rules

    settings = ctx.settings()
    try:
        enforcer = Enforcer.from_file(None if defaults else settings.auth.policy_file)
    except PolicyFileError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(render_rules(enforcer.rules), nl=False)


# --- database -----------------------------------------------------------------------------------------------


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@pass_ctx
def db_upgrade(ctx: Ctx) -> None:
    """Migrate the database to the newest schema."""
    from opencsbs.db.migrate import upgrade

    settings = ctx.settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.db_url)
    click.echo("database is at the newest schema")


# --- sandbox ------------------------------------------------------------------------------------------------


@main.group()
def sandbox() -> None:
    """The built-in sandbox cloud: load, list, change and delete servers and volumes."""


def _sandbox_run(ctx: Ctx, fn):
    from opencsbs.clouds.sandbox.inventory import InventoryError
    from opencsbs.db.base import transaction

    runtime = ctx.runtime()
    try:
        with transaction(runtime.sessions) as session:
            return fn(session, runtime.settings)
    except InventoryError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        runtime.close()


@sandbox.command("load")
@click.argument("inventory", type=click.Path(exists=True, dir_okay=False))
@pass_ctx
def sandbox_load(ctx: Ctx, inventory: str) -> None:
    """Load (upsert) an inventory YAML file."""
    from opencsbs.clouds.sandbox.inventory import load_inventory_file

    counts = _sandbox_run(ctx, lambda s, st: load_inventory_file(s, Path(inventory), st.volumes_dir))
    click.echo(f"loaded {counts['servers']} servers, {counts['volumes']} volumes")


@sandbox.command("list")
@click.option("--project", default=None)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@pass_ctx
def sandbox_list(ctx: Ctx, project: str | None, as_json: bool) -> None:
    """List servers with their volumes."""
    from opencsbs.clouds.sandbox.driver import server_facts
    from opencsbs.clouds.sandbox.inventory import list_servers

    def _list(session, _st):
        return [server_facts(s) for s in list_servers(session, project)]

    servers = _sandbox_run(ctx, _list)
    if as_json:
        from dataclasses import asdict

        click.echo(json.dumps([asdict(s) for s in servers], indent=2))
        return
    for s in servers:
        task = f" task={s.task_state}" if s.task_state else ""
        click.echo(f"{s.project_id}  {s.id}  {s.name:<16} {s.resource_type:<28} {s.status}{task} az={s.availability_zone}")
        for v in s.volumes:
            flags = ",".join(f for f, on in (("boot", v.bootable), ("shareable", v.shareable)) if on)
            click.echo(f"      {v.device:<10} {v.id}  {v.size_gb} GiB {flags} type={v.volume_type} svc={v.service_type}")


@sandbox.command("set")
@click.argument("server_id")
@click.option("--status", default=None, help="Nova status, e.g. ACTIVE, SHUTOFF, ERROR")
@click.option("--task-state", default=None, help="Nova task state; '' clears it")
@click.option("--az", "availability_zone", default=None)
@click.option("--name", default=None)
@pass_ctx
def sandbox_set(ctx: Ctx, server_id: str, **changes) -> None:
    """Change a server's status, task state, AZ or name."""
    from opencsbs.clouds.sandbox.inventory import set_server

    _sandbox_run(ctx, lambda s, _st: set_server(s, server_id, **changes))
    click.echo(f"server {server_id} updated")


@sandbox.command("delete")
@click.argument("resource_id")
@pass_ctx
def sandbox_delete(ctx: Ctx, resource_id: str) -> None:
    """Delete a server (its volumes stay, detached) or a volume (and its data)."""
    from opencsbs.clouds.sandbox.inventory import delete_resource

    kind = _sandbox_run(ctx, lambda s, st: delete_resource(s, resource_id, st.volumes_dir))
    click.echo(f"{kind} {resource_id} deleted")


@sandbox.command("write")
@click.argument("volume_id")
@click.option("--offset", type=int, default=0, show_default=True, help="byte offset")
@click.option("--from", "source", type=click.File("rb"), default="-", help="file to copy in (default stdin)")
@pass_ctx
def sandbox_write(ctx: Ctx, volume_id: str, offset: int, source) -> None:
    """Write bytes into a sandbox volume."""
    from opencsbs.clouds.sandbox.inventory import InventoryError, write_volume
    from opencsbs.db.models import SandboxVolume

    def _write(session, st):
        volume = session.get(SandboxVolume, volume_id)
        if volume is None:
            raise InventoryError(f"no sandbox volume {volume_id}")
        return write_volume(st.volumes_dir, volume, offset, source)

    n = _sandbox_run(ctx, _write)
    click.echo(f"wrote {n} bytes to {volume_id} at offset {offset}")


@sandbox.command("hash")
@click.argument("volume_id")
@pass_ctx
def sandbox_hash(ctx: Ctx, volume_id: str) -> None:
    """Print the SHA-256 of every byte of a sandbox volume."""
    from opencsbs.clouds.sandbox.inventory import InventoryError, hash_volume
    from opencsbs.db.models import SandboxVolume

    def _hash(session, st):
        if session.get(SandboxVolume, volume_id) is None:
            raise InventoryError(f"no sandbox volume {volume_id}")
        return hash_volume(st.volumes_dir, volume_id)

    click.echo(_sandbox_run(ctx, _hash))


def run() -> None:  # pragma: no cover
    main(prog_name="opencsbs")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
