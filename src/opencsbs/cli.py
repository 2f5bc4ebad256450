"""The ``opencsbs`` command: ``serve``, ``token create``, ``db upgrade``, ``sandbox ...``.

Every command takes ``--config FILE``, ``--data-dir DIR`` and ``--database-url URL`` before or after its name
(also ``OPENCSBS_CONFIG``/``OPENCSBS_DATA_DIR``/``OPENCSBS_DATABASE_URL``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from opencsbs.config import Settings, load_settings
from opencsbs.core.facts import NOVA_STATUSES, NOVA_TASK_STATES


class Ctx:
    """Carries the options common to every command."""

    def __init__(self, config: str | None, data_dir: str | None, database_url: str | None):
        self.config = config
        self.data_dir = data_dir
        self.database_url = database_url

    def settings(self, **overrides) -> Settings:
        """Settings (command line > environment > config file > defaults); a bad value exits with its reason."""
        from pydantic import ValidationError

        try:
            return load_settings(self.config, data_dir=self.data_dir, database_url=self.database_url, **overrides)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            raise click.ClickException(f"invalid settings: {problems}") from exc
        except (OSError, ValueError) as exc:
            raise click.ClickException(f"invalid settings: {exc}") from exc

    def runtime(self, **overrides):
        return build_runtime(self.settings(**overrides))


def build_runtime(settings: Settings):
    """``bootstrap.build_runtime``; settings a driver refuses when it is built (e.g. a missing Ceph keyring) exit
    with one line saying what is missing."""
    from opencsbs import bootstrap

    try:
        return bootstrap.build_runtime(settings)
    except ValueError as exc:
        raise click.ClickException(f"invalid settings: {exc}") from exc


pass_ctx = click.make_pass_decorator(Ctx)


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
@click.option("--workers", "http_processes", type=click.IntRange(min=1), default=None,
              help="HTTP worker processes (default 1; more than 1 needs PostgreSQL)")
@config_option
@pass_ctx
def serve(ctx: Ctx, host, port, data_dir_opt, inventory, tls_cert, tls_key, forwarded_allow_ips,
          http_processes) -> None:
    """Run the CSBS v1 API (and its workers and scheduler). See docs/deployment.md for TLS and proxies."""
    import uvicorn

    from opencsbs.api.app import create_app
    from opencsbs.api.http_protocol import JsonErrorH11Protocol

    if data_dir_opt:
        ctx.data_dir = data_dir_opt
    settings = ctx.settings(host=host, port=port, tls_cert=tls_cert, tls_key=tls_key,
                            forwarded_allow_ips=forwarded_allow_ips, http_processes=http_processes)
    if bool(settings.tls_cert) != bool(settings.tls_key):
        raise click.UsageError("--tls-cert and --tls-key go together")
    from opencsbs.api.processes import multi_process_refusal

    refusal = multi_process_refusal(settings, settings.http_processes)
    if refusal:
        raise click.UsageError(refusal)
    if inventory:
        settings.cloud.inventory = Path(inventory)
    # the port first: a taken port is refused before any worker or scheduler thread starts
    sock = _bind(settings.host, settings.port)
    try:
        runtime = build_runtime(settings)
    except BaseException:
        sock.close()
        raise
    _cross_project_notice(runtime)
    from opencsbs.bootstrap import start_scheduler, start_workers

    start_workers(runtime)
    if settings.scheduler:
        start_scheduler(runtime)
    processes = settings.http_processes
    click.echo(f"opencsbs listening on http{'s' if settings.tls_cert else ''}://{settings.host}:{settings.port} "
               f"(data dir {settings.data_dir}, cloud driver {settings.cloud.driver}"
               f"{f', {processes} HTTP processes' if processes > 1 else ''})", err=True)
    try:
        options = dict(host=settings.host, port=settings.port, log_level=settings.log_level,
                       ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
                       ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
                       timeout_keep_alive=int(settings.keepalive_timeout), proxy_headers=True,
                       forwarded_allow_ips=settings.forwarded_allow_ips, http=JsonErrorH11Protocol)
        if processes > 1:
            from uvicorn.supervisors import Multiprocess

            from opencsbs.api.processes import export_settings

            export_settings(settings)
            # a worker importing the app on a loaded machine can take many seconds before it answers the
            # supervisor's health pings (default 5 s): it would be killed and respawned in a loop
            config = uvicorn.Config("opencsbs.api.processes:worker_app", factory=True, workers=processes,
                                    timeout_worker_healthcheck=60, **options)
            Multiprocess(config, sockets=[sock]).run()
        else:
            uvicorn.Server(uvicorn.Config(create_app(runtime), **options)).run(sockets=[sock])
    finally:
        sock.close()
        runtime.close()


def _cross_project_notice(runtime) -> None:
    """Print (and log) what an upgraded deployment must configure for cross-project admins, if anything."""
    import logging

    from opencsbs.auth.admin_scope import cross_project_notice

    notice = cross_project_notice(runtime.settings, runtime.sessions, runtime.enforcer)
    if notice:
        logging.getLogger("opencsbs.auth").warning("%s", notice)
        click.echo(notice, err=True)


def _bind(host: str, port: int):
    """A TCP socket bound to ``host:port`` (IPv4 or IPv6, as the host resolves); uvicorn listens on it.
    Raises ``click.ClickException`` (exit 1) when the address is taken or cannot be had."""
    import socket

    try:
        family, kind, proto, _name, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                              flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


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
    from opencsbs.bootstrap import start_workers

    pool = start_workers(runtime, max(threads, 1))
    click.echo(f"opencsbs worker: {len(pool.workers)} thread(s), data dir {runtime.settings.data_dir}", err=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        runtime.close()


# --- backups and restores ----------------------------------------------------------------------------------


def _operator(runtime, server_id: str):
    """The principal the CLI acts as: an admin of the project owning ``server_id``."""
    from opencsbs.auth.base import Principal
    from opencsbs.clouds.base import CloudContext

    found = runtime.driver.get_servers(CloudContext(project_id="", all_tenants=True), [server_id])
    if server_id not in found:
        raise click.ClickException(f"no server {server_id}")
    project = found[server_id].project_id
    return Principal(project_id=project, user_id="opencsbs-cli", roles=frozenset({"reader", "member", "admin"}))


def _server_type(runtime, server_id: str) -> str:
    """``OS::Nova::Server`` or ``OS::Ironic::BareMetalServer``: what the cloud says ``server_id`` is."""
    from opencsbs.clouds.base import CloudContext

    found = runtime.driver.get_servers(CloudContext(project_id="", all_tenants=True), [server_id])
    return found[server_id].resource_type


def _follow(runtime, read_progress, label: str) -> str:
    """Run jobs in this process too (so it finishes without a running server) and show a progress bar until
    ``read_progress()`` returns a final status; returns that status."""
    import time

    from opencsbs.bootstrap import start_workers

    pool = start_workers(runtime, 1, prefix="cli")
    status, percent = read_progress()
    with click.progressbar(length=100, label=label, show_percent=True, file=sys.stderr) as bar:
        shown = 0
        while True:
            status, percent = read_progress()
            if percent > shown:
                bar.update(percent - shown)
                shown = percent
            if status not in ("in_progress", "protecting", "waiting_restore", "restoring"):
                break
            time.sleep(0.3)
    if pool is not None:
        pool.stop()
    return status


@main.command()
@click.argument("server_id")
@click.option("--name", default=None, help="backup name (default manualbk_xxxx)")
@click.option("--description", default=None)
@click.option("--full", is_flag=True, help="read every disk completely instead of only what changed")
@click.option("--wait", is_flag=True, help="run the backup here and show its progress until it ends")
@pass_ctx
def backup(ctx: Ctx, server_id: str, name, description, full: bool, wait: bool) -> None:
    """Back up a server (all of its disks, crash-consistently). Prints the checkpoint_item id."""
    from opencsbs.core.errors import CSBSError
    from opencsbs.db.models import CheckpointItem
    from opencsbs.service import backups

    runtime = ctx.runtime()
    try:
        principal = _operator(runtime, server_id)
        try:
            cp = backups.create_backup(runtime, principal, principal.project_id, server_id, name=name,
                                       description=description, incremental=not full,
                                       resource_type=_server_type(runtime, server_id))
        except CSBSError as exc:
            raise click.ClickException(f"{exc.error_code}: {exc.error_msg}") from exc
        with runtime.sessions() as session:
            item = session.query(CheckpointItem).filter_by(checkpoint_id=cp["id"]).one()
            item_id = item.id
        click.echo(f"backup {item.name}: checkpoint {cp['id']}, checkpoint_item {item_id}", err=True)
        if wait:
            def read():
                with runtime.sessions() as session:
                    row = session.get(CheckpointItem, item_id)
                    return row.status, row.progress
            status = _follow(runtime, read, "backing up")
            with runtime.sessions() as session:
                row = session.get(CheckpointItem, item_id)
                if status != "available":
                    raise click.ClickException(f"backup ended {status}: {row.fail_reason}")
                click.echo(f"available: {row.source_bytes} bytes of disk, {row.stored_bytes} bytes stored", err=True)
        click.echo(item_id)
    finally:
        runtime.close()


@main.command()
@click.argument("checkpoint_item_id")
@click.option("--target", "target_id", default=None, help="server to restore onto (default: the backed-up one)")
@click.option("--power-on/--no-power-on", default=True, show_default=True, help="start the server afterwards")
@click.option("--wait/--no-wait", default=True, show_default=True, help="run the restore here with a progress bar")
@pass_ctx
def restore(ctx: Ctx, checkpoint_item_id: str, target_id, power_on: bool, wait: bool) -> None:
    """Restore a backup onto its server (or --target): each disk backup onto the same disk when the target has it,
    otherwise onto the target's disks in device order."""
    from opencsbs.clouds.base import CloudContext
    from opencsbs.core.errors import CSBSError
    from opencsbs.core.facts import SERVER
    from opencsbs.db.models import CheckpointItem, Restore
    from opencsbs.service import restores

    runtime = ctx.runtime()
    try:
        with runtime.sessions() as session:
            item = session.get(CheckpointItem, checkpoint_item_id)
            if item is None:
                raise click.ClickException(f"no checkpoint_item {checkpoint_item_id}")
            disks = [(vb.id, vb.source_volume_id) for vb in item.volume_backups]
            checkpoint_id, project, target_id = item.checkpoint_id, item.project_id, target_id or item.resource_id
        principal = _operator(runtime, target_id)
        target = runtime.driver.get_servers(CloudContext(project_id=project), [target_id]).get(target_id)
        attached = [v.id for v in target.volumes] if target else []
        mapping = []
        for position, (backup_id, source) in enumerate(disks):
            volume = source if source in attached else (attached[position] if position < len(attached) else source)
            mapping.append((backup_id, volume))
        try:
            rs = restores.create_restore(runtime, principal, project, checkpoint_id=checkpoint_id,
                                         request=restores.RestoreRequest(item.id, target_id, SERVER, tuple(mapping)),
                                         power_on=power_on)
        except CSBSError as exc:
            raise click.ClickException(f"{exc.error_code}: {exc.error_msg}") from exc
        click.echo(f"restore {rs['id']} of {checkpoint_item_id} onto {target_id} started", err=True)
        if wait:
            def read():
                with runtime.sessions() as session:
                    row = session.get(Restore, rs["id"])
                    return row.status, row.progress
            status = _follow(runtime, read, "restoring")
            if status != "success":
                with runtime.sessions() as session:
                    raise click.ClickException(f"restore ended {status}: {session.get(Restore, rs['id']).resources_reason}")
        click.echo(rs["id"])
    finally:
        runtime.close()


