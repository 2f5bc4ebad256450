"""S3 Object Lock on the bank (``bank.s3_object_lock``, docs/bank.md), against the Ceph RADOS Gateway, a server
that enforces it (``scripts/services/ceph.sh rgw``: OPENCSBS_TEST_RGW_*).

Each test fails without the guarantee it names: the objects of a backup under a compliance lock carry a
COMPLIANCE retention until the lock's end, and the RADOS Gateway itself refuses to delete them to the bank's own
credentials; such a backup survives every delete made directly on S3 and restores byte-exact; backups, the
chunk renewal backups do, and the bank's GC keep working on a bucket with Object Lock; ``opencsbs bank retain``
gives a backup written before its lock the retention.
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from conftest import require_component
from engine_helpers import (DB1, DB1_SYS, MIB, WEB1, WEB1_SYS, digest, item_of, protect, random_bytes, restore,
                            run_jobs, write)

RGW = os.environ.get("OPENCSBS_TEST_RGW_ENDPOINT")
LOCKS = "/opencsbs/v1/demo/locks"


@pytest.fixture
def settings(settings):
    """The test's settings with the bank on a new Object Lock bucket of the RADOS Gateway."""
    require_component(bool(RGW), "no RADOS Gateway (scripts/services/ceph.sh rgw; OPENCSBS_TEST_RGW_ENDPOINT)")
    settings.bank.backend = "s3"
    settings.bank.s3_endpoint = RGW
    settings.bank.s3_bucket = f"olock-{uuid.uuid4().hex[:16]}"
    settings.bank.s3_access_key = os.environ["OPENCSBS_TEST_RGW_ACCESS_KEY"]
    settings.bank.s3_secret_key = os.environ["OPENCSBS_TEST_RGW_SECRET_KEY"]
    settings.bank.s3_object_lock = True
    return settings


@pytest.fixture
def s3(runtime):
    """A boto3 client with the bank's own credentials (what a stolen bank key would give); the bank (and its
    bucket) opened."""
    import boto3
    from botocore.config import Config

    assert runtime.bank.store.enforces_retention
    b = runtime.settings.bank
    return boto3.client("s3", endpoint_url=b.s3_endpoint, aws_access_key_id=b.s3_access_key,
                        aws_secret_access_key=b.s3_secret_key, region_name="us-east-1",
                        config=Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required",
                                      response_checksum_validation="when_required"))


@pytest.fixture
def admin(make_token):
    return {"X-Auth-Token": make_token("demo", "admin")}


def _backup(client, headers, server: str = DB1) -> dict:
    r = protect(client, headers, server)
    assert r.status_code == 200, r.text
    run_jobs(client.app.state.runtime)
    item = item_of(client, headers, r.json()["checkpoint"]["id"])
    assert item["status"] == "available", item
    return item


def _lock(client, admin, mode: str, days: int = 1) -> dict:
    r = client.post(LOCKS, json={"lock": {"mode": mode, "min_retention_days": days, "cooling_off_hours": 0}},
                    headers=admin)
    assert r.status_code == 200, r.text
    return r.json()["lock"]


def _keys(s3, bucket: str, prefix: str) -> list[dict]:
    """Every object version under ``prefix``."""
    out = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        out += page.get("Versions", []) or []
    return out


def _index_key(item: dict) -> str:
    return f"indexes/checkpoints/{item['checkpoint_id']}/{item['extend_info']['volume_backups'][0]['id']}.idx"


