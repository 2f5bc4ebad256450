"""Operating the built-in sandbox cloud (an opencsbs extension, for ``opencsbs sandbox ...``): load an inventory,
list, change and delete servers and volumes, write into and hash a volume.

Each call runs in one transaction. Every function raises
:class:`opencsbs.clouds.sandbox.inventory.InventoryError` (with a one-line reason) for an unknown id or a bad
inventory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, BinaryIO

from opencsbs.clouds.sandbox.driver import server_facts
from opencsbs.clouds.sandbox.inventory import (
    InventoryError,
    delete_resource,
    hash_volume,
    list_servers,
    load_inventory_file,
    set_server,
    write_volume,
)
from opencsbs.core.facts import ServerFacts
from opencsbs.db.base import transaction
from opencsbs.clouds.sandbox.models import SandboxVolume
from opencsbs.runtime import Runtime


def load(runtime: Runtime, inventory: Path) -> dict[str, int]:
    """Load (upsert) an inventory YAML file; ``{"servers": n, "volumes": n}`` loaded."""
    with transaction(runtime.sessions) as session:
        return load_inventory_file(session, inventory, runtime.settings.volumes_dir)


def servers(runtime: Runtime, project_id: str | None = None) -> list[ServerFacts]:
    """The sandbox's servers (of ``project_id``, or of every project), by project then name, with their volumes."""
    with transaction(runtime.sessions) as session:
        return [server_facts(s) for s in list_servers(session, project_id)]


def change_server(runtime: Runtime, server_id: str, **changes: Any) -> None:
    """Set a server's ``status``, ``task_state``, ``availability_zone`` or ``name`` (``None`` = unchanged)."""
    with transaction(runtime.sessions) as session:
        set_server(session, server_id, **changes)


def delete(runtime: Runtime, resource_id: str) -> str:
    """Delete a server (its volumes stay, detached) or a volume (and its data); ``"server"`` or ``"volume"``."""
    with transaction(runtime.sessions) as session:
        return delete_resource(session, resource_id, runtime.settings.volumes_dir)


def write(runtime: Runtime, volume_id: str, offset: int, source: BinaryIO) -> int:
    """Copy ``source`` into volume ``volume_id`` at byte ``offset``; the number of bytes written."""
    with transaction(runtime.sessions) as session:
        volume = session.get(SandboxVolume, volume_id)
        if volume is None:
            raise InventoryError(f"no sandbox volume {volume_id}")
        return write_volume(runtime.settings.volumes_dir, volume, offset, source)


def digest(runtime: Runtime, volume_id: str) -> str:
    """The SHA-256 (hex) of every byte of volume ``volume_id``."""
    with transaction(runtime.sessions) as session:
        if session.get(SandboxVolume, volume_id) is None:
            raise InventoryError(f"no sandbox volume {volume_id}")
        return hash_volume(runtime.settings.volumes_dir, volume_id)