# --- tokens -------------------------------------------------------------------------------------------------


@main.group()
def token() -> None:
    """Local tokens (auth.mode = local)."""


@token.command("create")
@click.option("--project", default=None, help="project id the token is scoped to (required but with --cloud-admin)")
@click.option("--role", type=click.Choice(["reader", "member", "admin"]), default="member", show_default=True)
@click.option("--cloud-admin", is_flag=True,
              help="a system-scoped admin token (no project) that may act on every project (rule context_is_admin)")
@click.option("--user", default=None, help="user id recorded with the token")
@click.option("--data-dir", "data_dir_opt", type=click.Path(file_okay=False), default=None)
@config_option
@pass_ctx
def token_create(ctx: Ctx, project: str | None, role: str, cloud_admin: bool, user: str | None,
                 data_dir_opt: str | None) -> None:
    """Create a token; it is printed once, as the last line. An ``admin`` token is admin of its own project only;
    ``--cloud-admin`` makes one for every project."""
    from opencsbs.auth.local import create_token
    from opencsbs.db.base import transaction

    if not cloud_admin and not project:
        raise click.UsageError("--project is required (or --cloud-admin for a token of every project)")
    if data_dir_opt:
        ctx.data_dir = data_dir_opt
    runtime = ctx.runtime()
    try:
        with transaction(runtime.sessions) as session:
            value = create_token(session, project, role, user, cloud_admin=cloud_admin)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    finally:
        runtime.close()
    what = "cloud-admin token (every project)" if cloud_admin else f"token for project {project} with role {role}"
    click.echo(f"{what} (store it: it is not shown again):", err=True)
    click.echo(value)


