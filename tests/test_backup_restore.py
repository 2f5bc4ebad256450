"""Backups and restores through HTTP that move real bytes: byte-exact, incremental, statuses and figures."""

from __future__ import annotations

from engine_helpers import (DB1, DB1_SYS, MIB, WEB1, WEB1_DATA, WEB1_SYS, digest, fill, item_of, protect,
                            restore, run_jobs, write, random_bytes)


def test_backup_then_restore_is_byte_exact(demo, runtime):
    client, headers = demo
    fill(runtime, WEB1_SYS, 1)
    fill(runtime, WEB1_DATA, 2, chunks=((7 * MIB + 5, 9 * MIB), (1023 * MIB, MIB)))
    before = {v: digest(runtime, v) for v in (WEB1_SYS, WEB1_DATA)}

    r = protect(client, headers, WEB1, backup_name="first", description="one")
    assert r.status_code == 200, r.text
    cp = r.json()["checkpoint"]
    assert cp["status"] == "protecting"
    assert cp["protection_plan"]["resources"][0]["id"] == WEB1
    item = item_of(client, headers, cp["id"])  # listed the moment the call returns
    assert item["status"] == "protecting" and item["name"] == "first"

    assert run_jobs(runtime) == 1
    item = item_of(client, headers, cp["id"])
    assert item["status"] == "available", item
    ext = item["extend_info"]
    assert ext["progress"] == 100 and ext["fail_reason"] == "" and ext["finished_at"]
    assert [v["source_volume_id"] for v in ext["volume_backups"]] == [WEB1_SYS, WEB1_DATA]
    assert all(v["status"] == "available" for v in ext["volume_backups"])
    assert ext["volume_backups"][0]["bootable"] is True
    assert ext["size"] > 0 and isinstance(ext["average_speed"], int)
    assert 0 <= ext["space_saving_ratio"] <= 100 and ext["space_saving_ratio"] > 90  # 1 GiB disks, few MB data
    assert ext["incremental"] is False  # the first backup is always full

    # change the data, restore, compare every byte
    write(runtime, WEB1_SYS, 0, random_bytes(2 * MIB, 99))
    write(runtime, WEB1_DATA, 512 * MIB, random_bytes(MIB, 98))
    assert digest(runtime, WEB1_SYS) != before[WEB1_SYS]
    r = restore(client, headers, item, WEB1, power_on=True)
    assert r.status_code == 200, r.text
    rs = r.json()["restore"]
    assert rs["status"] == "in_progress"
    assert item_of(client, headers, cp["id"])["status"] == "waiting_restore"
    assert run_jobs(runtime) == 1
    assert {v: digest(runtime, v) for v in (WEB1_SYS, WEB1_DATA)} == before
    r = client.get(f"/v1/demo/restores/{rs['id']}", headers=headers)
    assert r.json()["restore"]["status"] == "success"
    assert item_of(client, headers, cp["id"])["status"] == "available"


def test_incremental_backup_stores_little_and_restores_both_points(demo, runtime):
    client, headers = demo
    fill(runtime, DB1_SYS, 3, chunks=((0, 40 * MIB),))
    first = protect(client, headers, DB1).json()["checkpoint"]
    run_jobs(runtime)
    one = item_of(client, headers, first["id"])
    state1 = digest(runtime, DB1_SYS)
    write(runtime, DB1_SYS, 10 * MIB, random_bytes(MIB, 7))
    state2 = digest(runtime, DB1_SYS)
    second = protect(client, headers, DB1, incremental=True).json()["checkpoint"]
    run_jobs(runtime)
    two = item_of(client, headers, second["id"])
    assert two["status"] == "available" and two["extend_info"]["incremental"] is True
    assert one["extend_info"]["size"] >= 40
    assert two["extend_info"]["size"] <= 5  # MB: only the changed chunk is new
    assert two["name"].startswith("manualbk_") and len(two["name"]) == len("manualbk_xxxx")

    # both restore points are complete
    assert restore(client, headers, one, DB1).status_code == 200
    run_jobs(runtime)
    assert digest(runtime, DB1_SYS) == state1
    assert restore(client, headers, two, DB1).status_code == 200
    run_jobs(runtime)
    assert digest(runtime, DB1_SYS) == state2