def test_the_gateway_refuses_to_delete_a_locked_backups_objects(demo, admin, runtime, s3):
    from botocore.exceptions import ClientError

    client, member = demo
    bucket = runtime.settings.bank.s3_bucket
    conf = s3.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]
    assert conf["ObjectLockEnabled"] == "Enabled"
    write(runtime, DB1_SYS, 0, random_bytes(3 * MIB, 91))
    write(runtime, DB1_SYS, 64 * MIB, random_bytes(MIB, 191))
    _lock(client, admin, "compliance", days=1)
    item = _backup(client, member)
    created = datetime.fromisoformat(item["created_at"]).replace(tzinfo=UTC)
    chunks = _keys(s3, bucket, "chunks/")
    assert len(chunks) >= 2
    for obj in chunks + _keys(s3, bucket, _index_key(item)):
        head = s3.head_object(Bucket=bucket, Key=obj["Key"], VersionId=obj["VersionId"])
        assert head["ObjectLockMode"] == "COMPLIANCE", obj["Key"]
        assert abs(head["ObjectLockRetainUntilDate"] - (created + timedelta(days=1))) < timedelta(seconds=5)
    # the storage itself refuses, to the bank's own credentials, with or without the governance bypass
    for obj in (chunks[0], _keys(s3, bucket, _index_key(item))[0]):
        for bypass in (False, True):
            with pytest.raises(ClientError) as exc:
                s3.delete_object(Bucket=bucket, Key=obj["Key"], VersionId=obj["VersionId"],
                                 BypassGovernanceRetention=bypass)
            assert exc.value.response["Error"]["Code"] == "AccessDenied"
        with pytest.raises(ClientError) as exc:  # nor may the retention be shortened
            s3.put_object_retention(Bucket=bucket, Key=obj["Key"], VersionId=obj["VersionId"],
                                    Retention={"Mode": "COMPLIANCE",
                                               "RetainUntilDate": datetime.now(UTC) + timedelta(minutes=1)})
        assert exc.value.response["Error"]["Code"] == "AccessDenied"


def test_a_compliance_backup_survives_deleting_its_objects_directly_on_s3(demo, admin, runtime, s3):
    from botocore.exceptions import ClientError

    client, member = demo
    bucket = runtime.settings.bank.s3_bucket
    write(runtime, DB1_SYS, 0, random_bytes(4 * MIB, 92))
    write(runtime, DB1_SYS, 64 * MIB, random_bytes(MIB, 192))
    _lock(client, admin, "compliance", days=1)
    item = _backup(client, member)
    want = digest(runtime, DB1_SYS)
    refused = 0
    for obj in _keys(s3, bucket, "chunks/") + _keys(s3, bucket, "indexes/"):
        s3.delete_object(Bucket=bucket, Key=obj["Key"])  # a delete marker hides it
        try:
            s3.delete_object(Bucket=bucket, Key=obj["Key"], VersionId=obj["VersionId"])
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "AccessDenied"
            refused += 1
    assert refused >= 3  # two chunks and an index at least
    assert s3.list_objects_v2(Bucket=bucket, Prefix="chunks/").get("KeyCount") == 0  # all hidden
    # the bank's GC finds no chunk to sweep, the backup's indexes and chunks are still read
    assert runtime.bank.gc(grace_seconds=0).skipped_reason is None
    write(runtime, DB1_SYS, 0, random_bytes(4 * MIB, 93))
    assert digest(runtime, DB1_SYS) != want
    r = restore(client, member, item, DB1)
    assert r.status_code == 200, r.text
    run_jobs(runtime)
    assert digest(runtime, DB1_SYS) == want