# --- authorization rules ------------------------------------------------------------------------------------


@main.group()
def rules() -> None:
    """API authorization rules (auth.policy_file). Backup policies are ``opencsbs policy``."""


@rules.command("show")
@config_option
@click.option("--defaults", is_flag=True, help="the built-in defaults, ignoring auth.policy_file")
@pass_ctx
def rules_show(ctx: Ctx, defaults: bool) -> None:
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
@data_dir_option
@config_option
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
@data_dir_option
@config_option
@click.argument("inventory", type=click.Path(exists=True, dir_okay=False))
@pass_ctx
def sandbox_load(ctx: Ctx, inventory: str) -> None:
    """Load (upsert) an inventory YAML file."""
    from opencsbs.clouds.sandbox.inventory import load_inventory_file

    counts = _sandbox_run(ctx, lambda s, st: load_inventory_file(s, Path(inventory), st.volumes_dir))
    click.echo(f"loaded {counts['servers']} servers, {counts['volumes']} volumes")


@sandbox.command("list")
@data_dir_option
@config_option
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
@data_dir_option
@config_option
@click.argument("server_id")
@click.option("--status", default=None, type=click.Choice(NOVA_STATUSES, case_sensitive=False),
              help="Nova status (any case)")
@click.option("--task-state", default=None, type=click.Choice(("",) + NOVA_TASK_STATES, case_sensitive=False),
              help="Nova task state; '' clears it")
