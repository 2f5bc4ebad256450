"""``opencsbs replication ...``: copy backups to a second bank (a replica of ``settings.replicas``) and manage the
rules that copy a policy's backups by themselves (docs/replication.md). Each command calls
:mod:`opencsbs.service.replication` and prints what it returns (JSON); replicas are named, never shown with
their credentials."""

from __future__ import annotations

import time

import click

from opencsbs.cli._common import Ctx, csbs_errors, echo_json, pass_ctx


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
@click.option("--wait", is_flag=True, help="run the copy here and wait until it ends")
@pass_ctx
def copy_cmd(ctx: Ctx, item_id: str, replica: str, wait: bool) -> None:
    """Copy the backup ITEM_ID (a checkpoint_item id) to the replica --to; only missing chunks are sent."""
    from opencsbs.service import replication as svc

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
@pass_ctx
def copies_cmd(ctx: Ctx, item_id: str) -> None:
    """List the copies of the backup ITEM_ID."""
    from opencsbs.service import replication as svc

    runtime = ctx.runtime()
    try:
        with csbs_errors():
            echo_json({"copies": svc.list_copies(runtime, "", item_id, all_tenants=True)})
    finally:
        runtime.close()


@replication.group("rule")
def rule() -> None:
    """Rules: a policy's backups copied to a replica once they are available."""


@rule.command("add")
@click.argument("policy_id")
@click.option("--to", "replica", required=True, help="the replica's name")
@pass_ctx
def rule_add(ctx: Ctx, policy_id: str, replica: str) -> None:
    """Copy every backup of POLICY_ID to the replica --to (the scheduler starts the copies)."""
    from opencsbs.db.models import Policy
    from opencsbs.service import replication as svc

    runtime = ctx.runtime()
    try:
        with runtime.sessions() as session:
            policy = session.get(Policy, policy_id)
            project_id = policy.project_id if policy is not None else ""
        with csbs_errors():
            echo_json({"rule": svc.add_rule(runtime, project_id, policy_id, replica)})
    finally:
        runtime.close()


@rule.command("list")
@pass_ctx
def rule_list(ctx: Ctx) -> None:
    """The rules with their lag: backups not yet copied, last success, bytes sent."""
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
    """Start the copies the rules call for now (what the scheduler does on each pass) and print how many."""
    from opencsbs.service import replication as svc

    runtime = ctx.runtime()
    try:
        echo_json({"started": svc.enqueue_due_copies(runtime)})
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
