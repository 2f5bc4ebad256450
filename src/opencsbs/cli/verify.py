"""``opencsbs verify ...`` and ``opencsbs drill ...``: verify jobs, restore drills, the per-backup records and
their schedules from the command line (the same use cases as the ``/opencsbs/v1/{project_id}/verify_runs|drills|
verifications|check_schedules`` routes; output is the API's JSON). docs/verify.md describes both.

The command line acts as the operator of the machine: a project admin of ``--project`` (user ``opencsbs-cli``).
``run --wait`` runs the job in this process too and prints the finished run; it exits 1 when the run found damage
(verify: ``damaged``; drill: ``failed``) or could not run (``error``).
"""

from __future__ import annotations

import sys
from typing import Any, Callable

import click

from opencsbs.cli._common import CLI_USER, Ctx, KeyValue, csbs_errors, echo_json, follow
from opencsbs.cli.remote import remote_of

PROJECT = click.option("--project", required=True, help="project id")
WAIT = click.option("--wait", is_flag=True, help="run the job here and print the finished result")
PENDING = ("pending", "running")


def _call(project: str, fn: Callable, wait: Callable | None = None, api: Callable | None = None,
          get: Callable | None = None) -> Any:
    """Run ``fn(runtime, principal)``; with ``wait(runtime, result)``, follow the job and return its end. In client
    mode ``api(remote)`` instead (the extension route's answer), followed with ``get(remote, id)`` when ``wait``
    is given. A CSBS refusal exits 1 with ``CODE: message``."""
    from opencsbs.auth.base import Principal

    ctx = click.get_current_context().find_object(Ctx)
    remote = remote_of(ctx, project)
    if remote is not None:
        with remote:
            out = api(remote)
            if wait is not None and get is not None:
                follow(None, lambda: (get(remote, out["id"])["status"], 0), "waiting", running=PENDING)
                out = get(remote, out["id"])
            return out
    runtime = ctx.runtime()
    principal = Principal.operator(project, CLI_USER)
    try:
        with csbs_errors():
            out = fn(runtime, principal)
            return wait(runtime, out) if wait is not None else out
    finally:
        runtime.close()


def _given(**fields) -> dict:
    """The request body's fields that were given (not None)."""
    return {k: v for k, v in fields.items() if v is not None}


def _follow(get: Callable[[Any, str], dict], label: str) -> Callable:
    def wait(runtime, out: dict) -> dict:
        follow(runtime, lambda: (get(runtime, out["id"])["status"], 0), label, running=PENDING,
               target_id=out["id"])
        return get(runtime, out["id"])

    return wait


# --- verify ---------------------------------------------------------------------------------------------------


@click.group()
def verify() -> None:
    """Verify jobs: re-read and re-hash every chunk of a project's backups (docs/verify.md)."""


@verify.command("run")
@PROJECT
@click.option("--backup", "item_ids", multiple=True, help="verify this backup (checkpoint_item id); repeatable")
@click.option("--policy", "policy_id", default=None, help="verify this policy's backups")
@click.option("--outdated-after", "outdated_after_days", type=click.IntRange(0, 36500), default=None,
              help="skip backups verified sound within this many days")
@WAIT
def verify_run(project, item_ids, policy_id, outdated_after_days, wait) -> None:
    """Start a verify run; prints it (with --wait: finished, listing the affected backups)."""
    from opencsbs.service import verify as svc

    out = _call(project, lambda rt, p: svc.start_verify(rt, p, project, checkpoint_item_ids=list(item_ids) or None,
                                                        policy_id=policy_id, outdated_after_days=outdated_after_days),
                _follow(lambda rt, i: svc.get_verify_run(rt, project, i), "verifying") if wait else None,
                api=lambda r: r.ext("POST", "/verify_runs", json={"verify_run": _given(
                    checkpoint_item_ids=list(item_ids) or None, policy_id=policy_id,
                    outdated_after_days=outdated_after_days)})["verify_run"],
                get=lambda r, i: r.ext("GET", f"/verify_runs/{i}")["verify_run"])
    echo_json(out)
    if wait and out["status"] != "ok":
        sys.exit(1)


@verify.command("list")
@PROJECT
@click.option("--marker", default=None, help="runs after this run id (the previous page's last)")
@click.option("--limit", type=click.IntRange(1, 1000), default=None)
def verify_list(project, marker, limit) -> None:
    """The project's verify runs, newest first."""
    from opencsbs.service import verify as svc

    echo_json(_call(project, lambda rt, p: svc.list_verify_runs(rt, project, limit, marker),
                     api=lambda r: r.ext("GET", "/verify_runs",
                                         params={"marker": marker, "limit": limit})["verify_runs"]))


@verify.command("show")
@PROJECT
@click.argument("run_id")
def verify_show(project, run_id) -> None:
    """One verify run."""
    from opencsbs.service import verify as svc

    echo_json(_call(project, lambda rt, p: svc.get_verify_run(rt, project, run_id),
                     api=lambda r: r.ext("GET", f"/verify_runs/{run_id}")["verify_run"]))