@click.option("--az", "availability_zone", default=None)
@click.option("--name", default=None)
@pass_ctx
def sandbox_set(ctx: Ctx, server_id: str, **changes) -> None:
    """Change a server's status, task state, AZ or name."""
    from opencsbs.clouds.sandbox.inventory import set_server

    _sandbox_run(ctx, lambda s, _st: set_server(s, server_id, **changes))
    click.echo(f"server {server_id} updated")


@sandbox.command("delete")
@data_dir_option
@config_option
@click.argument("resource_id")
@pass_ctx
def sandbox_delete(ctx: Ctx, resource_id: str) -> None:
    """Delete a server (its volumes stay, detached) or a volume (and its data)."""
    from opencsbs.clouds.sandbox.inventory import delete_resource

    kind = _sandbox_run(ctx, lambda s, st: delete_resource(s, resource_id, st.volumes_dir))
    click.echo(f"{kind} {resource_id} deleted")


@sandbox.command("write")
@data_dir_option
@config_option
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
@data_dir_option
@config_option
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

# --- scheduler and policies ---------------------------------------------------------------------------------


@main.command()
@pass_ctx
def scheduler(ctx: Ctx) -> None:
    """Run the policy scheduler (for deployments with ``scheduler: false`` in serve). Several may run against one
    PostgreSQL database: each slot fires once. Stops on SIGTERM/SIGINT."""
    import signal
    import threading

    runtime = ctx.runtime()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    from opencsbs.bootstrap import start_scheduler

    start_scheduler(runtime)
    click.echo(f"opencsbs scheduler: every {runtime.settings.scheduler_interval}s, database "
               f"{runtime.settings.db_url.split('@')[-1]}", err=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        runtime.close()


@main.group()
def policy() -> None:
    """Backup policies of a project (the same rules as the API; output is the API's JSON)."""


def _policy_call(ctx: Ctx, project: str, fn):
    from pydantic import ValidationError

    from opencsbs.auth.base import Principal
    from opencsbs.core.errors import CSBSError

    runtime = ctx.runtime()
    principal = Principal(project_id=project, user_id="local-cli", roles=frozenset({"reader", "member", "admin"}))
    try:
        return fn(runtime, principal)
    except CSBSError as exc:
        raise click.ClickException(f"{exc.error_code}: {exc.error_msg}") from exc
    except ValidationError as exc:
        raise click.ClickException(f"invalid policy: {exc.errors()[0].get('loc')}: {exc.errors()[0].get('msg')}") from exc
    finally:
        runtime.close()


def _echo(obj) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=True))


