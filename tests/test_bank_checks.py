"""The bank's garbage collection and whole-bank verify on a schedule (``engine.gc_schedule``,
``engine.verify_schedule``): due slots run once, each result is one log line with its figures, and the result
stays visible (``opencsbs bank status``, ``/metrics``) to every process sharing the bank."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import pytest
from click.testing import CliRunner

from engine_helpers import fill, item_of, protect, run_jobs
from opencsbs.cli import main
from opencsbs.core.timeutil import utcnow

WEB1 = "6507cb66-90dc-4a12-a573-c9f3398f899d"
WEB1_SYS = "0a6c4e58-3a4b-4bde-9a0b-5d7d0f8e0a01"


def _tomorrow_at(hour: int, minute: int, second: int = 5):
    return (utcnow() + timedelta(days=1)).replace(hour=hour, minute=minute, second=second, microsecond=0)


def _engine_lines(caplog) -> list[str]:
    return [f"{r.levelname} {r.getMessage()}" for r in caplog.records if r.name == "opencsbs.engine"]


def test_scheduled_gc_and_verify_run_once_per_slot_and_log_their_figures(demo, runtime, settings, caplog):
    from opencsbs.bootstrap import make_scheduler
    from opencsbs.engine.bank_checks import scheduled_gc, scheduled_verify
    from opencsbs.service.maintenance import bank_status

    client, headers = demo
    fill(runtime, WEB1_SYS, seed=7)
    cp = protect(client, headers, WEB1).json()["checkpoint"]
    run_jobs(runtime)
    assert item_of(client, headers, cp["id"])["status"] == "available"
    settings.engine.gc_schedule = "FREQ=DAILY;BYHOUR=3;BYMINUTE=0"
    settings.engine.verify_schedule = "RRULE:FREQ=WEEKLY;BYDAY=SU,WE;BYHOUR=4;BYMINUTE=30"

    with caplog.at_level(logging.INFO, logger="opencsbs.engine"):
        # never ran: the latest slot is due now, once
        assert scheduled_gc(runtime) is not None
        assert scheduled_gc(runtime) is None
        report = scheduled_verify(runtime)
        assert report is not None and report.ok and report.chunks_checked > 0
        assert scheduled_verify(runtime) is None
    lines = _engine_lines(caplog)
    assert any(line.startswith("INFO bank gc: slot ") and "fired (gc_schedule FREQ=DAILY;BYHOUR=3;BYMINUTE=0)"
               in line for line in lines)
    assert any(line.startswith("INFO bank gc: 0 chunks (0 bytes) freed") for line in lines)
    assert f"INFO bank verify: ok: {report.indexes_checked} indexes and {report.chunks_checked} chunks " \
           f"({report.bytes_checked} bytes) checked in {report.seconds:.1f} s" in lines

    status = bank_status(runtime)
    assert status["verify"]["last"]["ok"] is True
    assert status["verify"]["last"]["chunks_checked"] == report.chunks_checked
    assert status["gc"]["last"]["skipped_reason"] is None and status["gc"]["interval_seconds"] is None
    assert status["gc"]["next_slot"].endswith("T03:00:00.000000")
    assert status["verify"]["next_slot"].endswith("T04:30:00.000000")

    # a chunk damaged on disk: the next verify slot finds it, says so in one WARNING line, and the status and
    # the metrics show it
    chunk = next(p for p in (settings.data_dir / "bank" / "chunks").rglob("*") if p.is_file())
    data = bytearray(chunk.read_bytes())
    data[-1] ^= 0xFF
    chunk.write_bytes(bytes(data))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="opencsbs.engine"):
        scheduler = make_scheduler(runtime, clock=lambda: _tomorrow_at(4, 31) + timedelta(days=7))
        scheduler.tick()  # the GC slot of that day runs in the pass; the verify in a thread of its own
        import threading

        for thread in threading.enumerate():
            if thread.name == "bank-verify":
                thread.join(60)
    lines = _engine_lines(caplog)
    assert any("INFO bank gc: slot " in line for line in lines), lines
    damaged = [line for line in lines if line.startswith("WARNING bank verify: damaged: ")]
    assert len(damaged) == 1 and "1 damaged chunks" in damaged[0], lines
    assert bank_status(runtime)["verify"]["last"]["damaged_chunks"] == 1
    metrics = client.get("/metrics").text
    assert "opencsbs_bank_verify_last_problems 1.0" in metrics
    assert "opencsbs_bank_gc_last_end_timestamp_seconds " in metrics

    base = ["--data-dir", str(settings.data_dir), "--database-url", settings.db_url]
    shown = CliRunner(env={"OPENCSBS_ENGINE__VERIFY_SCHEDULE": "FREQ=DAILY;BYHOUR=4;BYMINUTE=30"}).invoke(
        main, [*base, "bank", "status"])
    assert shown.exit_code == 0, shown.output
    assert "verify last" in shown.stdout and "DAMAGED" in shown.stdout and "1 damaged chunks" in shown.stdout
    as_json = json.loads(CliRunner().invoke(main, [*base, "bank", "status", "--json"]).stdout)
    assert as_json["verify"]["last"]["ok"] is False


def test_a_schedule_that_is_not_one_is_refused_at_start(settings):
    base = ["--data-dir", str(settings.data_dir), "--database-url", settings.db_url]
    bad = CliRunner(env={"OPENCSBS_ENGINE__GC_SCHEDULE": "FREQ=HOURLY"}).invoke(main, [*base, "scheduler"])
    assert bad.exit_code == 2
    assert bad.output.strip() == ("Error: invalid settings: engine.gc_schedule: RRULE FREQ must be DAILY or WEEKLY "
                                  "(e.g. FREQ=DAILY;BYHOUR=3;BYMINUTE=0)")


@pytest.mark.parametrize("pattern, setting, why", [
    ("FREQ=HOURLY", "gc_schedule", "RRULE FREQ must be DAILY or WEEKLY"),
    ("RRULE:FREQ=DAILY;BYHOUR=25", "verify_schedule", "RRULE BYHOUR values must be integers 0..23"),
    ("BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n", "verify_schedule", "must hold exactly one VEVENT"),
])
def test_a_bad_schedule_pattern_is_named_by_its_setting(pattern, setting, why):
    from opencsbs.engine.bank_checks import bank_schedule

    with pytest.raises(ValueError) as err:
        bank_schedule(pattern, setting)
    assert str(err.value) == f"engine.{setting}: {why} (e.g. FREQ=DAILY;BYHOUR=3;BYMINUTE=0)"
