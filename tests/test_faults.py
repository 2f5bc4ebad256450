"""A fault must not cost the next request: after a 500 (or a disk-full 503) the keep-alive connection still
answers, and the error says what is full. The faults are injected into a use case: a real server cannot be made
to raise an unexpected exception on demand."""

from __future__ import annotations

import errno
import sqlite3

import httpx
import pytest
import sqlalchemy.exc

from opencsbs.service import policies


def _local_port(r: httpx.Response) -> int:
    return r.extensions["network_stream"].get_extra_info("client_addr")[1]


def _fail_once(monkeypatch, exc: BaseException):
    real = policies.list_policies
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise exc
        return real(*args, **kwargs)

    monkeypatch.setattr(policies, "list_policies", broken)


def _psycopg_disk_full():
    import psycopg.errors

    return psycopg.errors.DiskFull("could not extend file \"base/16384/2619\": No space left on device")


@pytest.mark.parametrize("fault, status, words", [
    (RuntimeError("a bug"), 500, "request failed"),
    (OSError(errno.ENOSPC, "No space left on device"), 503,
     "request failed: the server's disk (no space left on device) is full"),
    (sqlalchemy.exc.OperationalError("INSERT ...", {}, sqlite3.OperationalError("database or disk is full")),
     503, "request failed: the database (or its disk) is full"),
    ("psycopg", 503, "request failed: the database's disk is full"),
])
def test_a_fault_answers_once_and_the_connection_serves_the_next_request(live_server, make_token, monkeypatch,
                                                                        fault, status, words):
    if fault == "psycopg":
        fault = sqlalchemy.exc.OperationalError("INSERT ...", {}, _psycopg_disk_full())
    headers = {"X-Auth-Token": make_token("demo", "member")}
    _fail_once(monkeypatch, fault)
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    transport = httpx.HTTPTransport(retries=0, limits=limits)
    with httpx.Client(base_url=live_server, timeout=10, transport=transport) as c:
        r1 = c.get("/v1/demo/policies", headers=headers)
        assert r1.status_code == status, r1.text
        assert r1.json() == {"error_code": "CSBS.9999", "error_msg": words}
        r2 = c.get("/v1/demo/policies", headers=headers)
        assert r2.status_code == 200, r2.text
        assert r2.json()["policies"] == []
        if r1.headers.get("connection", "").lower() != "close":
            assert _local_port(r2) == _local_port(r1), "the second request needed a new connection"