def test_backups_renewal_and_gc_work_on_an_object_lock_bucket(demo, admin, runtime, s3, monkeypatch):
    client, member = demo
    store = runtime.bank.store
    bucket = runtime.settings.bank.s3_bucket
    # no lock: a backup, deleted, and the GC frees its chunks for real (every version)
    write(runtime, DB1_SYS, 0, random_bytes(2 * MIB, 94))
    write(runtime, DB1_SYS, 64 * MIB, random_bytes(MIB, 194))
    first = _backup(client, member)
    assert client.delete(f"/v1/demo/providers/fc4d5750-22e7-4798-8a46-f48f62c4c1da/checkpoints/"
                         f"{first['checkpoint_id']}", headers=member).status_code == 200
    run_jobs(runtime)
    time.sleep(1.1)  # S3 times are in seconds: the chunks must be older than the GC's cutoff
    report = runtime.bank.gc(grace_seconds=0)
    assert report.deleted_chunks >= 2 and report.retained_chunks == 0, report
    assert _keys(s3, bucket, "chunks/") == []
    # a governance lock: the next backup's objects are retained
    _lock(client, admin, "governance", days=1)
    write(runtime, DB1_SYS, 0, random_bytes(2 * MIB, 95))
    write(runtime, DB1_SYS, 64 * MIB, random_bytes(MIB, 195))
    item = _backup(client, member)
    before = {o["Key"]: o for o in _keys(s3, bucket, "chunks/")}
    assert before and all(s3.head_object(Bucket=bucket, Key=k)["ObjectLockMode"] == "GOVERNANCE" for k in before)
    # renewal: a backup reusing chunks renews them (made to do it at once); the renewed version keeps the retention,
    # the old one is kept by the storage until its retention ends, and restores/verification still read them
    import opencsbs.bank.bank as bank_module

    monkeypatch.setattr(bank_module, "TOUCH_AGE", -3600.0)
    time.sleep(1.1)
    write(runtime, WEB1_SYS, 0, random_bytes(2 * MIB, 95))  # the same bytes on another server: found, renewed
    write(runtime, WEB1_SYS, 64 * MIB, random_bytes(MIB, 195))
    again = _backup(client, member, WEB1)
    for key, old in before.items():
        head = s3.head_object(Bucket=bucket, Key=key)
        assert head["VersionId"] != old["VersionId"], key  # renewed: a new version
        assert head["LastModified"] > old["LastModified"]
        assert head["ObjectLockMode"] == "GOVERNANCE"
        assert head["ObjectLockRetainUntilDate"] >= s3.head_object(
            Bucket=bucket, Key=key, VersionId=old["VersionId"])["ObjectLockRetainUntilDate"]
    assert len(_keys(s3, bucket, "chunks/")) == 2 * len(before)
    # GC with both backups kept: nothing swept, the old versions stay (their retention is in force)
    report = runtime.bank.gc(grace_seconds=0)
    assert report.skipped_reason is None and report.deleted_chunks == 0 and report.pruned_versions == 0, report
    assert len(_keys(s3, bucket, "chunks/")) == 2 * len(before)
    # an unreferenced chunk under retention: the GC hides it, the storage keeps its data, the report says so
    store.put("chunks/ff/" + "ff" * 32, b"orphan")
    assert store.retain("chunks/ff/" + "ff" * 32, "GOVERNANCE", datetime.now(UTC) + timedelta(days=1))
    time.sleep(1.1)
    report = runtime.bank.gc(grace_seconds=0)
    assert report.retained_chunks == 1 and report.deleted_chunks == 0, report
    assert store.head("chunks/ff/" + "ff" * 32) is None
    assert [o["Key"] for o in _keys(s3, bucket, "chunks/ff/")] == ["chunks/ff/" + "ff" * 32]
    for it in (item, again):  # both backups still whole
        assert sum(runtime.bank.check_volume(f"checkpoints/{it['checkpoint_id']}/{vb['id']}")
                   for vb in it["extend_info"]["volume_backups"]) == len(before)


