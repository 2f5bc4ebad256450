"""opencsbs over several hosts: network namespaces made by the suite (tests/topology.py), PostgreSQL and the S3
bank on host "db", ``opencsbs serve`` (sandbox) on "api1" and "api2", sandbox workers on "w1" and "w2" (they
declare they serve the shared sandbox files), the libvirt worker of KVM host "w3" (the suite's libvirtd) with a
libvirt ``serve`` on "api2", and ``opencsbs scheduler`` replicas on "w1" and "w2". Every process talks to the others
over its host's own address.

- a worker host SIGKILLed in the middle of a backup: the job is taken over by a worker of another host after the
  lease has expired and within the bound the engine settings give (:func:`takeover_bound`), and ends ``available``;
- a worker host whose link is cut in the middle of a backup: the same, and once its link is back the cut worker
  cannot overwrite the new owner's work (fenced step commits);
- nothing is lost: both backups restore byte-exact through the other API host;
- the two scheduler replicas, one of them killed and the other cut meanwhile, fire every due slot exactly once;
- 200 concurrent clients, round-robin over both API hosts (check_protectable batches, list calls): no error;
- placement: a libvirt backup runs on its KVM host only; that host killed, the live sandbox workers leave the job
  alone and it says why it waits; the host back, the job ends there and restores byte-exact.

The topology is made once for the module (about 30 s; the module about 3 minutes); the module runs in the first
database pass only (it brings its own PostgreSQL cluster, whatever ``OPENCSBS_TEST_DB`` says).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import Counter
from datetime import datetime, timedelta

import httpx
import pytest
from sqlalchemy import select, update

from conftest import EXAMPLE_INVENTORY, require_component
from engine_helpers import DB1, DB1_SYS, MIB, WEB1, WEB1_DATA, WEB1_SYS, digest, item_of, protect, random_bytes, \
    restore, write
from opencsbs.config import EngineSettings
from opencsbs.core.timeutil import utcnow
from opencsbs.db.models import CheckpointItem, Job, PolicyRun, ScheduledOperation, WorkerSeen
from policy_helpers import body
from libvirt_helpers import DISK_DIR, URI, libvirt_available
from topology import Deployment, deploy, netns_available

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.s3]

#: the sandbox's worker hosts, and the name of the host its (shared) volume files are on
SANDBOX_HOSTS = ["w1", "w2"]
SANDBOX_FILES = "files"
#: the KVM host: the suite's libvirtd (root namespace, reached through its unix socket) and a libvirt worker
KVM_HOST = "w3"
LIBVIRT_PORT = 8800

#: the engine settings of every process of the topology
#: read_limit_mib_s: a 48 MiB backup then copies for about 4 s, so the tests catch it mid-copy on any machine
ENGINE = {"lease_seconds": 3.0, "poll_seconds": 0.25, "progress_seconds": 0.2, "max_attempts": 5,
          "read_limit_mib_s": 12.0}
#: time for a claim to be seen once the lease has expired and a worker has polled: one claim transaction and
#: this test's own read, on a 2-core machine shared with other work
CLAIM_SLACK = 3.0
#: scheduled slots made due one after the other while the module runs (one per policy, at most the quota of 32)
SLOTS = 24


def takeover_bound(engine: EngineSettings) -> float:
    """Seconds from the death (or isolation) of a job's worker to another worker's claim of it: the dead worker
    renewed its lease at most ``lease_seconds`` before, an idle worker polls every ``poll_seconds``."""
    return engine.lease_seconds + engine.poll_seconds + CLAIM_SLACK


class World:
    """What the module's tests share: the deployment, a client per API host, checkpoints and their digests."""

    def __init__(self, dep: Deployment):
        self.dep = dep
        self.headers = {"X-Auth-Token": dep.token("demo")}
        self.apis = [httpx.Client(base_url=u, timeout=60) for u in dep.api_urls]
        self.expected: dict[str, dict[str, str]] = {}  # checkpoint id -> volume -> sha256 at backup time
        self.anchored: dict[str, datetime] = {}  # scheduled operation id -> its one due slot
        self.engine = EngineSettings(**dep.settings["engine"])
        self.libvirt_ok, self.libvirt_why, self.kvm = False, "", None

    def start_sandbox_worker(self, host: str) -> None:
        """A sandbox worker on ``host`` that serves the shared volume files (it declares so)."""
        self.dep.start_worker(host, "--host", host, "--capability", "driver:sandbox",
                              "--capability", f"sandbox:{SANDBOX_FILES}")

    def worker_count(self) -> int:
        return len(SANDBOX_HOSTS) + (1 if self.kvm is not None else 0)

    def job(self, kind: str, target_id: str) -> Job | None:
        with self.dep.runtime.sessions() as session:
            return session.scalars(select(Job).where(Job.kind == kind, Job.target_id == target_id)).one_or_none()

    def owner_host(self, job: Job) -> str | None:
        try:
            pid = int(job.owner.split(":")[1])
        except (AttributeError, IndexError, ValueError):
            return None
        return self.dep.topo.host_of_pid(pid)

    def wait_job(self, kind: str, target_id: str, until, timeout: float = 120, what: str = "") -> Job:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(kind, target_id)
            if job is not None and until(job):
                return job
            time.sleep(0.05)
        raise AssertionError(f"{kind} job of {target_id}: {what or 'condition'} not met in {timeout} s; "
                             f"last {job and (job.status, job.step, job.owner, job.attempts)}; processes "
                             f"{ {h.name: [p.pid for p in h.procs] for h in self.dep.topo.hosts.values()} }\n"
                             + self.dep.topo.log_tail())

    def wait_workers(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.dep.runtime.sessions() as session:
                seen = session.scalars(select(WorkerSeen).where(
                    WorkerSeen.seen_at >= utcnow() - timedelta(seconds=20))).all()
            if len(seen) >= count:
                return
            time.sleep(0.2)
        raise AssertionError(f"{count} workers not seen in {timeout} s\n" + self.dep.topo.log_tail())

    def start_backup(self, server: str, volumes: list[str], seed: int) -> tuple[str, str]:
        """Fresh data in ``volumes``, a backup of ``server`` through api1: (checkpoint id, item id)."""
        for i, v in enumerate(volumes):
            write(self.dep.runtime, v, 0, random_bytes(48 * MIB, seed + i))
        hashes = {v: digest(self.dep.runtime, v) for v in volumes}  # nothing writes them until the restore
        r = protect(self.apis[0], self.headers, server)
        assert r.status_code == 200, r.text
        cp = r.json()["checkpoint"]["id"]
        self.expected[cp] = hashes
        return cp, item_of(self.apis[0], self.headers, cp)["id"]

    def mid_copy(self, item_id: str) -> Job:
        """Wait until the backup job of ``item_id`` copies data (step ``copy``, progress written) on a worker
        host of this topology."""
        def copying(job: Job) -> bool:
            if job.status != "running" or job.step != "copy" or self.owner_host(job) is None:
                return False
            with self.dep.runtime.sessions() as session:
                return (session.get(CheckpointItem, item_id).progress or 0) > 0
        return self.wait_job("backup", item_id, copying, what="copying")

    def wait_takeover(self, item_id: str, lost: Job, since: float) -> tuple[Job, float]:
        """Wait for another worker's claim of the job ``lost`` held; returns it and the seconds since ``since``."""
        job = self.wait_job("backup", item_id, lambda j: j.claim > lost.claim or j.status == "done",
                            timeout=takeover_bound(self.engine) + 30, what="taken over")
        return job, time.monotonic() - since


class KvmHost:
    """The libvirt part: a shut-off QEMU domain of project demo with one raw disk, a libvirt API (``serve`` on
    host api2, port LIBVIRT_PORT, cloud driver libvirt, its KVM host named KVM_HOST: its jobs need
    ``libvirt:w3``) and the libvirt worker of host KVM_HOST (which serves exactly that)."""

    def __init__(self, dep: Deployment):
        import libvirt

        self.dep = dep
        self.conn = libvirt.open(URI)
        DISK_DIR.mkdir(parents=True, exist_ok=True)
        self.disk = DISK_DIR / f"topology{os.getpid()}-sys.raw"
        with open(self.disk, "wb") as fh:
            fh.truncate(64 * MIB)
        self.write(seed=1)
        name = f"opencsbs-test-topology-{os.getpid()}"
        self.dom = self.conn.defineXML(
            f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>"
            "<os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os><devices>"
            f"<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='{self.disk}'/>"
            "<target dev='vda' bus='virtio'/></disk><memballoon model='none'/></devices></domain>")
        self.server_id = self.dom.UUIDString()
        self.cloud = {"driver": "libvirt", "libvirt_uri": URI, "libvirt_az": "kvm-az1", "libvirt_project_id": "demo",
                      "libvirt_host": KVM_HOST, "libvirt_scratch_dir": str(dep.topo.dir / "libvirt-scratch")}
        self.url = dep.start_api("api2", port=LIBVIRT_PORT, cloud=self.cloud)
        self.api = httpx.Client(base_url=self.url, timeout=60)
        self.start_worker()

    def start_worker(self) -> None:
        self.dep.start_worker(KVM_HOST, "--host", KVM_HOST, cloud=self.cloud)

    def write(self, seed: int) -> None:
        """24 MiB of fresh data at 4 MiB into the (shut-off) domain's disk."""
        with open(self.disk, "r+b") as fh:
            fh.seek(4 * MIB)
            fh.write(random_bytes(24 * MIB, seed))

    def digest(self) -> str:
        return hashlib.sha256(self.disk.read_bytes()).hexdigest()

    def close(self) -> None:
        import libvirt

        try:
            self.dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA)
        except libvirt.libvirtError:
            pass
        self.api.close()
        self.conn.close()
        self.disk.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def world():
    ok, why = netns_available()
    require_component(ok, why)
    # the sandbox's volume files are on the shared file system, named host SANDBOX_FILES: the sandbox APIs' jobs
    # need sandbox:files, which the workers of w1 and w2 declare they serve
    dep = deploy(engine=ENGINE, inventory=EXAMPLE_INVENTORY, api_settings={"worker": {"host": SANDBOX_FILES}})
    kvm = None
    try:
        w = World(dep)
        for host in SANDBOX_HOSTS:
            w.start_sandbox_worker(host)
        for host in ("w1", "w2"):
            dep.start_scheduler(host)
        w.libvirt_ok, w.libvirt_why = libvirt_available()
        if w.libvirt_ok:
            kvm = w.kvm = KvmHost(dep)
        w.wait_workers(w.worker_count())
        _anchor_slots(w)
        yield w
    finally:
        try:
            if kvm is not None:
                kvm.close()
        finally:
            dep.close()


