"""200 concurrent clients against two API hosts on PostgreSQL, over network namespaces (tests/topology.py).

Makes the topology of tests/topology.py (needs root): PostgreSQL and S3 on host "db", ``opencsbs serve --workers
P`` on hosts "api1" and "api2" (P = ``--processes``), the sandbox inventory of examples/sandbox.yaml and
``--policies`` policies in project demo. Then ``--clients`` clients (tests/load_clients.py), round-robin over the
two API addresses, each send ``--requests`` requests (``check_protectable`` of a batch of 12 servers every other
request, and the list calls) before ``--seconds`` have passed. Prints per call kind: answers, p50/p99 latency;
then throughput, answers per API host, errors. Exits 1 on any error or request left unsent.

    .venv/bin/python benchmarks/load.py                      # 200 clients x 20 requests, 2 processes per host
    .venv/bin/python benchmarks/load.py --processes 1 2      # compare HTTP processes per host

Everything is removed at the end (namespaces, bridge, PostgreSQL cluster, S3 data).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from load_clients import percentile, run_load  # noqa: E402
from policy_helpers import body  # noqa: E402
from topology import deploy, netns_available  # noqa: E402

def run(processes: int, args) -> bool:
    import httpx

    t0 = time.monotonic()
    dep = deploy(api_processes=processes, inventory=ROOT / "examples" / "sandbox.yaml")
    try:
        token = dep.token("demo")
        for i in range(args.policies):
            r = httpx.post(f"{dep.api_urls[i % 2]}/v1/demo/policies", json=body(f"load-{i}", resources=()),
                           headers={"X-Auth-Token": token}, timeout=60)
            r.raise_for_status()
        print(f"\n== {processes} HTTP process(es) per API host: topology up in {time.monotonic() - t0:.0f} s "
              f"({', '.join(dep.api_urls)}); load average {os.getloadavg()[0]:.1f}", flush=True)
        run_load(dep.api_urls, token, clients=20, requests=8, seconds=60)  # warm-up: imports, pools, caches
        res = run_load(dep.api_urls, token, args.clients, args.requests, args.seconds)
    finally:
        dep.close()
    lat = res.all_latencies()
    print(f"{'call':>18} {'answers':>8} {'p50 ms':>7} {'p99 ms':>7}")
    for kind, values in sorted(res.latencies.items()):
        values = sorted(values)
        print(f"{kind:>18} {len(values):>8} {statistics.median(values) * 1000:>7.0f} "
              f"{percentile(values, 0.99) * 1000:>7.0f}")
    print(f"{'all':>18} {len(lat):>8} {statistics.median(lat or [0]) * 1000:>7.0f} "
          f"{percentile(lat, 0.99) * 1000:>7.0f}")
    print(f"{res.clients} clients, {res.answered} answers in {res.seconds:.1f} s: {res.answered / res.seconds:.0f} "
          f"requests/s; per API host {dict(res.per_url)}; errors {dict(res.errors) or 0}; unsent {res.unsent}; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    return not res.errors and not res.unsent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--requests", type=int, default=20, help="requests per client")
    ap.add_argument("--seconds", type=float, default=180.0, help="time bound of the whole run")
    ap.add_argument("--processes", type=int, nargs="+", default=[2], help="HTTP processes per API host")
    ap.add_argument("--policies", type=int, default=20, help="policies made in project demo before the run")
    args = ap.parse_args()
    ok, why = netns_available()
    if not ok:
        raise SystemExit(f"cannot make the topology: {why}")
    print(f"{args.clients} clients x {args.requests} requests (bound {args.seconds:.0f} s), {os.cpu_count()} CPUs "
          f"shared by every process of the topology and the clients")
    results = [run(p, args) for p in args.processes]
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