@verify.command("backup")
@PROJECT
@click.argument("checkpoint_item_id")
def verify_backup(project, checkpoint_item_id) -> None:
    """When a backup was last verified and drilled, and what was found."""
    from opencsbs.service import verify as svc

    echo_json(_call(project, lambda rt, p: svc.backup_verification(rt, project, checkpoint_item_id),
                     api=lambda r: r.ext("GET", f"/checkpoint_items/{checkpoint_item_id}/verification")
                     ["verification"]))


@verify.command("backups")
@PROJECT
@click.option("--result", type=click.Choice(["ok", "damaged", "passed", "failed"]), default=None)
@click.option("--server", "server_id", default=None)
def verify_backups(project, result, server_id) -> None:
    """The verification records of the project's backups (``--result damaged``: the damaged ones)."""
    from opencsbs.service import verify as svc

    echo_json(_call(project, lambda rt, p: svc.list_verifications(rt, project, result, server_id),
                     api=lambda r: r.ext("GET", "/verifications", params={"result": result, "server_id": server_id})
                     ["verifications"]))


@verify.command("schedule")
@PROJECT
@click.option("--kind", type=click.Choice(["verify", "drill"]), required=True)
@click.option("--pattern", required=True, help="an RRULE, as a policy's (BEGIN:VCALENDAR...)")
@click.option("--start-time", default=None, help="UTC, default now")
@click.option("--param", "params", type=KeyValue("outdated_after_days=7"), multiple=True,
              help="NAME=VALUE: verify policy_id, outdated_after_days; drill choice (latest|random), server_id")
def verify_schedule(project, kind, pattern, start_time, params) -> None:
    """Schedule verify runs or drills of the project."""
    from opencsbs.service import verify as svc

    parameters: dict[str, Any] = {}
    for name, value in params:
        parameters[name] = int(value) if name == "outdated_after_days" and value.isdigit() else value
    echo_json(_call(project, lambda rt, pr: svc.create_schedule(rt, pr, project, kind, pattern, start_time,
                                                                parameters),
                     api=lambda r: r.ext("POST", "/check_schedules", json={"check_schedule": _given(
                         kind=kind, pattern=pattern, start_time=start_time, parameters=parameters)})
                     ["check_schedule"]))


@verify.command("schedules")
@PROJECT
def verify_schedules(project) -> None:
    """The project's verify and drill schedules."""
    from opencsbs.service import verify as svc

    echo_json(_call(project, lambda rt, p: svc.list_schedules(rt, project),
                     api=lambda r: r.ext("GET", "/check_schedules")["check_schedules"]))


@verify.command("unschedule")
@PROJECT
@click.argument("schedule_id")
def verify_unschedule(project, schedule_id) -> None:
    """Remove a schedule."""
    from opencsbs.service import verify as svc

    _call(project, lambda rt, p: svc.delete_schedule(rt, project, schedule_id),
          api=lambda r: r.ext("DELETE", f"/check_schedules/{schedule_id}"))
    echo_json({})


# --- drills ---------------------------------------------------------------------------------------------------


@click.group()
def drill() -> None:
    """Restore drills: restore a backup onto scratch space, check every byte, time it (docs/verify.md)."""


@drill.command("run")
@PROJECT
@click.option("--choice", type=click.Choice(["latest", "random", "id"]), default="latest", show_default=True)
@click.option("--backup", "item_id", default=None, help="with --choice id: the checkpoint_item id")
@click.option("--server", "server_id", default=None, help="latest/random among this server's backups")
@WAIT
def drill_run(project, choice, item_id, server_id, wait) -> None:
    """Start a drill; prints it (with --wait: finished, with its RTO)."""
    from opencsbs.service import verify as svc

    if item_id and choice == "latest":
        choice = "id"
    out = _call(project, lambda rt, p: svc.start_drill(rt, p, project, choice, item_id, server_id),
                _follow(lambda rt, i: svc.get_drill(rt, project, i), "drilling") if wait else None,
                api=lambda r: r.ext("POST", "/drills", json={"drill": _given(
                    choice=choice, checkpoint_item_id=item_id, server_id=server_id)})["drill"],
                get=lambda r, i: r.ext("GET", f"/drills/{i}")["drill"])
    echo_json(out)
    if wait and out["status"] != "passed":
        sys.exit(1)


@drill.command("list")
@PROJECT
@click.option("--server", "server_id", default=None)
@click.option("--backup", "item_id", default=None)
@click.option("--marker", default=None, help="drills after this drill id (the previous page's last)")
@click.option("--limit", type=click.IntRange(1, 1000), default=None)
def drill_list(project, server_id, item_id, marker, limit) -> None:
    """The project's drills, newest first."""
    from opencsbs.service import verify as svc

    echo_json(_call(project, lambda rt, p: svc.list_drills(rt, project, server_id, item_id, limit, marker),
                     api=lambda r: r.ext("GET", "/drills", params={
                         "server_id": server_id, "checkpoint_item_id": item_id, "marker": marker,
                         "limit": limit})["drills"]))


@drill.command("show")
@PROJECT
@click.argument("drill_id")
def drill_show(project, drill_id) -> None:
    """One drill."""
    from opencsbs.service import verify as svc

    echo_json(_call(project, lambda rt, p: svc.get_drill(rt, project, drill_id),
                     api=lambda r: r.ext("GET", f"/drills/{drill_id}")["drill"]))
