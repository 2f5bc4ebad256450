"""``opencsbs replication ...``: copy backups to a second bank (a replica of ``settings.replicas``) and manage the
rules that copy a policy's backups by themselves (docs/replication.md). Each command calls
:mod:`opencsbs.service.replication` and prints what it returns (JSON); replicas are named, never shown with
their credentials."""

from __future__ import annotations

import time

import click

from opencsbs.cli._common import Ctx, csbs_errors, echo_json, pass_ctx
from opencsbs.cli.remote import remote_of


@click.group()
def replication() -> None:
    """Copy backups to a second bank and manage replication rules."""


def _item_project(runtime, item_id: str) -> str:
    from opencsbs.core import codes
    from opencsbs.core.errors import CSBSError
    from opencsbs.service.checkpoint_items import find_item

    state = find_item(runtime, item_id)
    if state is None:
        raise CSBSError(codes.CHECKPOINT_ITEM_NOT_FOUND, item_id)
    return state.project_id


@replication.command("copy")
@click.argument("item_id")
@click.option("--to", "replica", required=True, help="the replica's name (settings replicas:)")
@click.option("--wait", is_flag=True, help="run the copy here (client mode: follow it) and wait until it ends")
@click.option("--project", default=None, help="the backup's project (needed with --url only)")
@pass_ctx
def copy_cmd(ctx: Ctx, item_id: str, replica: str, wait: bool, project) -> None:
    """Copy the backup ITEM_ID (a checkpoint_item id) to the replica --to; only missing chunks are sent."""
    from opencsbs.service import replication as svc

    remote = remote_of(ctx, project)
    if remote is not None:
        with remote:
            copy = remote.ext("POST", f"/checkpoint_items/{item_id}/copies", json={"copy": {"destination": replica}}
                              )["copy"]
            while wait and copy["status"] in ("waiting", "copying"):
                time.sleep(0.5)
                copy = next(c for c in remote.ext("GET", f"/checkpoint_items/{item_id}/copies")["copies"]
                            if c["id"] == copy["id"])
        echo_json({"copy": copy})
        if copy["status"] == "error":
            raise SystemExit(1)
        return
    runtime = ctx.runtime()
    try:
        with csbs_errors():
            copy = svc.request_copy(runtime, _item_project(runtime, item_id), item_id, replica)
            if wait:
                from opencsbs.bootstrap import start_workers

                pool = start_workers(runtime, 1, prefix="cli")
                try:
                    while copy["status"] in ("waiting", "copying"):
                        time.sleep(0.3)
                        copy = next(c for c in svc.list_copies(runtime, "", item_id, all_tenants=True)
                                    if c["id"] == copy["id"])
                finally:
                    if pool is not None:
                        pool.stop()
        echo_json({"copy": copy})
        if copy["status"] == "error":
            raise SystemExit(1)
    finally:
        runtime.close()


@replication.command("copies")
@click.argument("item_id")
@click.option("--project", default=None, help="the backup's project (needed with --url only)")
@pass_ctx
def copies_cmd(ctx: Ctx, item_id: str, project) -> None:
    """List the copies of the backup ITEM_ID."""
    from opencsbs.service import replication as svc

    remote = remote_of(ctx, project)
    if remote is not None:
        with remote:
            echo_json({"copies": remote.ext("GET", f"/checkpoint_items/{item_id}/copies")["copies"]})
        return
    runtime = ctx.runtime()
    try:
        with csbs_errors():
            echo_json({"copies": svc.list_copies(runtime, "", item_id, all_tenants=True)})
    finally:
        runtime.close()


@replication.group("rule")
def rule() -> None:
    """Rules: a policy's backups copied to a replica once they are available."""


_MAX = click.option("--max-backups", type=int, default=None,
                    help="keep the N newest copies per server on the replica (-1 or unset: no limit)")
_DAYS = click.option("--retention-days", "retention_days", type=int, default=None,
                     help="remove a copy from the replica D days after it arrived (-1 or unset: no limit)")