def _load_body(file) -> dict:
    try:
        data = json.load(file)
    except ValueError as exc:
        raise click.ClickException(f"{file.name}: not JSON ({exc})") from exc
    body = data if isinstance(data, dict) and "policy" in data else {"policy": data}
    if not isinstance(body["policy"], dict):
        raise click.ClickException(f'{file.name}: must be a JSON object ({{"policy": {{...}}}} or the policy itself)')
    return body


DAILY_2AM = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nRRULE:FREQ=DAILY;BYHOUR=2;BYMINUTE=0\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"


@policy.command("create")
@click.option("--project", required=True, help="project id")
@click.option("--file", "file", type=click.File("r"), default=None,
              help="JSON body of POST /policies ({\"policy\": {...}}); the options below build one otherwise")
@click.option("--name", default=None)
@click.option("--description", default="")
@click.option("--server", "servers", multiple=True, help="server id to bind (repeatable)")
@click.option("--pattern", default=DAILY_2AM, show_default="daily at 02:00 UTC", help="iCalendar VEVENT with RRULE")
@click.option("--max-backups", type=int, default=None)
@click.option("--retention-days", type=int, default=None)
@click.option("--disabled", is_flag=True, help="create with automatic scheduling off")
@pass_ctx
def policy_create(ctx: Ctx, project, file, name, description, servers, pattern, max_backups, retention_days,
                  disabled) -> None:
    """Create a policy; prints it."""
    from opencsbs.api.schemas.policies import PolicyCreateRequest
    from opencsbs.service import policies

    if file is not None:
        raw = _load_body(file)
    else:
        if not name:
            raise click.UsageError("--name is required without --file")
        definition = {k: v for k, v in (("max_backups", max_backups), ("retention_duration_days", retention_days))
                      if v is not None}
        raw = {"policy": {
            "name": name, "description": description, "provider_id": None, "parameters": {"common": {}},
            "resources": [{"id": s, "type": "OS::Nova::Server", "name": ""} for s in servers],
            "scheduled_operations": [{"enabled": not disabled, "operation_type": "backup",
                                      "operation_definition": definition,
                                      "trigger": {"properties": {"pattern": pattern}}}],
        }}

    def _create(runtime, principal):
        if raw["policy"].get("provider_id") is None:
            raw["policy"]["provider_id"] = runtime.settings.provider_id
        spec = PolicyCreateRequest.model_validate(raw).policy.model_dump(exclude_unset=True)
        return policies.create_policy(runtime, principal, project, spec)

    _echo(_policy_call(ctx, project, _create))


