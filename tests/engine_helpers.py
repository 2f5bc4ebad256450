"""Helpers of the engine tests: write known bytes into sandbox volumes, hash them, run jobs."""

from __future__ import annotations

import io
import os
import random

from opencsbs.clouds.sandbox.inventory import hash_volume, write_volume
from opencsbs.db.base import transaction
from opencsbs.clouds.sandbox.models import SandboxVolume

PROVIDER = "fc4d5750-22e7-4798-8a46-f48f62c4c1da"
WEB1 = "6507cb66-90dc-4a12-a573-c9f3398f899d"
WEB1_SYS = "0a6c4e58-3a4b-4bde-9a0b-5d7d0f8e0a01"
WEB1_DATA = "0a6c4e58-3a4b-4bde-9a0b-5d7d0f8e0a02"
DB1 = "1d4b4e0e-5d1f-4c4b-8d57-2f5a3a1b0002"
DB1_SYS = "1d4b4e0e-5d1f-4c4b-8d57-2f5a3a1b1001"
BMS1 = "9cfaad9b-df7b-42e5-8bc8-adacbcbd0010"
MIB = 1024 * 1024


def write(runtime, volume_id: str, offset: int, data: bytes) -> None:
    """Write ``data`` into a sandbox volume through the sandbox's own (locked, change-tracked) path."""
    with transaction(runtime.sessions) as session:
        volume = session.get(SandboxVolume, volume_id)
        write_volume(runtime.settings.volumes_dir, volume, offset, io.BytesIO(data))


def fill(runtime, volume_id: str, seed: int, chunks=((0, 3 * MIB), (200 * MIB, 5 * MIB + 123))) -> None:
    """Deterministic pseudo-random data at a few places of a volume."""
    for i, (offset, length) in enumerate(chunks):
        write(runtime, volume_id, offset, random_bytes(length, seed * 1000 + i))


def random_bytes(n: int, seed: int) -> bytes:
    """``n`` incompressible bytes, the same for the same ``seed``."""
    return random.Random(seed).randbytes(n)


def digest(runtime, volume_id: str) -> str:
    return hash_volume(runtime.settings.volumes_dir, volume_id)


def protect(client, headers, server_id: str, project: str = "demo", **param):
    return client.post(f"/v1/{project}/providers/{PROVIDER}/resources/{server_id}/action",
                       json={"protect": param}, headers=headers)


def item_of(client, headers, checkpoint_id: str, project: str = "demo") -> dict:
    r = client.get(f"/v1/{project}/checkpoint_items", params={"checkpoint_id": checkpoint_id}, headers=headers)
    assert r.status_code == 200, r.text
    items = r.json()["checkpoint_items"]
    assert len(items) == 1, items
    return items[0]


def run_jobs(runtime) -> int:
    from opencsbs.engine.worker import drain

    return drain(runtime)


def mapping_for(item: dict, targets: dict[str, str] | None = None) -> list[dict]:
    """Restore each disk backup onto its source volume (or ``targets[source_volume_id]``)."""
    targets = targets or {}
    return [{"backup_id": vb["id"], "volume_id": targets.get(vb["source_volume_id"], vb["source_volume_id"])}
            for vb in item["extend_info"]["volume_backups"]]


def restore(client, headers, item: dict, server_id: str, power_on: bool = True, targets=None, project="demo"):
    body = {"restore": {"provider_id": PROVIDER, "checkpoint_id": item["checkpoint_id"],
                        "parameters": {"checkpoint_item_id": item["id"], "power_on": power_on,
                                       "targets": {"server_id": server_id, "volumes": mapping_for(item, targets)}}}}
    return client.post(f"/v1/{project}/restores", json=body, headers=headers)


def sparse_used(path) -> int:
    return os.stat(path).st_blocks * 512
