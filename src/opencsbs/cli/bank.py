"""``opencsbs bank verify``, ``bank gc``, ``bank status`` and ``bank retain``: inspect and maintain where backup
data lives."""

from __future__ import annotations

import json
import sys

import click

from opencsbs.cli._common import ConfigExit, Ctx, pass_ctx
from opencsbs.cli.output import Column, chosen_format, emit, human_bytes, human_duration, human_time, output_options


@click.group()
def bank() -> None:
    """Inspect and maintain the bank (where backup data lives)."""


def _open_bank_or_exit(ctx: Ctx):
    """The bank of the settings; one that cannot be opened exits 1 with its reason (``Error: ...`` on stderr)."""
    from opencsbs.bank import BankError, open_bank

    settings = ctx.settings()
    try:
        return open_bank(settings)
    except BankError as exc:
        raise click.ClickException(str(exc)) from exc


def _affected_backups(ctx: Ctx, index_names: list[str]) -> list[dict]:
    """The backups that need the damaged or missing data (service ``verify.backups_of_indexes``); a database that
    cannot be read gives an empty list and a note on stderr (the bank report stands on its own)."""
    from opencsbs.service.verify import backups_of_indexes

    try:
        runtime = ctx.runtime()
    except Exception as exc:  # noqa: BLE001 - the bank's report is still worth printing
        click.echo(f"note: affected backups not named (database: {exc})", err=True)
        return []
    try:
        return backups_of_indexes(runtime, index_names)
    finally:
        runtime.close()


@bank.command("verify")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
@click.option("--progress/--no-progress", default=None, help="progress bar (default: on a terminal)")
@pass_ctx
def bank_verify(ctx: Ctx, as_json: bool, progress: bool | None) -> None:
    """Re-read every index and every chunk of the bank and report damage and the backups that need the damaged
    or missing data (exit code 1 on damage). It records nothing: ``opencsbs verify run`` marks the backups."""
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
    affected = _affected_backups(ctx, report.affected_indexes()) if not report.ok else []
    if as_json:
        click.echo(json.dumps({**asdict(report), "ok": report.ok, "affected_backups": affected}, indent=2))
    else:
        click.echo(f"bank {the_bank.store.location}: {report.indexes_checked} indexes, "
                   f"{report.chunks_checked} chunks ({human_bytes(report.bytes_checked)}) checked "
                   f"in {human_duration(report.seconds)}; {report.unreferenced_chunks} unreferenced chunks")
        for name, reason in report.damaged_indexes:
            click.echo(f"damaged index {name}: {reason}")
        for key, reason in report.damaged_chunks:
            click.echo(f"damaged chunk {key}: {reason}")
        for addr, names in report.missing_chunks:
            click.echo(f"missing chunk {addr} (referenced by {', '.join(names)})")
        for entry in affected:
            if entry["checkpoint_item_id"] is None:
                click.echo(f"index {entry['indexes'][0]} belongs to no backup (left for GC)")
            else:
                click.echo(f"affected backup {entry['checkpoint_item_id']} (project {entry['project_id']}, server "
                           f"{entry['resource_name'] or entry['resource_id']}, {entry['status']})")
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
                   f"deleted {report.deleted_chunks} chunks ({human_bytes(report.freed_bytes)}); "
                   f"kept {report.kept_recent} recent unreferenced chunks "
                   f"({human_bytes(report.reclaimable_bytes)} reclaimable after the grace period); "
                   f"{report.in_flight_backups} backups in flight, {report.stale_leases} stale leases and "
                   f"{report.stale_gc_markers} stale GC markers removed; "
                   f"{report.seconds:.1f} s")
        if report.retained_chunks or report.pruned_versions:
            click.echo(f"object lock: {report.retained_chunks} unreferenced chunks kept by their retention (hidden), "
                       f"{report.pruned_versions} old versions removed ({human_bytes(report.pruned_bytes)})")
        for err in report.errors:
            click.echo(f"error: {err}")
        if report.skipped_reason:
            click.echo(f"sweep skipped: {report.skipped_reason}")
    sys.exit(1 if report.skipped_reason else 0)


