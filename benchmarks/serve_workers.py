"""HTTP throughput of ``opencsbs serve`` with 1 and N worker processes, and the transport errors clients see.

Starts ``opencsbs serve --workers W`` (PostgreSQL, sandbox inventory, loopback) for each W of ``--workers``, then
runs ``--clients`` concurrent clients (default 200; asyncio tasks sharing one httpx pool of as many keep-alive
connections) for
``--seconds`` seconds (default 20). Each client loops: ``check_protectable`` of one server (auth, database,
rules), then ``GET /v1/{project}/providers`` (auth only), and after every ``--pause-every`` requests it sleeps
``--pause`` seconds (idle connections, to expose keep-alive races). Prints per W: requests, requests/s, HTTP
errors (non-2xx), transport errors (connection reset/closed with no answer, timeouts), p50/p99 latency.

    .venv/bin/python benchmarks/serve_workers.py --database-url postgresql+psycopg://postgres@127.0.0.1/bench
    .venv/bin/python benchmarks/serve_workers.py --workers 1 2 --keepalive 5 --pause 5   # the keep-alive race

The database must exist (it is migrated); everything binds 127.0.0.1. Bounded: clients, seconds and a hard
timeout per request (30 s).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PROVIDER = "fc4d5750-22e7-4798-8a46-f48f62c4c1da"
SERVER = "6507cb66-90dc-4a12-a573-c9f3398f899d"


def _opencsbs(*args: str, env: dict[str, str]) -> str:
    out = subprocess.run([sys.executable, "-m", "opencsbs", *args], env=env, capture_output=True, text=True,
                         timeout=300, check=True)
    return out.stdout


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _client(c: httpx.AsyncClient, token: str, until: float, pause_every: int, pause: float,
                  stats: dict) -> None:
    body = {"check_protectable": [{"resource_id": SERVER, "resource_type": "OS::Nova::Server"}]}
    headers = {"X-Auth-Token": token}
    n = 0
    while time.monotonic() < until:
        t0 = time.monotonic()
        try:
            if n % 2 == 0:
                r = await c.post(f"/v1/demo/providers/{PROVIDER}/resources/action", json=body, headers=headers)
            else:
                r = await c.get("/v1/demo/providers", headers=headers)
        except httpx.TransportError as exc:
            stats["transport"] += 1
            stats["transport_kinds"][type(exc).__name__] = stats["transport_kinds"].get(type(exc).__name__, 0) + 1
        else:
            stats["latency"].append(time.monotonic() - t0)
            stats["ok" if r.status_code < 400 else "http_error"] += 1
        n += 1
        if pause_every and n % pause_every == 0 and time.monotonic() + pause < until:
            await asyncio.sleep(pause)


async def _load(base: str, token: str, clients: int, seconds: float, pause_every: int, pause: float) -> dict:
    stats = {"ok": 0, "http_error": 0, "transport": 0, "transport_kinds": {}, "latency": []}
    # one pool of ``clients`` keep-alive connections, one per client task (a task holds its connection only
    # while its request runs, as a pooled SDK does); no TLS context to build (plain HTTP on loopback)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    transport = httpx.AsyncHTTPTransport(retries=0, limits=limits, verify=False)
    async with httpx.AsyncClient(base_url=base, timeout=30, transport=transport) as c:
        until = time.monotonic() + seconds
        started = time.monotonic()
        await asyncio.gather(*(_client(c, token, until, pause_every, pause, stats) for _ in range(clients)))
        stats["seconds"] = time.monotonic() - started
    return stats


def run_one(workers: int, args, env: dict[str, str], data: Path, token: str) -> dict:
    port = _free_port()
    log = open(data / f"serve-{workers}.log", "w")
    env = dict(env, OPENCSBS_KEEPALIVE_TIMEOUT=str(args.keepalive)) if args.keepalive else env
    proc = subprocess.Popen([sys.executable, "-m", "opencsbs", "--data-dir", str(data), "serve", "--port",
                             str(port), "--workers", str(workers), "--inventory", str(ROOT / "examples/sandbox.yaml")],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while (data / f"serve-{workers}.log").read_text().count("Application startup complete") < workers:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"serve --workers {workers} did not start: "
                                 f"{(data / f'serve-{workers}.log').read_text()[-2000:]}")
            time.sleep(0.2)
        base = f"http://127.0.0.1:{port}"
        asyncio.run(_load(base, token, 20, 2, 0, 0))  # warm-up: imports, pools, caches
        return asyncio.run(_load(base, token, args.clients, args.seconds, args.pause_every, args.pause))
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--database-url", default=os.environ.get("OPENCSBS_BENCH_DB",
                                                             "postgresql+psycopg://postgres@127.0.0.1:5432/bench"))
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--pause-every", type=int, default=20, help="requests between two pauses of a client")
    ap.add_argument("--pause", type=float, default=0.0, help="seconds a client idles after --pause-every requests")
    ap.add_argument("--keepalive", type=float, default=None, help="serve's keepalive_timeout (default: its own)")
    args = ap.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCSBS_")}
    # info: the processes announce "Application startup complete" (the access log goes to the same file)
    env.update(OPENCSBS_DATABASE_URL=args.database_url, OPENCSBS_LOG_LEVEL="info", PYTHONWARNINGS="ignore")
    with tempfile.TemporaryDirectory(prefix="opencsbs-bench-") as tmp:
        data = Path(tmp)
        _opencsbs("--data-dir", str(data), "db", "upgrade", env=env)
        token = _opencsbs("--data-dir", str(data), "token", "create", "--project", "demo", env=env).split()[-1]
        print(f"{args.clients} clients, {args.seconds:.0f} s, pause {args.pause} s every {args.pause_every} requests, "
              f"keepalive {args.keepalive or 'default'}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
        print(f"{'workers':>7} {'requests':>9} {'req/s':>8} {'http err':>8} {'transport':>9} {'p50 ms':>7} "
              f"{'p99 ms':>7}  transport errors by kind")
        for w in args.workers:
            s = run_one(w, args, env, data, token)
            lat = sorted(s["latency"]) or [0.0]
            p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
            total = s["ok"] + s["http_error"]
            print(f"{w:>7} {total:>9} {total / s['seconds']:>8.0f} {s['http_error']:>8} {s['transport']:>9} "
                  f"{statistics.median(lat) * 1000:>7.0f} {p99 * 1000:>7.0f}  {s['transport_kinds'] or ''}",
                  flush=True)


if __name__ == "__main__":
    main()