def _anchor_slots(w: World) -> None:
    """SLOTS policies (no servers) through api2, each with one slot due at a different moment of the module's
    run, one every 2 s from now on (the scheduler fires ``max(latest pattern time, next_run_at)``)."""
    start = utcnow().replace(microsecond=0) + timedelta(seconds=5)
    for i in range(SLOTS):
        r = w.apis[1].post("/v1/demo/policies", json=body(f"slot-{i}", resources=()), headers=w.headers)
        assert r.status_code == 200, r.text
        with w.dep.runtime.sessions() as session, session.begin():
            op = session.scalars(select(ScheduledOperation)
                                 .where(ScheduledOperation.policy_id == r.json()["policy"]["id"])).one()
            due = start + timedelta(seconds=2 * i)
            session.execute(update(ScheduledOperation).where(ScheduledOperation.id == op.id)
                            .values(next_run_at=due))
            w.anchored[op.id] = due


def test_worker_host_killed_mid_backup_is_taken_over_within_the_lease_bound(world):
    cp, item_id = world.start_backup(WEB1, [WEB1_SYS, WEB1_DATA], seed=10)
    job = world.mid_copy(item_id)
    host = world.owner_host(job)
    killed_at = time.monotonic()
    assert world.dep.topo.kill_host(host)
    new, took = world.wait_takeover(item_id, job, killed_at)
    bound = takeover_bound(world.engine)
    print(f"killed host {host}: job taken over after {took:.1f} s (bound {bound:.1f} s)")
    assert took <= bound, f"taken over after {took:.1f} s, bound {bound:.1f} s (lease {world.engine.lease_seconds})"
    if new.status != "done":  # claimed (not finished) by a live worker of another host, after the lease expired
        assert world.owner_host(new) not in (None, host), new.owner
        assert new.updated_at >= job.lease_until, (new.updated_at, job.lease_until)
    done = world.wait_job("backup", item_id, lambda j: j.status in ("done", "failed"), what="finished")
    assert done.status == "done" and done.attempts >= 2, (done.status, done.error, done.attempts)
    item = item_of(world.apis[1], world.headers, cp)
    assert item["status"] == "available", item
    # the host comes back: its worker and scheduler start again
    world.start_sandbox_worker(host)
    world.dep.start_scheduler(host)
    world.wait_workers(world.worker_count())


