"""An S3 bank that goes away (the real S3 test server behind a small TCP relay this test starts and stops): the
backup is given back and retried, stays incremental once the bank is back, and fails with one line when the bank
stays away (docs/engine.md "Transient failures")."""

from __future__ import annotations

import logging
import socket
import threading
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select, update

from bank_helpers import S3_ENDPOINT, s3_bank_settings
from conftest import require_component
from engine_helpers import MIB, WEB1, WEB1_SYS, item_of, protect, random_bytes, write
from opencsbs.bank.backends import S3Store
from opencsbs.bank.errors import BankUnavailable
from opencsbs.db.base import transaction
from opencsbs.db.models import Job, VolumeBackup
from opencsbs.engine.worker import Worker


class Relay:
    """Forwards TCP connections from 127.0.0.1:``port`` to ``target``; :meth:`stop` closes the port and every
    open connection (the server seems gone), :meth:`start` opens it again on the same port."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.port = 0
        self.conns: list[socket.socket] = []
        self.listener: socket.socket | None = None

    def start(self) -> Relay:
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", self.port))
        self.port = self.listener.getsockname()[1]
        self.listener.listen(64)
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()
        return self

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self) -> None:
        if self.listener is not None:
            try:
                self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
            except OSError:
                pass
            self.listener.close()
            self.listener = None
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
                c.close()
            except OSError:
                pass
        self.conns.clear()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def relay():
    require_component(bool(S3_ENDPOINT), "no S3 server: run scripts/services/s3.sh start")
    parts = urlsplit(S3_ENDPOINT)
    r = Relay((parts.hostname, parts.port or 80)).start()
    yield r
    r.stop()


@pytest.fixture
def s3_runtime(settings, relay):
    from opencsbs.bootstrap import build_runtime

    settings.bank = s3_bank_settings().model_copy(update={"s3_endpoint": relay.url})
    settings.engine.lease_seconds = 0.5
    settings.engine.max_attempts = 3
    rt = build_runtime(settings, migrate=False)
    # the same store with fewer botocore retries than production's 5, so the test does not wait for the backoff
    b = settings.bank
    rt.bank.store = S3Store(relay.url, b.s3_bucket, b.s3_access_key, b.s3_secret_key, prefix=b.s3_prefix,
                            max_attempts=2, connect_timeout=2, read_timeout=10)
    yield rt
    rt.close()


def _expire_leases(runtime) -> None:
    with transaction(runtime.sessions) as session:
        session.execute(update(Job).where(Job.lease_until.is_not(None)).values(lease_until=None))


def _job(runtime) -> Job:
    with runtime.sessions() as session:
        return session.scalars(select(Job).order_by(Job.created_at.desc())).first()


def test_the_store_retries_and_then_says_in_one_line_that_the_bank_is_unreachable(s3_runtime, relay):
    store = s3_runtime.bank.store
    store.put("probe/x", b"1")
    relay.stop()
    with pytest.raises(BankUnavailable) as err:
        store.get("probe/x")
    assert "unreachable" in str(err.value) and "\n" not in str(err.value)
    assert relay.url.split("//")[1] in str(err.value)


def test_a_bank_outage_is_transient_and_never_turns_an_incremental_into_a_full_read(
        s3_runtime, relay, client, make_token, inventory, caplog):
    runtime = s3_runtime
    headers = {"X-Auth-Token": make_token("demo", "member")}
    write(runtime, WEB1_SYS, 0, random_bytes(8 * MIB, 1))
    first = protect(client, headers, WEB1).json()["checkpoint"]
    assert Worker(runtime, "w1").run_one()
    assert item_of(client, headers, first["id"])["status"] == "available"

    write(runtime, WEB1_SYS, 4 * MIB, random_bytes(MIB, 2))
    second = protect(client, headers, WEB1, incremental=True).json()["checkpoint"]
    relay.stop()
    caplog.set_level(logging.INFO, logger="opencsbs")
    assert Worker(runtime, "w2").run_one()
    job = _job(runtime)
    assert (job.status, job.attempts) == ("running", 1)  # given back, to be tried again
    assert item_of(client, headers, second["id"])["status"] == "protecting"
    assert not any("reading the whole disk" in r.getMessage() for r in caplog.records)
    assert not any(r.exc_info for r in caplog.records)

    relay.start()  # the bank is back
    _expire_leases(runtime)
    assert Worker(runtime, "w3").run_one()
    item = item_of(client, headers, second["id"])
    assert item["status"] == "available"
    with runtime.sessions() as session:
        vbs = session.scalars(select(VolumeBackup).where(VolumeBackup.checkpoint_item_id == item["id"])).all()
    assert all(vb.incremental for vb in vbs)
    assert sum(vb.read_bytes for vb in vbs) < 8 * MIB  # only what changed was read


def test_a_lasting_bank_outage_fails_the_backup_with_one_line(s3_runtime, relay, client, make_token, inventory):
    runtime = s3_runtime
    headers = {"X-Auth-Token": make_token("demo", "member")}
    write(runtime, WEB1_SYS, 0, random_bytes(4 * MIB, 3))
    cp = protect(client, headers, WEB1).json()["checkpoint"]
    relay.stop()
    for _ in range(runtime.settings.engine.max_attempts):
        _expire_leases(runtime)
        assert Worker(runtime, "w").run_one()
    item = item_of(client, headers, cp["id"])
    assert item["status"] == "error"
    reason = item["extend_info"]["fail_reason"]
    assert "unreachable" in reason and "\n" not in reason
    assert _job(runtime).status == "failed"
