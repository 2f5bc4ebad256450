"""``opencsbs serve --workers N``: the HTTP API in N processes sharing one listening socket.

One Python process serves HTTP on one core (the GIL); N uvicorn worker processes, spawned by uvicorn's
``Multiprocess`` supervisor and accepting on the socket the parent bound, use N. Only the parent runs the backup
job workers and the scheduler (and the migrations); each HTTP process builds its own :class:`Runtime` (database
pool, authenticator) from the parent's resolved settings, passed as JSON in :data:`SETTINGS_ENV` (the children
are spawned, not forked). SQLite is refused: one file written by several processes serialises every write and
answers "database is locked" under load. docs/deployment.md documents it.
"""

from __future__ import annotations

import os

from opencsbs.config import Settings

#: environment variable carrying the parent's settings (JSON) to the HTTP worker processes
SETTINGS_ENV = "OPENCSBS_SERVE_SETTINGS_JSON"


def multi_process_refusal(settings: Settings, processes: int) -> str | None:
    """The one-line reason ``processes`` HTTP processes cannot serve ``settings``' database, or None."""
    if processes > 1 and settings.db_url.startswith("sqlite"):
        return (f"--workers {processes} needs PostgreSQL (database_url); SQLite is served by one process "
                "(leave --workers out)")
    return None


def export_settings(settings: Settings) -> None:
    """Put ``settings`` where the spawned HTTP processes find them (:data:`SETTINGS_ENV`)."""
    os.environ[SETTINGS_ENV] = settings.model_dump_json()
    from opencsbs.api.metrics import enable_multiprocess

    # the processes share their request metrics (GET /metrics answers for all of them)
    enable_multiprocess(str(settings.data_dir / "metrics"))


def worker_app():
    """The app of one HTTP worker process (a uvicorn ``factory``): the parent's settings, no job workers, no
    scheduler, no migrations and no inventory load (the parent did those)."""
    from opencsbs.api.app import create_app
    from opencsbs.bootstrap import build_runtime

    settings = Settings.model_validate_json(os.environ[SETTINGS_ENV])
    from opencsbs.logs import configure_from

    configure_from(settings)
    settings.workers = 0
    settings.scheduler = False
    settings.cloud.inventory = None  # the parent loaded it
    runtime = build_runtime(settings, migrate=False)
    app = create_app(runtime)
    app.router.on_shutdown.append(runtime.close)
    return app
