"""``opencsbs locks ...`` and ``opencsbs holds ...``: retention locks, legal holds and their audit trail from the
command line (the same use cases and rules as the ``/opencsbs/v1/{project_id}/locks|holds|lock_audit`` routes;
output is the API's JSON). docs/locks.md describes both.

The command line acts as the operator of the machine: a project admin of ``--project`` (user ``opencsbs-cli``).
``--bypass-governance`` (on ``locks update`` / ``locks remove``) acts as a cloud admin instead, which holds
``csbs:locks:bypass_governance`` by default; the audit trail records it. No option lifts a compliance lock past
its cooling-off period or deletes a kept backup.
"""

from __future__ import annotations

from typing import Any, Callable

import click

from opencsbs.cli._common import CLI_USER, Ctx, KeyValue, csbs_errors, echo_json
from opencsbs.cli.remote import remote_of


def _call(project: str, fn: Callable, bypass_governance: bool = False, api: Callable | None = None) -> Any:
    """Run ``fn(runtime, principal)``, or in client mode ``api(remote)`` (the extension route's answer); a CSBS
    refusal exits 1 with ``CODE: message``. In client mode the token's roles decide (``--bypass-governance``
    needs a cloud admin's token there)."""
    from opencsbs.auth.base import Principal

    ctx = click.get_current_context().find_object(Ctx)
    remote = remote_of(ctx, project)
    if remote is not None:
        with remote:
            return api(remote)
    runtime = ctx.runtime()
    principal = Principal.operator(project, CLI_USER)
    if bypass_governance:  # a cloud admin (system scope), as the documented bypass rule expects
        principal = Principal(project_id="", user_id=CLI_USER, roles=principal.roles, system_scope="all")
    try:
        with csbs_errors():
            return fn(runtime, principal)
    finally:
        runtime.close()


_echo = echo_json


def _given(**fields) -> dict:
    """The request body's fields that were given (not None)."""
    return {k: v for k, v in fields.items() if v is not None}
PROJECT = click.option("--project", required=True, help="project id")


# --- locks ----------------------------------------------------------------------------------------------------


@click.group()
def locks() -> None:
    """Retention locks of a project's (or a policy's) backups, and the audit trail (docs/locks.md)."""


@locks.command("list")
@PROJECT
def locks_list(project: str) -> None:
    """The project's locks (JSON list)."""
    from opencsbs.service import locks as svc

    _echo(_call(project, lambda rt, p: svc.list_locks(rt, project),
                api=lambda r: r.ext("GET", "/locks")["locks"]))


@locks.command("show")
@PROJECT
@click.argument("lock_id")
def locks_show(project: str, lock_id: str) -> None:
    """One lock."""
    from opencsbs.service import locks as svc

    _echo(_call(project, lambda rt, p: svc.get_lock(rt, project, lock_id),
                api=lambda r: r.ext("GET", f"/locks/{lock_id}")["lock"]))


@locks.command("create")
@PROJECT
@click.option("--mode", type=click.Choice(["governance", "compliance"]), required=True)
@click.option("--min-days", type=int, required=True, help="days each covered backup is kept after its creation")
@click.option("--max-days", type=int, default=None, help="optional maximum retention (days)")
@click.option("--policy", "policy_id", default=None, help="lock this policy's backups only")
@click.option("--cooling-off-hours", type=int, default=None,
              help="compliance: hours during which the lock may still be removed (default 72)")
def locks_create(project, mode, min_days, max_days, policy_id, cooling_off_hours) -> None:
    """Set a lock; prints it."""
    from opencsbs.service import locks as svc

    _echo(_call(project, lambda rt, p: svc.create_lock(
        rt, p, project, mode=mode, min_retention_days=min_days, max_retention_days=max_days,
        policy_id=policy_id, cooling_off_hours=cooling_off_hours),
        api=lambda r: r.ext("POST", "/locks", json={"lock": _given(
            mode=mode, min_retention_days=min_days, max_retention_days=max_days, policy_id=policy_id,
            cooling_off_hours=cooling_off_hours)})["lock"]))


@locks.command("update")
@PROJECT
@click.argument("lock_id")
@click.option("--mode", type=click.Choice(["governance", "compliance"]), default=None)
@click.option("--min-days", type=int, default=None)
@click.option("--max-days", type=int, default=None)
@click.option("--bypass-governance", is_flag=True, help="act as a cloud admin to weaken a governance lock")
def locks_update(project, lock_id, mode, min_days, max_days, bypass_governance) -> None:
    """Change a lock (weakening: see --bypass-governance; a compliance lock past cooling-off: never)."""
    from opencsbs.service import locks as svc

    _echo(_call(project, lambda rt, p: svc.update_lock(rt, p, project, lock_id, mode=mode,
                                                       min_retention_days=min_days, max_retention_days=max_days),
                bypass_governance, api=lambda r: r.ext("PUT", f"/locks/{lock_id}", json={"lock": _given(
                    mode=mode, min_retention_days=min_days, max_retention_days=max_days)})["lock"]))