@policy.command("list")
@click.option("--project", required=True)
@click.option("--name", default=None)
@click.option("--status", default=None)
@click.option("--sort", default=None)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="at most this many (1 or more)")
@click.option("--marker", default=None)
@pass_ctx
def policy_list(ctx: Ctx, project, name, status, sort, limit, marker) -> None:
    """List a project's policies as JSON."""
    from opencsbs.service import policies

    query = policies.ListQuery(marker=marker, limit=limit, sort=sort, name=name, status=status)
    page, _next = _policy_call(ctx, project, lambda rt, p: policies.list_policies(rt, p, project, query))
    _echo(page)


@policy.command("show")
@click.option("--project", required=True)
@click.argument("policy_id")
@pass_ctx
def policy_show(ctx: Ctx, project, policy_id) -> None:
    """Show one policy as JSON."""
    from opencsbs.service import policies

    _echo(_policy_call(ctx, project, lambda rt, p: policies.show_policy(rt, p, project, policy_id)))


@policy.command("update")
@click.option("--project", required=True)
@click.argument("policy_id")
@click.option("--file", "file", type=click.File("r"), default=None, help="JSON body of PUT /policies/{id}")
@click.option("--name", default=None)
@click.option("--description", default=None)
@click.option("--enable/--disable", "enabled", default=None, help="turn automatic scheduling on or off")
@click.option("--pattern", default=None)
@pass_ctx
def policy_update(ctx: Ctx, project, policy_id, file, name, description, enabled, pattern) -> None:
    """Change a policy; prints it."""
    from opencsbs.api.schemas.policies import PolicyUpdateRequest
    from opencsbs.service import policies

    def _update(runtime, principal):
        if file is not None:
            raw = _load_body(file)
        else:
            raw = {"policy": {k: v for k, v in (("name", name), ("description", description)) if v is not None}}
            if enabled is not None or pattern is not None:
                current = policies.show_policy(runtime, principal, project, policy_id)
                op: dict = {"id": current["scheduled_operations"][0]["id"]}
                if enabled is not None:
                    op["enabled"] = enabled
                if pattern is not None:
                    op["trigger"] = {"properties": {"pattern": pattern}}
                raw["policy"]["scheduled_operations"] = [op]
        spec = PolicyUpdateRequest.model_validate(raw).policy.model_dump(exclude_unset=True)
        return policies.update_policy(runtime, principal, project, policy_id, spec)

    _echo(_policy_call(ctx, project, _update))


@policy.command("delete")
@click.option("--project", required=True)
@click.argument("policy_id")
@pass_ctx
def policy_delete(ctx: Ctx, project, policy_id) -> None:
    """Delete a policy (its backups stay)."""
    from opencsbs.service import policies

    _policy_call(ctx, project, lambda rt, p: policies.delete_policy(rt, p, project, policy_id))
    click.echo(f"policy {policy_id} deleted")


@policy.command("run")
@click.option("--project", required=True)
@click.argument("policy_id")
@click.option("--server", "servers", multiple=True, help="only these servers of the policy")
@pass_ctx
def policy_run(ctx: Ctx, project, policy_id, servers) -> None:
    """Execute a policy now (manual backups); prints the checkpoint."""
    from opencsbs.service import policy_runs

    _echo(_policy_call(ctx, project, lambda rt, p: policy_runs.execute(
        rt, p, project, policy_id, resources=list(servers) or None)))


@main.group()
def bank() -> None:
    """Inspect and maintain the bank (where backup data lives)."""


def _open_bank_or_exit(ctx: Ctx):
    from opencsbs.bank import BankError, open_bank

    settings = ctx.settings()
    try:
        return open_bank(settings)
    except BankError as exc:
        click.echo(f"error: {exc}", err=False)
        sys.exit(1)