def test_worker_host_cut_off_mid_backup_is_taken_over_and_fenced(world):
    cp, item_id = world.start_backup(DB1, [DB1_SYS], seed=20)
    job = world.mid_copy(item_id)
    host = world.owner_host(job)
    cut_at = time.monotonic()
    world.dep.topo.cut(host)
    try:
        new, took = world.wait_takeover(item_id, job, cut_at)
        bound = takeover_bound(world.engine)
        print(f"cut host {host}: job taken over after {took:.1f} s (bound {bound:.1f} s)")
        assert took <= bound, f"taken over after {took:.1f} s, bound {bound:.1f} s"
        done = world.wait_job("backup", item_id, lambda j: j.status in ("done", "failed"), what="finished")
    finally:
        world.dep.topo.mend(host)
    assert done.status == "done", (done.status, done.error)
    assert world.owner_host(done) != host, done.owner
    # the cut worker is back on the network: its late heartbeat or step commit finds the job no longer its own
    time.sleep(world.engine.lease_seconds)
    after = world.job("backup", item_id)
    assert (after.status, after.step, after.claim, after.finished_at) == \
        (done.status, done.step, done.claim, done.finished_at)
    item = item_of(world.apis[1], world.headers, cp)
    assert item["status"] == "available", item
    world.wait_workers(world.worker_count())


