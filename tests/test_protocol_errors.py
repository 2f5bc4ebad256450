"""Requests the HTTP server refuses before the application (h11 cannot parse them) answer the documented JSON
error body, against ``opencsbs serve`` with raw sockets (no client library would send these)."""

from __future__ import annotations

import json
import socket

import pytest

from conftest import free_port
from test_serve import serve  # noqa: F401 - the fixture

pytestmark = pytest.mark.slow

BAD = {
    "bad chunk size": (b"POST /v1/demo/policies HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                       b"zz\r\n{}\r\n0\r\n\r\n", 400),
    "200 kB header": (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n", 431),
    "Content-Length -1": (b"POST /v1/demo/policies HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n{}", 400),
    "NUL in a header": (b"GET / HTTP/1.1\r\nHost: x\r\nX-Auth-Token: a\x00b\r\n\r\n", 400),
    "not HTTP": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40 + b"\r\n\r\n", 400),
}


def _exchange(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        try:
            s.sendall(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer and close before the whole request is sent
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict((k.strip().lower(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:]))
    return int(lines[0].split()[1]), headers, body


def test_protocol_errors_answer_the_json_error_shape(serve, tmp_path):  # noqa: F811
    port = free_port()
    served = serve("--port", str(port), "--data-dir", str(tmp_path / "d"))
    served.wait_on(port)
    for what, (raw, status) in BAD.items():
        got, headers, body = _exchange(port, raw)
        assert got == status, (what, got, body)
        assert headers["content-type"] == "application/json", (what, headers)
        assert headers["connection"] == "close", what
        doc = json.loads(body)
        assert doc["error_code"] == "CSBS.9001", (what, doc)
        assert doc["error_msg"].startswith("Invalid request parameters: the HTTP request is malformed"), (what, doc)
    # the server is still fine
    status, _, _ = _exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status == 200
