"""The long-running processes: ``serve`` (the API, with workers and scheduler), ``worker`` and ``scheduler``."""

from __future__ import annotations

from pathlib import Path

import click

from opencsbs.bootstrap import start_scheduler, start_workers
from opencsbs.cli._common import Ctx, build_runtime, config_option, pass_ctx
from opencsbs.logs import configure_from as configure_logging


@click.command()
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
    configure_logging(settings)
    _cross_project_notice(runtime)
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
                       forwarded_allow_ips=settings.forwarded_allow_ips, http=JsonErrorH11Protocol,
                       log_config=None)  # uvicorn's lines go through opencsbs.logs
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


@click.command()
@click.option("--threads", type=int, default=1, show_default=True, help="jobs run at once by this process")
@click.option("--host", "worker_host", default=None, metavar="NAME",
              help="this machine's name for placement (worker.host; default the system's host name)")
@click.option("--zone", "zones", multiple=True, metavar="AZ",
              help="serve only servers of this availability zone (repeat for more; worker.zones; default every zone)")
@click.option("--capability", "capabilities", multiple=True, metavar="KIND:VALUE",
              help="serve exactly these (repeat; worker.capabilities, e.g. libvirt:kvm-2; default: from the cloud "
                   "driver)")
@pass_ctx
def worker(ctx: Ctx, threads: int, worker_host, zones, capabilities) -> None:
    """Run backup/restore/delete jobs (for deployments with ``workers: 0`` in serve). Stops on SIGTERM/SIGINT;
    a killed worker's job is resumed by another worker once its lease expires. The worker declares what it
    serves (host, driver, zones) and takes only jobs it can serve (docs/engine.md "Placement")."""
    import signal
    import threading

    from opencsbs.service.workers import own_capabilities

    own = {k: v for k, v in {"host": worker_host, "zones": list(zones) or None,
                              "capabilities": list(capabilities) or None}.items() if v is not None}
    runtime = ctx.runtime(worker=own) if own else ctx.runtime()
    configure_logging(runtime.settings)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    pool = start_workers(runtime, max(threads, 1))
    click.echo(f"opencsbs worker: {len(pool.workers)} thread(s), data dir {runtime.settings.data_dir}, host "
               f"{runtime.settings.worker.host_name}, serves {' '.join(own_capabilities(runtime))}", err=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        runtime.close()


@click.command()
@pass_ctx
def scheduler(ctx: Ctx) -> None:
    """Run the policy scheduler (for deployments with ``scheduler: false`` in serve). Several may run against one
    PostgreSQL database: each slot fires once. Stops on SIGTERM/SIGINT."""
    import signal
    import threading

    runtime = ctx.runtime()
    configure_logging(runtime.settings)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    start_scheduler(runtime)
    click.echo(f"opencsbs scheduler: every {runtime.settings.scheduler_interval}s, database "
               f"{runtime.settings.db_url.split('@')[-1]}", err=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        runtime.close()