@bank.command("verify")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
@click.option("--progress/--no-progress", default=None, help="progress bar (default: on a terminal)")
@pass_ctx
def bank_verify(ctx: Ctx, as_json: bool, progress: bool | None) -> None:
    """Re-read every index and every chunk of the bank and report damage (exit code 1 on damage)."""
    from dataclasses import asdict

    the_bank = _open_bank_or_exit(ctx)
    show = sys.stderr.isatty() if progress is None else progress
    try:
        if show:
            with click.progressbar(length=0, label="verifying chunks", file=sys.stderr) as bar:
                def cb(done: int, total: int) -> None:
                    bar.length = total
                    bar.update(done - bar.pos)

                report = the_bank.verify(progress=cb)
        else:
            report = the_bank.verify()
    finally:
        the_bank.close()
    if as_json:
        click.echo(json.dumps({**asdict(report), "ok": report.ok}, indent=2))
    else:
        click.echo(f"bank {the_bank.store.location}: {report.indexes_checked} indexes, "
                   f"{report.chunks_checked} chunks ({report.bytes_checked / 1e6:.1f} MB) checked "
                   f"in {report.seconds:.1f} s; {report.unreferenced_chunks} unreferenced chunks")
        for name, reason in report.damaged_indexes:
            click.echo(f"damaged index {name}: {reason}")
        for key, reason in report.damaged_chunks:
            click.echo(f"damaged chunk {key}: {reason}")
        for addr, names in report.missing_chunks:
            click.echo(f"missing chunk {addr} (referenced by {', '.join(names)})")
        click.echo("no damage" if report.ok else
                   f"DAMAGE: {len(report.damaged_indexes)} indexes, {len(report.damaged_chunks)} chunks damaged, "
                   f"{len(report.missing_chunks)} chunks missing")
    sys.exit(0 if report.ok else 1)


@bank.command("gc")
@click.option("--grace", "grace", type=float, default=3600.0, show_default=True,
              help="keep unreferenced chunks written less than this many seconds ago")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
@pass_ctx
def bank_gc(ctx: Ctx, grace: float, as_json: bool) -> None:
    """Delete the chunks no index references (mark and sweep; safe while backups run)."""
    from dataclasses import asdict

    the_bank = _open_bank_or_exit(ctx)
    try:
        report = the_bank.gc(grace_seconds=grace)
    finally:
        the_bank.close()
    if as_json:
        click.echo(json.dumps(asdict(report), indent=2))
    else:
        click.echo(f"bank {the_bank.store.location}: {report.indexes} indexes reference "
                   f"{report.referenced_chunks} chunks; {report.chunks_seen} chunks seen; "
                   f"deleted {report.deleted_chunks} chunks ({report.freed_bytes / 1e6:.1f} MB); "
                   f"kept {report.kept_recent} recent unreferenced chunks "
                   f"({report.reclaimable_bytes / 1e6:.1f} MB reclaimable after the grace period); "
                   f"{report.in_flight_backups} backups in flight, {report.stale_leases} stale leases and "
                   f"{report.stale_gc_markers} stale GC markers removed; "
                   f"{report.seconds:.1f} s")
        for err in report.errors:
            click.echo(f"error: {err}")
        if report.skipped_reason:
            click.echo(f"sweep skipped: {report.skipped_reason}")
    sys.exit(1 if report.skipped_reason else 0)


def _add_state_options(group: click.Group) -> None:
    """Give every subcommand the ``--data-dir``/``--config``/``--database-url`` it does not declare itself, so they
    work after the subcommand as they do before it (``opencsbs policy list --project P --data-dir D``)."""
    for command in group.commands.values():
        if isinstance(command, click.Group):
            _add_state_options(command)
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


_add_state_options(main)


def run() -> None:  # pragma: no cover
    main(prog_name="opencsbs")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