@rule.command("add")
@click.argument("policy_id")
@click.option("--to", "replica", required=True, help="the replica's name")
@_MAX
@_DAYS
@pass_ctx
def rule_add(ctx: Ctx, policy_id: str, replica: str, max_backups: int | None, retention_days: int | None) -> None:
    """Copy every backup of POLICY_ID to the replica --to (the scheduler starts the copies), and keep the copies
    there by their own retention (--max-backups, --retention-days; locks and holds still keep them)."""
    from opencsbs.db.models import Policy
    from opencsbs.service import replication as svc

    runtime = ctx.runtime()
    try:
        with runtime.sessions() as session:
            policy = session.get(Policy, policy_id)
            project_id = policy.project_id if policy is not None else ""
        with csbs_errors():
            echo_json({"rule": svc.add_rule(runtime, project_id, policy_id, replica, max_backups=max_backups,
                                             retention_duration_days=retention_days)})
    finally:
        runtime.close()


@rule.command("set")
@click.argument("rule_id")
@_MAX
@_DAYS
@pass_ctx
def rule_set(ctx: Ctx, rule_id: str, max_backups: int | None, retention_days: int | None) -> None:
    """Replace the retention of the copies of rule RULE_ID (an option left out: no limit)."""
    from opencsbs.service import replication as svc

    runtime = ctx.runtime()
    try:
        with csbs_errors():
            echo_json({"rule": svc.set_rule_retention(runtime, rule_id, max_backups=max_backups,
                                                      retention_duration_days=retention_days)})
    finally:
        runtime.close()


@rule.command("list")
@pass_ctx
def rule_list(ctx: Ctx) -> None:
    """The rules with their lag: backups not yet copied (pending, copying, failed, oldest_pending_since), last
    success, bytes sent, copies kept and removed by the rule's retention."""
    from opencsbs.service import replication as svc

    runtime = ctx.runtime()
    try:
        echo_json({"rules": svc.list_rules(runtime)})
    finally:
        runtime.close()


@rule.command("delete")
@click.argument("rule_id")
@pass_ctx
def rule_delete(ctx: Ctx, rule_id: str) -> None:
    """Drop the rule RULE_ID (copies made stay)."""
    from opencsbs.service import replication as svc

    runtime = ctx.runtime()
    try:
        with csbs_errors():
            svc.delete_rule(runtime, rule_id)
    finally:
        runtime.close()


@replication.command("run")
@pass_ctx
def run_cmd(ctx: Ctx) -> None:
    """Start the copies the rules call for and remove the copies their retention no longer keeps, now (what the
    scheduler does on each pass); prints how many copies started, the copies removed, those a lock or hold keeps
    on the replica and the removals left for the next pass."""
    from opencsbs.service import replica_retention
    from opencsbs.service import replication as svc

    runtime = ctx.runtime()
    try:
        started = svc.enqueue_due_copies(runtime)
        report = replica_retention.apply_replica_retention(runtime)
        echo_json({"started": started, "removed": report.removed, "kept": report.kept, "failed": report.failed})
    finally:
        runtime.close()


@click.command("rebuild-catalog")
@click.option("--from", "replica", default=None, help="read a replica (settings replicas:) instead of the bank")
@pass_ctx
def rebuild_catalog(ctx: Ctx, replica: str | None) -> None:
    """Recreate the checkpoints and backups of the database from the catalog records in a bank (disaster
    recovery: the database is lost, the bank is not). Backups already known are left alone."""
    from dataclasses import asdict

    from opencsbs.bank import BankError, open_bank
    from opencsbs.service.catalog import rebuild_catalog as rebuild

    runtime = ctx.runtime()
    try:
        try:
            bank = open_bank(runtime.settings, replica)
        except BankError as exc:
            raise click.ClickException(str(exc)) from None
        try:
            report = rebuild(runtime, bank)
        finally:
            bank.close()
        echo_json(asdict(report))
    finally:
        runtime.close()