def test_bank_retain_gives_backups_written_before_their_lock_the_storages_retention(demo, admin, runtime, s3,
                                                                                   settings, monkeypatch):
    """``opencsbs bank retain``: a backup written with no lock has no retention; after a compliance lock is set,
    the command gives its objects COMPLIANCE until the lock's end, and the gateway then refuses their deletion."""
    from botocore.exceptions import ClientError
    from click.testing import CliRunner

    from opencsbs.cli import main

    client, member = demo
    bucket = settings.bank.s3_bucket
    write(runtime, DB1_SYS, 0, random_bytes(2 * MIB, 96))
    item = _backup(client, member)
    objects = _keys(s3, bucket, "chunks/") + _keys(s3, bucket, _index_key(item))
    assert objects and all("ObjectLockMode" not in s3.head_object(Bucket=bucket, Key=o["Key"]) for o in objects)
    _lock(client, admin, "compliance", days=2)
    b = settings.bank
    for key, value in (("BACKEND", "s3"), ("S3_ENDPOINT", b.s3_endpoint), ("S3_BUCKET", bucket),
                       ("S3_ACCESS_KEY", b.s3_access_key), ("S3_SECRET_KEY", b.s3_secret_key),
                       ("S3_OBJECT_LOCK", "true")):
        monkeypatch.setenv(f"OPENCSBS_BANK__{key}", value)
    state = ["--data-dir", str(settings.data_dir), "--database-url", settings.db_url]
    result = CliRunner().invoke(main, state + ["bank", "retain", "--project", "demo"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "1 backups under retention locks" in result.output and f"backup {item['id']}: COMPLIANCE until " \
        in result.output, result.output
    created = datetime.fromisoformat(item["created_at"]).replace(tzinfo=UTC)
    for obj in objects:
        head = s3.head_object(Bucket=bucket, Key=obj["Key"])
        assert head["ObjectLockMode"] == "COMPLIANCE"
        assert abs(head["ObjectLockRetainUntilDate"] - (created + timedelta(days=2))) < timedelta(seconds=5)
        with pytest.raises(ClientError) as exc:
            s3.delete_object(Bucket=bucket, Key=obj["Key"], VersionId=obj["VersionId"])
        assert exc.value.response["Error"]["Code"] == "AccessDenied"
    # a bank without Object Lock: the command says so (exit 2)
    monkeypatch.setenv("OPENCSBS_BANK__S3_OBJECT_LOCK", "false")
    result = CliRunner().invoke(main, state + ["bank", "retain"], catch_exceptions=False)
    assert result.exit_code == 2 and "does not enforce retention" in result.output, result.output


def test_housekeeping_gives_the_storages_retention_once_a_lock_is_set_or_changed(demo, admin, runtime, s3):
    """The scheduler's housekeeping pass applies a new lock to the backups written before it, then leaves the
    projects whose locks did not change alone."""
    from opencsbs.engine.housekeeping import housekeep

    client, member = demo
    bucket = runtime.settings.bank.s3_bucket
    write(runtime, DB1_SYS, 0, random_bytes(2 * MIB, 97))
    item = _backup(client, member)
    first = housekeep(runtime).retained
    assert (first.enforced, first.backups) == (True, 0)  # no lock yet
    lock = _lock(client, admin, "governance", days=3)
    second = housekeep(runtime).retained
    assert second.backups == 1 and second.retained[item["id"]][0] == "GOVERNANCE", second
    created = datetime.fromisoformat(item["created_at"]).replace(tzinfo=UTC)
    for obj in _keys(s3, bucket, "chunks/") + _keys(s3, bucket, _index_key(item)):
        head = s3.head_object(Bucket=bucket, Key=obj["Key"])
        assert head["ObjectLockMode"] == "GOVERNANCE"
        assert abs(head["ObjectLockRetainUntilDate"] - (created + timedelta(days=3))) < timedelta(seconds=5)
    assert housekeep(runtime).retained.backups == 0  # nothing changed since
    # a lock made longer is applied on the next pass
    r = client.put(f"{LOCKS}/{lock['id']}", json={"lock": {"min_retention_days": 5}}, headers=admin)
    assert r.status_code == 200, r.text
    assert housekeep(runtime).retained.backups == 1
    head = s3.head_object(Bucket=bucket, Key=_index_key(item))
    assert abs(head["ObjectLockRetainUntilDate"] - (created + timedelta(days=5))) < timedelta(seconds=5)