@bank.command("retain")
@click.option("--project", "project_id", default=None, help="only this project's backups (default: every project "
              "with a retention lock)")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
@pass_ctx
def bank_retain(ctx: Ctx, project_id: str | None, as_json: bool) -> None:
    """Give the backups under retention locks the storage's own retention (S3 Object Lock, bank.s3_object_lock):
    for backups written before their lock was set or made longer."""
    from dataclasses import asdict

    from opencsbs.service.storage_retention import apply_storage_retention

    runtime = ctx.runtime()
    try:
        report = apply_storage_retention(runtime, project_id)
        location = runtime.bank.store.location
    finally:
        runtime.close()
    if not report.enforced:
        raise ConfigExit(f"the bank {location} does not enforce retention (bank.s3_object_lock is off)")
    if as_json:
        click.echo(json.dumps(asdict(report), indent=2))
    else:
        click.echo(f"bank {location}: {report.backups} backups under retention locks, the retention of "
                   f"{report.objects} objects checked or extended")
        for item_id, (mode, until) in sorted(report.retained.items()):
            click.echo(f"backup {item_id}: {mode} until {until}")
        for err in report.errors:
            click.echo(f"error: {err}")
    sys.exit(1 if report.errors else 0)


def _last_gc(last: dict | None) -> str:
    if last is None:
        return "never"
    if last.get("skipped_reason"):
        return f"{human_time(last['ended_at'])}: sweep skipped: {last['skipped_reason']}"
    return (f"{human_time(last['ended_at'])}: {last.get('deleted_chunks', 0)} chunks "
            f"({human_bytes(last.get('freed_bytes'))}) freed, {human_bytes(last.get('reclaimable_bytes'))} "
            "reclaimable after the grace period")


def _last_verify(last: dict | None) -> str:
    if last is None:
        return "never"
    figures = (f"{last.get('indexes_checked', 0)} indexes, {last.get('chunks_checked', 0)} chunks "
               f"({human_bytes(last.get('bytes_checked'))}) in {human_duration(last.get('seconds'))}")
    if last.get("ok"):
        return f"{human_time(last['ended_at'])}: ok: {figures}"
    return (f"{human_time(last['ended_at'])}: DAMAGED: {figures}; {last.get('damaged_indexes', 0)} damaged "
            f"indexes, {last.get('damaged_chunks', 0)} damaged chunks, {last.get('missing_chunks', 0)} missing "
            "chunks (opencsbs bank verify names the backups)")


STATUS_FIELDS = [
    Column("gc schedule", lambda s: s["gc"]["schedule"] or (
        f"every {human_duration(s['gc']['interval_seconds'])} (engine.gc_interval_seconds)"
        if s["gc"]["interval_seconds"] else "off (only opencsbs bank gc)")),
    Column("gc next", lambda s: human_time(s["gc"]["next_slot"])),
    Column("gc last", lambda s: _last_gc(s["gc"]["last"])),
    Column("verify schedule", lambda s: s["verify"]["schedule"] or "off (engine.verify_schedule)"),
    Column("verify next", lambda s: human_time(s["verify"]["next_slot"])),
    Column("verify last", lambda s: _last_verify(s["verify"]["last"])),
]


@bank.command("status")
@output_options
@pass_ctx
def bank_status(ctx: Ctx, fmt, as_json, columns) -> None:
    """When the bank's garbage collection and verify last ended (by the service's schedule or by hand), what
    they found, and when the next scheduled ones are due (engine.gc_schedule, engine.verify_schedule)."""
    from opencsbs.service.maintenance import bank_status as status

    runtime = ctx.runtime()
    try:
        body = status(runtime)
    finally:
        runtime.close()
    emit(body, STATUS_FIELDS, chosen_format(fmt, as_json), columns)