@locks.command("remove")
@PROJECT
@click.argument("lock_id")
@click.option("--bypass-governance", is_flag=True, help="act as a cloud admin to remove a governance lock")
def locks_remove(project, lock_id, bypass_governance) -> None:
    """Remove a lock."""
    from opencsbs.service import locks as svc

    _call(project, lambda rt, p: svc.remove_lock(rt, p, project, lock_id), bypass_governance,
          api=lambda r: r.ext("DELETE", f"/locks/{lock_id}"))
    click.echo(f"lock {lock_id} removed")


@locks.command("audit")
@PROJECT
@click.option("--marker", type=click.IntRange(min=0), default=None, help="records after this id")
@click.option("--limit", type=click.IntRange(min=1), default=None)
def locks_audit(project, marker, limit) -> None:
    """Every act on the project's locks and holds, oldest first."""
    from opencsbs.service import locks as svc

    _echo(_call(project, lambda rt, p: svc.list_audit(rt, project, marker, limit),
                api=lambda r: r.ext("GET", "/lock_audit", params={"marker": marker, "limit": limit})["records"]))


@locks.command("check")
@PROJECT
@click.argument("checkpoint_item_id")
def locks_check(project, checkpoint_item_id) -> None:
    """Whether a backup may be deleted now, and what keeps it."""
    from opencsbs.service import locks as svc

    _echo(_call(project, lambda rt, p: svc.backup_retention(rt, project, checkpoint_item_id),
                api=lambda r: r.ext("GET", f"/checkpoint_items/{checkpoint_item_id}/retention")["retention"]))


# --- holds ----------------------------------------------------------------------------------------------------


@click.group()
def holds() -> None:
    """Legal holds on chosen backups (docs/locks.md)."""


@holds.command("list")
@PROJECT
@click.option("--status", type=click.Choice(["active", "released"]), default=None)
def holds_list(project, status) -> None:
    """The project's holds (JSON list)."""
    from opencsbs.service import locks as svc

    _echo(_call(project, lambda rt, p: svc.list_holds(rt, project, status),
                api=lambda r: r.ext("GET", "/holds", params={"status": status})["holds"]))


@holds.command("show")
@PROJECT
@click.argument("hold_id")
def holds_show(project, hold_id) -> None:
    """One hold."""
    from opencsbs.service import locks as svc

    _echo(_call(project, lambda rt, p: svc.get_hold(rt, project, hold_id),
                api=lambda r: r.ext("GET", f"/holds/{hold_id}")["hold"]))


@holds.command("create")
@PROJECT
@click.option("--name", required=True)
@click.option("--reason", default="")
@click.option("--backup", "item_ids", multiple=True, help="checkpoint_item id (repeatable)")
@click.option("--tag", type=KeyValue("case=c-42"), default=None,
              help="KEY=VALUE: backups carrying this tag (--tag case=c-42)")
@click.option("--policy", "policy_id", default=None, help="backups of this policy")
@click.option("--created-after", default=None, help="backups created at or after (UTC, ISO 8601)")
@click.option("--created-before", default=None, help="backups created at or before (UTC, ISO 8601)")
def holds_create(project, name, reason, item_ids, tag, policy_id, created_after, created_before) -> None:
    """Place a hold on the backups matching every given criterion; prints it."""
    from opencsbs.service import locks as svc

    key, value = tag if tag is not None else (None, None)
    sel = svc.HoldSelector(checkpoint_item_ids=list(item_ids) or None, tag_key=key, tag_value=value,
                           policy_id=policy_id, created_after=created_after, created_before=created_before)
    body = _given(name=name, reason=reason, checkpoint_item_ids=list(item_ids) or None,
                  tag={"key": key, "value": value} if tag is not None else None, policy_id=policy_id,
                  created_after=created_after, created_before=created_before)
    _echo(_call(project, lambda rt, p: svc.create_hold(rt, p, project, name, reason, sel),
                api=lambda r: r.ext("POST", "/holds", json={"hold": body})["hold"]))


@holds.command("release")
@PROJECT
@click.argument("hold_id")
def holds_release(project, hold_id) -> None:
    """Release a hold; prints it."""
    from opencsbs.service import locks as svc

    _echo(_call(project, lambda rt, p: svc.release_hold(rt, p, project, hold_id),
                api=lambda r: r.ext("POST", f"/holds/{hold_id}/release")["hold"]))
