"""Concurrent API clients for the load runs (tests/test_topology.py and benchmarks/load.py).

``run_load(urls, token, clients, requests, seconds)``: ``clients`` asyncio clients, each sending ``requests``
requests (bounded in count) before ``seconds`` have passed (bounded in time; what is left then is counted as
``unsent``). Requests go round-robin over ``urls`` (one keep-alive pool per URL) and cycle through
``check_protectable`` of a batch of every server of project ``demo`` in examples/sandbox.yaml (and one of
another project: a mix of ``true`` and refused results) and the list calls ``GET checkpoint_items``,
``GET policies``, ``GET providers`` and the servers extension. A response other than 200, or a transport error
(no answer, timeout), is an error; they are counted by kind.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

PROVIDER = "fc4d5750-22e7-4798-8a46-f48f62c4c1da"
#: the servers of project demo in examples/sandbox.yaml, and one of project other-project
SERVERS = ["6507cb66-90dc-4a12-a573-c9f3398f899d", "1d4b4e0e-5d1f-4c4b-8d57-2f5a3a1b0002",
           "2b8f3c2a-6e0a-4b7e-9a51-3c6b4b2c0003", "3c9a4d3b-7f1b-4c8f-8b62-4d7c5c3d0004",
           "4dab5e4c-8a2c-4d90-9c73-5e8d6d4e0005", "5ebc6f5d-9b3d-4ea1-8d84-6f9e7e5f0006",
           "6fcd7a6e-ac4e-4fb2-9e95-7a0f8f6a0007", "7ade8b7f-bd5f-40c3-8fa6-8b1a9a7b0008",
           "8bef9c8a-ce6a-41d4-9ab7-9c2babac0009", "9cfaad9b-df7b-42e5-8bc8-adacbcbd0010",
           "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b0011", "c3d4e5f6-a7b8-4c9d-8e0f-2a3b4c5d0013"]
BATCH = {"check_protectable": [{"resource_id": s, "resource_type": "OS::Nova::Server"} for s in SERVERS]}
#: (method, path, body): one request of each kind per cycle; check_protectable is every other request
CALLS = [
    ("POST", f"/v1/demo/providers/{PROVIDER}/resources/action", BATCH),
    ("GET", "/v1/demo/checkpoint_items?limit=50", None),
    ("POST", f"/v1/demo/providers/{PROVIDER}/resources/action", BATCH),
    ("GET", "/v1/demo/policies?limit=50", None),
    ("POST", f"/v1/demo/providers/{PROVIDER}/resources/action", BATCH),
    ("GET", "/v1/demo/providers", None),
    ("POST", f"/v1/demo/providers/{PROVIDER}/resources/action", BATCH),
    ("GET", "/opencsbs/v1/demo/servers", None),
]


@dataclass
class LoadResult:
    """What a load run saw: ``latencies`` (seconds) of answered requests per call kind, answers per URL,
    errors by kind (``"HTTP 503"``, ``"ReadTimeout"``...), requests not sent before the time bound, wall time."""

    clients: int
    latencies: dict[str, list[float]] = field(default_factory=dict)
    per_url: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    unsent: int = 0
    seconds: float = 0.0

    @property
    def answered(self) -> int:
        return sum(len(v) for v in self.latencies.values())

    def all_latencies(self) -> list[float]:
        return sorted(x for v in self.latencies.values() for x in v)


def percentile(sorted_values: list[float], q: float) -> float:
    """The ``q`` (0-1) quantile of ``sorted_values`` (nearest rank); 0 when empty."""
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]


async def _client(n: int, pools: list[httpx.AsyncClient], token: str, requests: int, until: float,
                  result: LoadResult, turn: list[int]) -> None:
    headers = {"X-Auth-Token": token}
    for i in range(requests):
        if time.monotonic() >= until:
            result.unsent += requests - i
            return
        method, path, body = CALLS[(n + i) % len(CALLS)]
        turn[0] += 1
        pool = pools[turn[0] % len(pools)]  # round-robin over the API hosts
        kind = "check_protectable" if body else path.split("?")[0].rsplit("/", 1)[-1]
        t0 = time.monotonic()
        try:
            r = await pool.request(method, path, json=body, headers=headers)
        except httpx.TransportError as exc:
            result.errors[type(exc).__name__] += 1
            continue
        if r.status_code != 200:
            result.errors[f"HTTP {r.status_code} {kind}"] += 1
            continue
        result.latencies.setdefault(kind, []).append(time.monotonic() - t0)
        result.per_url[str(pool.base_url)] += 1


async def _run(urls: list[str], token: str, clients: int, requests: int, seconds: float) -> LoadResult:
    result = LoadResult(clients)
    per_pool = clients // len(urls) + 1
    limits = httpx.Limits(max_connections=per_pool * 2, max_keepalive_connections=per_pool * 2)
    pools = [httpx.AsyncClient(base_url=u, timeout=60, transport=httpx.AsyncHTTPTransport(retries=0, limits=limits))
             for u in urls]
    try:
        until = time.monotonic() + seconds
        started = time.monotonic()
        turn = [0]
        await asyncio.gather(*(_client(n, pools, token, requests, until, result, turn) for n in range(clients)))
        result.seconds = time.monotonic() - started
    finally:
        for p in pools:
            await p.aclose()
    return result


def run_load(urls: list[str], token: str, clients: int = 200, requests: int = 10, seconds: float = 120.0) -> LoadResult:
    """Run the clients (see the module's text) to completion or the time bound; returns what they saw."""
    return asyncio.run(_run(urls, token, clients, requests, seconds))
