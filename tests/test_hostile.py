"""Hostile and broken input: content types, malformed bodies, size, batch and length limits, slow clients,
TLS, and secrets kept out of logs and error messages."""

from __future__ import annotations

import json
import logging
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import free_port

PROVIDER = "fc4d5750-22e7-4798-8a46-f48f62c4c1da"
WEB_1 = "6507cb66-90dc-4a12-a573-c9f3398f899d"
URL = f"/v1/demo/providers/{PROVIDER}/resources/action"
BODY = {"check_protectable": [{"resource_id": WEB_1, "resource_type": "OS::Nova::Server"}]}
VERDICT = {"protectable": [{"resource_id": WEB_1, "resource_type": "OS::Nova::Server", "result": True}]}


def _error(r, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error_code", "error_msg"} and body["error_code"] == code, body
    return body


@pytest.mark.parametrize("ctype", [None, "application/x-www-form-urlencoded", "text/plain", "application/json",
                                   "application/json; charset=utf-8", "application/octet-stream"])
def test_json_bodies_are_accepted_whatever_the_content_type(demo, ctype):
    """``curl -d '{...}'`` sends a form content type; the API reads the body as JSON anyway."""
    client, headers = demo
    h = dict(headers)
    if ctype:
        h["Content-Type"] = ctype
    r = client.post(URL, content=json.dumps(BODY).encode(), headers=h)
    assert r.status_code == 200, r.text
    assert r.json() == VERDICT


@pytest.mark.parametrize("raw", [b"{not json", b"\xff\xfe\x00", b"[" * 100_000, b"", b"NaN", b"[]", b"null",
                                 b'{"check_protectable": "x"}', b'{"check_protectable": [{"resource_id": 5}]}'])
def test_malformed_bodies_get_a_400_with_the_error_body(demo, raw):
    client, headers = demo
    body = _error(client.post(URL, content=raw, headers=headers), 400, "CSBS.9001")
    assert body["error_msg"].startswith("Invalid request parameters")


def test_body_over_the_limit_is_413_declared_or_streamed(settings, inventory, make_token, client):
    limit = client.app.state.runtime.settings.max_body_bytes
    headers = {"X-Auth-Token": make_token("demo", "member")}
    big = json.dumps({"check_protectable": [{"resource_id": "x" * 60, "resource_type": "OS::Nova::Server"}]
                      * (limit // 80 + 10)}).encode()
    assert len(big) > limit
    _error(client.post(URL, content=big, headers=headers), 413, "APIGW.0201")

    def chunks():  # no Content-Length: counted while streaming
        for i in range(0, len(big), 65536):
            yield big[i:i + 65536]

    _error(client.post(URL, content=chunks(), headers=headers), 413, "APIGW.0201")
    # and the server still answers normally afterwards
    assert client.post(URL, json=BODY, headers=headers).status_code == 200


def test_batch_and_string_limits(demo):
    client, headers = demo
    limit = client.app.state.runtime.settings.batch_limit
    item = {"resource_id": WEB_1, "resource_type": "OS::Nova::Server"}
    body = _error(client.post(URL, json={"check_protectable": [item] * (limit + 1)}, headers=headers), 400,
                  "CSBS.9001")
    assert str(limit) in body["error_msg"]
    assert client.post(URL, json={"check_protectable": [item] * limit}, headers=headers).status_code == 200
    _error(client.post(URL, json={"check_protectable": [dict(item, resource_id="x" * 65)]}, headers=headers),
           400, "CSBS.9001")
    r = client.get("/v1/" + "p" * 65 + "/providers", headers=headers)  # not the token's project either
    assert r.status_code in (400, 403) and set(r.json()) == {"error_code", "error_msg"}


def test_oversized_path_and_query_parameters_are_refused(client, make_token, inventory):
    """Every path and query parameter of /openapi.json, given a 10 000-character string or a 2**64 integer
    (the rest of the request valid), gets a 4xx in the error shape (never a 5xx, never a 200)."""
    doc = client.get("/openapi.json").json()
    headers = {"X-Auth-Token": make_token("demo", "admin")}
    checked = 0
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            params = [p for p in op.get("parameters", []) if p["in"] in ("path", "query")]
            for p in params:
                if p["name"] in ("project_id",) and p["in"] == "path":
                    values = ["p" * 10_000]
                else:
                    types = {p.get("schema", {}).get("type")} | {
                        s.get("type") for s in p.get("schema", {}).get("anyOf", [])}
                    values = [str(2**64)] if "integer" in types else ["k" * 10_000]
                for value in values:
                    url = path
                    for q in params:
                        if q["in"] == "path":
                            filled = value if q is p else {"project_id": "demo", "provider_id": PROVIDER}.get(
                                q["name"], "0a6c4e58-3a4b-4bde-9a0b-5d7d0f8e0a01")
                            url = url.replace("{" + q["name"] + "}", filled)
                    query = {p["name"]: value} if p["in"] == "query" else {}
                    r = client.request(method.upper(), url, params=query, headers=headers,
                                       json={} if method in ("post", "put") else None)
                    assert 400 <= r.status_code < 500, (method, path, p["name"], r.status_code, r.text[:300])
                    assert set(r.json()) == {"error_code", "error_msg"}, (method, path, p["name"])
                    checked += 1
    assert checked >= 10


# --- slow clients -------------------------------------------------------------------------------------------


def _trickle_body(port: int, token: str) -> socket.socket:
    """A connection that announces a 5000-byte body, sends a few bytes of it, then nothing."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(f"POST /v1/slowpoke/providers/{PROVIDER}/resources/action HTTP/1.1\r\nHost: x\r\n"
              f"X-Auth-Token: {token}\r\nContent-Type: application/json\r\n"
              f"Content-Length: 5000\r\n\r\n{{\"check_".encode())
    return s


def test_slow_clients_do_not_stall_another_tenant(live_server, make_token, inventory):
    """Slow-loris: many connections trickling headers or bodies (and never finishing within the test); another
    tenant's request is still answered, long before any of the slow ones could be (body_timeout is 60 s)."""
    port = int(live_server.rsplit(":", 1)[1])
    slow_token = make_token("slowpoke", "member")
    socks: list[socket.socket] = []
    try:
        for _ in range(40):  # headers never finished
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /v1/slowpoke/providers HTTP/1.1\r\nHost: x\r\nX-Auth-")
            socks.append(s)
        socks += [_trickle_body(port, slow_token) for _ in range(20)]
        other = make_token("demo", "reader")
        t0 = time.monotonic()
        for _ in range(3):
            r = httpx.post(f"{live_server}{URL}", json=BODY, headers={"X-Auth-Token": other}, timeout=30)
            assert r.status_code == 200 and r.json() == VERDICT
        elapsed = time.monotonic() - t0
        assert elapsed < 10, f"another tenant waited {elapsed:.2f}s behind slow clients"
    finally:
        for s in socks:
            s.close()


@pytest.fixture
def short_body_timeout(settings):
    settings.body_timeout = 1
    return settings


def test_a_trickled_body_is_cut_off_with_408(short_body_timeout, live_server, make_token):
    port = int(live_server.rsplit(":", 1)[1])
    s = _trickle_body(port, make_token("slowpoke", "member"))
    try:
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        head, _, payload = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408"), data[:200]
        assert json.loads(payload)["error_code"] == "APIGW.0201"
    finally:
        s.close()


# --- TLS ----------------------------------------------------------------------------------------------------


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_serve_over_tls_and_behind_a_proxy(tmp_path, settings):
    """``opencsbs serve --tls-cert --tls-key``: HTTPS with the given certificate; plain HTTP is not answered;
    X-Forwarded-Proto/Host from a trusted proxy shape the links of the version document."""
    cert, key = _self_signed(tmp_path)
    port = free_port()
    data_dir = tmp_path / "srv"
    cmd = [sys.executable, "-m", "opencsbs", "--data-dir", str(data_dir), "--database-url", settings.db_url,
           "serve", "--port", str(port), "--tls-cert", str(cert), "--tls-key", str(key)]
    env = {"PATH": "/usr/bin:/bin", "OPENCSBS_WORKERS": "0", "OPENCSBS_SCHEDULER": "false",
           "OPENCSBS_FORWARDED_ALLOW_IPS": "127.0.0.1"}
    ctx = ssl.create_default_context(cafile=str(cert))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"https://127.0.0.1:{port}/", verify=ctx, timeout=2)
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    out = proc.stdout.read().decode() if proc.poll() is not None else ""
                    pytest.fail(f"opencsbs serve over TLS did not come up: {out[-2000:]}")
                time.sleep(0.2)
        assert r.status_code == 200
        assert r.json()["versions"][0]["links"][0]["href"] == f"https://127.0.0.1:{port}/v1/"
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"https://127.0.0.1:{port}/", timeout=5)  # unknown CA: refused by the client
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/", timeout=5)  # no plain HTTP on the TLS port
        r = httpx.get(f"https://127.0.0.1:{port}/v1/", verify=ctx, timeout=5,
                      headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7",
                               "Host": "csbs.example.com"})
        assert r.json()["version"]["links"][0]["href"] == "https://csbs.example.com/v1/"
        r = httpx.get(f"https://127.0.0.1:{port}/v1/demo/providers", verify=ctx, timeout=5)
        _error(r, 401, "APIGW.0301")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_serve_refuses_a_certificate_without_its_key(tmp_path):
    from click.testing import CliRunner

    from opencsbs.cli import main

    cert, _key = _self_signed(tmp_path)
    r = CliRunner().invoke(main, ["--data-dir", str(tmp_path / "d"), "serve", "--tls-cert", str(cert)])
    assert r.exit_code != 0 and "--tls-key" in r.output


# --- secrets ------------------------------------------------------------------------------------------------


def test_local_tokens_never_reach_logs_or_error_bodies(demo, make_token, caplog):
    client, headers = demo
    caplog.set_level(logging.DEBUG)
    secret = headers["X-Auth-Token"]
    bad = secret[:-4] + "AAAA"
    texts = []
    for token in (secret, bad):
        h = {"X-Auth-Token": token}
        texts.append(client.post(URL, json=BODY, headers=h).text)
        texts.append(client.post(URL, content=b"{broken", headers=h).text)
        texts.append(client.get("/v1/other/providers", headers=h).text)
        texts.append(client.get("/v1/demo/checkpoint_items/not-an-item", headers=h).text)
        texts.append(client.post(URL, json={"check_protectable": [{"resource_id": token,
                                                                    "resource_type": "x" * 80}]}, headers=h).text)
    text = caplog.text + "".join(texts)
    assert secret not in text and bad not in text


def test_local_token_lookup_compares_digests_in_constant_time():
    """The stored value is a SHA-256 digest found by index and re-checked with ``hmac.compare_digest``."""
    import inspect

    from opencsbs.auth import local

    src = inspect.getsource(local.LocalAuthenticator.authenticate)
    assert "compare_digest" in src and "token_digest(token)" in src
    assert local.token_digest("a") != local.token_digest("b") and len(local.token_digest("a")) == 64


def test_principal_repr_hides_the_token():
    from opencsbs.auth.base import Principal

    p = Principal("p", "u", frozenset({"member"}), auth_token="gAAAA-very-secret")
    assert "very-secret" not in repr(p) and "very-secret" not in str(p)
