"""check_protectable on the sandbox cloud: batches of 1, 100 and 1,000 servers, in-process (the service use
case: driver facts + opencsbs state + rules) and over HTTP (uvicorn on a real port, keep-alive httpx client).

Prints per (mode, N): min, p50 and p99 latency in ms, this process's CPU ms per batch (a better measure than
wall time on a busy machine), checks per second, cloud-driver calls per batch (must be the same for every N)
and, as the peer of the same run, the ratio of one N-item batch to N one-item batches.
Target: the 1,000-item batch under 20 ms (p50) in-process. Exit status 1 if the driver call count grows with N.

    .venv/bin/python benchmarks/check_protectable.py                 # SQLite in a temporary data dir
    .venv/bin/python benchmarks/check_protectable.py --database-url postgresql+psycopg://postgres@127.0.0.1/x
    .venv/bin/python benchmarks/check_protectable.py --profile       # pyinstrument profile of the 1,000 batch
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import uuid
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
warnings.filterwarnings("ignore")

import httpx  # noqa: E402

from opencsbs.auth.base import Principal  # noqa: E402
from opencsbs.config import Settings  # noqa: E402
from opencsbs.db.base import transaction  # noqa: E402

PROVIDER = "fc4d5750-22e7-4798-8a46-f48f62c4c1da"
PROJECT = "bench"
SIZES = (1, 100, 1000)
REPEATS = {1: 300, 100: 100, 1000: 40}
#: statuses of the generated servers, in rotation: most pass, the rest exercise the refusals
STATUSES = ["ACTIVE", "SHUTOFF", "ACTIVE", "ERROR", "ACTIVE", "SOFT_DELETED", "ACTIVE", "PAUSED"]


def inventory(n: int) -> dict:
    """``n`` servers with a system and a data disk each; every 10th has a shareable disk, every 25th a DSS one."""
    servers = []
    for i in range(n):
        vols = [{"id": str(uuid.uuid4()), "size_gb": 1, "bootable": True, "service_type": "EVS"},
                {"id": str(uuid.uuid4()), "size_gb": 1, "service_type": "EVS"}]
        if i % 10 == 9:
            vols.append({"id": str(uuid.uuid4()), "size_gb": 1, "shareable": True})
        if i % 25 == 24:
            vols.append({"id": str(uuid.uuid4()), "size_gb": 1, "service_type": "DSS"})
        servers.append({"id": str(uuid.uuid4()), "name": f"srv-{i}", "status": STATUSES[i % len(STATUSES)],
                        "availability_zone": "az1", "volumes": vols})
    return {"projects": {PROJECT: {"servers": servers}}}


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


class Bench:
    def __init__(self, args):
        from opencsbs.clouds.sandbox.inventory import load_inventory
        from opencsbs.bootstrap import build_runtime

        self.tmp = tempfile.TemporaryDirectory(prefix="opencsbs-bench-")
        settings = Settings(data_dir=Path(self.tmp.name), database_url=args.database_url, workers=0,
                            scheduler=False, log_level="warning")
        self.runtime = build_runtime(settings)
        data = inventory(max(SIZES))
        with transaction(self.runtime.sessions) as session:
            load_inventory(session, data, settings.volumes_dir)
        self.ids = [s["id"] for s in data["projects"][PROJECT]["servers"]]
        from opencsbs.auth.local import create_token

        with transaction(self.runtime.sessions) as session:
            self.token = create_token(session, PROJECT, "member")
        self.principal = Principal(PROJECT, "bench", frozenset({"member"}))

    def items(self, n: int) -> list[tuple[str, str]]:
        return [(rid, "OS::Nova::Server") for rid in self.ids[:n]]

    # --- modes ---

    def in_process(self, n: int):
        from opencsbs.service.protectable import check_protectable

        items = self.items(n)
        return lambda: check_protectable(self.runtime, self.principal, PROJECT, items)

    def over_http(self, client: httpx.Client, n: int):
        body = {"check_protectable": [{"resource_id": rid, "resource_type": t} for rid, t in self.items(n)]}
        url = f"/v1/{PROJECT}/providers/{PROVIDER}/resources/action"

        def call():
            r = client.post(url, json=body)
            if r.status_code != 200 or len(r.json()["protectable"]) != n:
                raise SystemExit(f"HTTP {r.status_code}: {r.text[:300]}")

        return call

    def measure(self, fn, repeats: int) -> tuple[list[float], float, float]:
        """Latencies in ms, this process's CPU ms per call, and driver calls per call."""
        for _ in range(3):
            fn()
        before = self.runtime.driver.calls
        cpu = time.process_time()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1000)
        cpu_ms = (time.process_time() - cpu) * 1000 / repeats
        return times, cpu_ms, (self.runtime.driver.calls - before) / repeats

    def serve(self):
        import uvicorn

        from opencsbs.api.app import create_app

        server = uvicorn.Server(uvicorn.Config(create_app(self.runtime), host="127.0.0.1", port=0,
                                               log_level="warning", access_log=False))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        return server, thread, port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temporary data dir")
    parser.add_argument("--profile", action="store_true", help="pyinstrument profile of the in-process 1,000 batch")
    args = parser.parse_args()
    bench = Bench(args)
    db = bench.runtime.engine.dialect.name

    if args.profile:
        from pyinstrument import Profiler

        fn = bench.in_process(1000)
        fn()
        with Profiler(interval=0.0005) as profiler:
            for _ in range(20):
                fn()
        profiler.print()
        return 0

    rows = []
    server, thread, port = bench.serve()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"X-Auth-Token": bench.token},
                          timeout=60) as client:
            for mode in ("in-process", "http"):
                per_item = None
                for n in SIZES:
                    fn = bench.in_process(n) if mode == "in-process" else bench.over_http(client, n)
                    times, cpu_ms, calls = bench.measure(fn, REPEATS[n])
                    p50 = statistics.median(times)
                    if n == 1:
                        per_item = p50
                    rows.append((mode, n, min(times), p50, pct(times, 0.99), cpu_ms,
                                 n / (statistics.mean(times) / 1000), calls, p50 / (per_item * n)))
    finally:
        server.should_exit = True
        thread.join(timeout=10)

    print(f"check_protectable, sandbox cloud, {db}, {len(bench.ids)} servers loaded")
    import os

    print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs "
          "(CPU ms is this process's CPU time per batch: server and client for http)")
    print("| mode | N | min ms | p50 ms | p99 ms | CPU ms | checks/s | driver calls/batch | "
          "batch p50 / (N x 1-item p50) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for mode, n, low, p50, p99, cpu_ms, cps, calls, ratio in rows:
        print(f"| {mode} | {n} | {low:.2f} | {p50:.2f} | {p99:.2f} | {cpu_ms:.2f} | {cps:,.0f} | {calls:g} | "
              f"{ratio:.3f} |")
    constant = len({calls for *_, calls, _r in rows}) == 1
    best = next(r for r in rows if r[0] == "in-process" and r[1] == 1000)
    print(f"driver calls independent of N: {'yes' if constant else 'NO'}; in-process 1,000-item batch: "
          f"p50 {best[3]:.1f} ms (target < 20 ms: {'met' if best[3] < 20 else 'MISSED'}), "
          f"min {best[2]:.1f} ms, CPU {best[5]:.1f} ms")
    bench.runtime.close()
    return 0 if constant else 1


if __name__ == "__main__":
    sys.exit(main())
