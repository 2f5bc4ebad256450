"""Garbage collection during backups, end to end: ``bank gc`` runs in a loop while backups reuse the chunks of
backups just deleted (docs/bank.md "Garbage collection"). Every backup must end ``available`` and restore
byte-exact; none may fail with "object not found in the bank"."""

from __future__ import annotations

import hashlib
import os
import threading
import time

import httpx
from engine_helpers import DB1, DB1_SYS, MIB, PROVIDER, WEB1, WEB1_DATA, WEB1_SYS, mapping_for, random_bytes, write

from opencsbs.clouds.sandbox.inventory import volume_file
from opencsbs.engine.worker import WorkerPool

#: wall-time budget of the rounds (seconds); the test stops starting rounds after it
BUDGET = 35.0
ROUNDS = 12
#: pause between two garbage collections (seconds): GC runs all the time, but leaves the workers some CPU
GC_PAUSE = 0.02
#: how long the GC's listing of the chunks takes (seconds), as on a slow S3 listing: it widens the window
#: between GC reading the leases and deleting, where a backup that starts meanwhile finds chunks about to go
SLOW_LISTING = 0.3
VOLUMES = {WEB1: (WEB1_SYS, WEB1_DATA), DB1: (DB1_SYS,)}
#: the test writes only below this offset of each 1 GiB disk; the rest stays zeros (and sparse)
WRITTEN = 40 * MIB


def digest(runtime, volume_id: str) -> str:
    """SHA-256 of the part of a disk the test writes, plus whether anything beyond it holds data."""
    path = volume_file(runtime.settings.volumes_dir, volume_id)
    with open(path, "rb") as fh:
        head = hashlib.sha256(fh.read(WRITTEN)).hexdigest()
        try:
            beyond = os.lseek(fh.fileno(), WRITTEN, os.SEEK_DATA) < os.fstat(fh.fileno()).st_size
        except OSError:  # ENXIO: no data after WRITTEN
            beyond = False
    return f"{head}{'+data' if beyond else ''}"


def _wait(http: httpx.Client, path: str, key: str, done: tuple[str, ...], timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = http.get(path).json()[key]
        if body["status"] in done:
            return body
        assert time.monotonic() < deadline, f"{path} still {body['status']}"
        time.sleep(0.05)


def test_gc_in_a_loop_never_breaks_backups_that_reuse_deleted_chunks(live_server, runtime, demo, make_token):
    runtime.settings.engine.poll_seconds = 0.02
    for server, volumes in VOLUMES.items():  # several chunks of data per disk, the same in every round
        for n, volume in enumerate(volumes):
            write(runtime, volume, 0, random_bytes(6 * 4 * MIB, hash(volume) % 1000 + n))
    http = httpx.Client(base_url=f"{live_server}/v1/demo", headers={"X-Auth-Token": make_token("demo", "member")},
                        timeout=30)
    pool = WorkerPool(runtime, 2).start()
    stop = threading.Event()
    gc_rounds: list[int] = []
    gc_errors: list[BaseException] = []

    def gc_loop() -> None:
        while not stop.is_set():
            try:
                report = runtime.bank.gc(grace_seconds=0)
                gc_rounds.append(report.deleted_chunks)
                stop.wait(GC_PAUSE)
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                gc_errors.append(exc)
                return

    store = runtime.bank.store
    plain_list = store.list

    def slow_list(prefix: str = "", *args, **kwargs):
        if prefix == "chunks/" and threading.current_thread().name == "gc-loop":
            time.sleep(SLOW_LISTING)
        return plain_list(prefix, *args, **kwargs)

    store.list = slow_list
    gc = threading.Thread(target=gc_loop, name="gc-loop", daemon=True)
    gc.start()
    made: list[dict] = []
    previous: list[dict] = []
    started = time.monotonic()
    try:
        for round_ in range(ROUNDS):
            if time.monotonic() - started > BUDGET:
                break
            # one disk changes a little each round: new chunks beside reused ones
            write(runtime, WEB1_SYS, 8 * 4 * MIB, random_bytes(MIB, 5000 + round_))
            expected = {v: digest(runtime, v) for vols in VOLUMES.values() for v in vols}
            # delete last round's backups, then at once back the same disks up again: the new backups find the
            # chunks the deletes just freed, while GC keeps sweeping
            for item in previous:
                r = http.delete(f"/providers/{PROVIDER}/checkpoints/{item['checkpoint_id']}")
                assert r.status_code == 200, r.text
            checkpoints = []
            for server in VOLUMES:
                r = http.post(f"/providers/{PROVIDER}/resources/{server}/action",
                              json={"protect": {"backup_name": f"r{round_}", "incremental": False}})
                assert r.status_code == 200, r.text
                checkpoints.append((server, r.json()["checkpoint"]["id"]))
            current = []
            print(f"r{round_} backups started {time.monotonic() - started:.1f}", flush=True)
            for server, checkpoint_id in checkpoints:
                item = _wait(http, f"/checkpoint_items/{checkpoint_id}", "checkpoint_item", ("available", "error"))
                assert item["status"] == "available", item["extend_info"]["fail_reason"]
                current.append(item)
            for item in previous:
                r = http.get(f"/checkpoint_items/{item['id']}")
                deadline = time.monotonic() + 60
                while r.status_code == 200 and time.monotonic() < deadline:
                    time.sleep(0.05)
                    r = http.get(f"/checkpoint_items/{item['id']}")
                assert r.status_code == 404, r.text
            print(f"r{round_} available {time.monotonic() - started:.1f}", flush=True)
            # every backup restores byte-exact (GC still running)
            for item in current:
                body = {"restore": {"provider_id": PROVIDER, "checkpoint_id": item["checkpoint_id"],
                                    "parameters": {"checkpoint_item_id": item["id"], "power_on": False,
                                                   "targets": {"server_id": item["resource_id"],
                                                               "volumes": mapping_for(item)}}}}
                r = http.post("/restores", json=body)
                assert r.status_code == 200, r.text
                rs = _wait(http, f"/restores/{r.json()['restore']['id']}", "restore", ("success", "error"))
                assert rs["status"] == "success", rs
            assert {v: digest(runtime, v) for vols in VOLUMES.values() for v in vols} == expected
            made.extend(current)
            previous = current
    finally:
        stop.set()
        gc.join(60)
        pool.stop()
        http.close()
    assert not gc_errors, gc_errors
    rounds = len(made) // len(VOLUMES)
    print(f"\n{rounds} rounds, {len(made)} backups, {len(gc_rounds)} GC runs, "
          f"{sum(gc_rounds)} chunks collected, {time.monotonic() - started:.1f} s")
    assert rounds >= 3 and len(gc_rounds) >= rounds
    assert sum(gc_rounds) > 0  # GC did free the deleted backups' unique chunks meanwhile
    assert runtime.bank.verify().ok
