"""``opencsbs workers``: the registered workers with their host, capabilities, current job, last heartbeat and
whether they went silent (the use case of ``GET /opencsbs/v1/workers``; docs/engine.md "Placement")."""

from __future__ import annotations

import click

from opencsbs.cli._common import Ctx, pass_ctx
from opencsbs.cli.output import Column, chosen_format, emit, human_duration, output_options

WORKER_COLUMNS = [
    Column("NAME", lambda w: w["name"]),
    Column("HOST", lambda w: w["host"] or "-"),
    Column("CAPABILITIES", lambda w: " ".join(w["capabilities"]) or "(any)"),
    Column("JOB", lambda w: f"{w['current_kind']} {w['current_target']}" if w["current_job"] else "-"),
    Column("LAST SEEN", lambda w: f"{human_duration(w['seen_seconds_ago'])} ago"),
    Column("STATE", lambda w: "silent" if w["silent"] else ("busy" if w["current_job"] else "idle")),
]


@click.command("workers")
@output_options
@pass_ctx
def workers(ctx: Ctx, fmt, as_json, columns) -> None:
    """List the workers: host, what they serve, the job they run, their last heartbeat; 'silent' when it is older
    than the job lease (their job is then resumed by a worker that serves it)."""
    from opencsbs.service import workers as use_case

    runtime = ctx.runtime()
    try:
        rows = use_case.list_workers(runtime)
    finally:
        runtime.close()
    emit(rows, WORKER_COLUMNS, chosen_format(fmt, as_json), columns)