def test_nothing_is_lost_backups_restore_byte_exact_through_the_other_api_host(world):
    assert len(world.expected) == 2
    for n, (cp, hashes) in enumerate(world.expected.items()):
        for v in hashes:  # overwrite what was backed up
            write(world.dep.runtime, v, 0, random_bytes(48 * MIB, 900 + n))
        assert {v: digest(world.dep.runtime, v) for v in hashes} != hashes
        item = item_of(world.apis[1], world.headers, cp)
        r = restore(world.apis[1], world.headers, item, item["resource_id"])
        assert r.status_code == 200, r.text
        restore_id = r.json()["restore"]["id"]
        world.wait_job("restore", restore_id, lambda j: j.status in ("done", "failed"), what="restored")
        rs = world.apis[0].get(f"/v1/demo/restores/{restore_id}", headers=world.headers).json()["restore"]
        assert rs["status"] == "success", rs
        assert {v: digest(world.dep.runtime, v) for v in hashes} == hashes, cp


def test_scheduler_replicas_fire_every_slot_exactly_once(world):
    last = max(world.anchored.values())
    deadline = time.monotonic() + max((last - utcnow()).total_seconds(), 0) + 30
    while True:
        with world.dep.runtime.sessions() as session:
            runs = session.scalars(select(PolicyRun).where(PolicyRun.operation_id.in_(world.anchored))).all()
        if {r.operation_id for r in runs} == set(world.anchored) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    per_slot = Counter((r.operation_id, r.slot_at) for r in runs)
    assert max(per_slot.values()) == 1, [k for k, n in per_slot.items() if n > 1]
    assert {op: slot for op, slot in per_slot} == world.anchored  # every due slot fired, at its own time


#: the load run of the module: clients, requests per client, time bound (benchmarks/load.py runs the longer one)
LOAD = (200, 3, 150.0)


def test_200_concurrent_clients_on_both_api_hosts_get_no_error(world):
    from load_clients import run_load

    clients, requests, seconds = LOAD
    res = run_load(world.dep.api_urls, world.headers["X-Auth-Token"], clients, requests, seconds)
    lat = res.all_latencies()
    print(f"{clients} clients: {res.answered} answers in {res.seconds:.1f} s, p50 {lat[len(lat) // 2] * 1000:.0f} ms, "
          f"per API host {dict(res.per_url)}")
    assert not res.errors, dict(res.errors)
    assert res.unsent == 0 and res.answered == clients * requests
    assert sorted(res.per_url) == sorted(world.dep.api_urls)  # both API hosts answered
    assert {"check_protectable", "checkpoint_items", "policies"} <= set(res.latencies)


def test_a_libvirt_job_runs_only_on_its_kvm_host_and_waits_for_it_when_that_host_dies(world):
    require_component(world.libvirt_ok, world.libvirt_why)
    kvm = world.kvm
    expected = kvm.digest()
    r = protect(kvm.api, world.headers, kvm.server_id)
    assert r.status_code == 200, r.text
    cp = r.json()["checkpoint"]["id"]
    item_id = item_of(kvm.api, world.headers, cp)["id"]
    job = world.wait_job("backup", item_id, lambda j: j.status == "running" and world.owner_host(j) is not None,
                         what="running")
    assert world.owner_host(job) == KVM_HOST and "libvirt:w3" in job.needs, (job.owner, job.needs)
    assert world.dep.topo.kill_host(KVM_HOST)
    # the sandbox workers of w1 and w2 are alive and idle: past the takeover bound, neither has claimed the job,
    # and the job says why it waits
    time.sleep(takeover_bound(world.engine) + 1)
    waiting = world.job("backup", item_id)
    assert waiting.claim == job.claim and waiting.status == "running", (waiting.owner, waiting.status)
    r = kvm.api.get(f"/opencsbs/v1/demo/checkpoint_items/{item_id}/job", headers=world.headers)
    assert r.status_code == 200, r.text
    assert "libvirt:w3" in (r.json()["job"]["waiting"] or ""), r.json()
    # the workers as a cloud admin sees them: the KVM host's silent (its job still named), the others live
    admin = {"X-Auth-Token": world.dep.token(role="cloud-admin")}
    r = world.apis[0].get("/opencsbs/v1/demo/workers", headers=admin)
    assert r.status_code == 200, r.text
    silent = {w["host"]: w["silent"] for w in r.json()["workers"] if not w["silent"] or w["host"] == KVM_HOST}
    assert silent == {"w1": False, "w2": False, KVM_HOST: True}, r.json()
    kvm.start_worker()  # the KVM host is back: its worker resumes the job
    done = world.wait_job("backup", item_id, lambda j: j.status in ("done", "failed"), what="finished")
    assert done.status == "done" and world.owner_host(done) == KVM_HOST, (done.status, done.error, done.owner)
    item = item_of(kvm.api, world.headers, cp)
    assert item["status"] == "available", item
    # nothing lost: the disk, overwritten, restores byte-exact, again on the KVM host
    kvm.write(seed=2)
    assert kvm.digest() != expected
    r = restore(kvm.api, world.headers, item, kvm.server_id, power_on=False)
    assert r.status_code == 200, r.text
    restore_id = r.json()["restore"]["id"]
    rjob = world.wait_job("restore", restore_id, lambda j: j.status in ("done", "failed"), what="restored")
    assert rjob.status == "done" and world.owner_host(rjob) == KVM_HOST, (rjob.error, rjob.owner)
    assert kvm.digest() == expected
