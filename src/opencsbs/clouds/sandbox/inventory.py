"""Load, list, change and delete sandbox resources; read and write sandbox volume bytes.

Inventory YAML (see ``examples/sandbox.yaml``)::

    projects:
      <project_id>:
        servers:
          - id: <uuid>            # optional: a new UUID4 when absent
            name: web-1
            type: OS::Nova::Server        # or OS::Ironic::BareMetalServer
            status: ACTIVE                # Nova vocabulary (core.facts.NOVA_STATUSES)
            task_state: null              # e.g. resize_migrating (core.facts.NOVA_TASK_STATES)
            availability_zone: az1
            volumes:                      # attached in this order: /dev/vda, /dev/vdb, ...
              - {id: <uuid>, name: sys, size_gb: 1, bootable: true}
              - {id: <uuid>, size_gb: 1, shareable: true, volume_type: SSD, service_type: EVS}
        volumes:                          # volumes attached to nothing
          - {id: <uuid>, size_gb: 1}

A volume listed under several servers (same id) is one multi-attached volume. Loading is an upsert: rows
with the same id are updated in place, volume files are created (sparse) or grown, never truncated.

Errors: :class:`InventoryError` with a message naming the offending entry.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
from pathlib import Path
from typing import Any, BinaryIO

import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from opencsbs.clouds.sandbox.volumes import changes_dir, change_log, cow_dir, record_change, volume_file, write_at
from opencsbs.core.facts import BAREMETAL_SERVER, NOVA_STATUSES, NOVA_TASK_STATES, SERVER
from opencsbs.db.base import new_id
from opencsbs.clouds.sandbox.models import SandboxAttachment, SandboxServer, SandboxVolume

GIB = 1024**3
#: the largest ``size_gb`` the database column holds (a 32-bit integer on PostgreSQL)
MAX_SIZE_GB = 2**31 - 1
SERVER_TYPES = (SERVER, BAREMETAL_SERVER)
_SERVER_KEYS = {"id", "name", "type", "resource_type", "status", "task_state", "availability_zone", "volumes",
                "flavor"}
_VOLUME_KEYS = {"id", "name", "size_gb", "bootable", "shareable", "volume_type", "service_type", "status",
                "availability_zone", "device"}


class InventoryError(ValueError):
    """The inventory file or a sandbox change is invalid."""


def ensure_volume_file(volumes_dir: Path, volume: SandboxVolume) -> Path:
    """Create (sparse) or grow the file of ``volume`` to ``size_gb`` GiB; never shrinks.

    Raises :class:`InventoryError` when the file system cannot hold a file that large (a file this call created
    is removed again).
    """
    path = volume_file(volumes_dir, volume.id)
    path.parent.mkdir(parents=True, exist_ok=True)
    size = volume.size_gb * GIB
    existed = path.exists()
    with open(path, "ab") as fh:
        if fh.tell() < size:
            grown = fh.tell() > 0
            try:
                fh.truncate(size)
            except (OSError, OverflowError) as exc:
                if not existed:
                    path.unlink(missing_ok=True)
                raise InventoryError(f"volume {volume.id}: cannot make its {volume.size_gb} GiB file: {exc}") from None
            if grown:
                record_change(volumes_dir, volume.id)
    return path


def _device(index: int) -> str:
    return "/dev/vd" + "abcdefghijklmnopqrstuvwxyz"[index] if index < 26 else f"/dev/vd{index}"


def check_status(value: Any, where: str) -> str:
    """``value`` upper-cased if it is one of Nova's server statuses, else :class:`InventoryError`."""
    status = str(value).upper()
    if status not in NOVA_STATUSES:
        raise InventoryError(f"{where}: status must be one of {', '.join(NOVA_STATUSES)}, got {value!r}")
    return status


def check_task_state(value: Any, where: str) -> str | None:
    """``value`` if it is None or one of Nova's task states (lower case), else :class:`InventoryError`."""
    if value is None:
        return None
    state = str(value).lower()
    if state not in NOVA_TASK_STATES:
        raise InventoryError(f"{where}: task_state must be one of {', '.join(NOVA_TASK_STATES)}, got {value!r}")
    return state


def _check_lengths(row: Any, what: str) -> None:
    """Refuse string values longer than their columns (PostgreSQL would raise a DataError; SQLite stores them)."""
    for column in row.__table__.columns:
        limit = getattr(column.type, "length", None)
        value = getattr(row, column.key, None)
        if limit and isinstance(value, str) and len(value) > limit:
            raise InventoryError(f"{what}: {column.key} must be at most {limit} characters")


_PROJECT_KEYS = {"servers", "volumes"}


def _check_keys(entry: dict, allowed: set[str], what: str) -> None:
    """Raise :class:`InventoryError` ``"<what>: unknown key(s) ['x'] (did you mean 'y'?)"`` for keys outside
    ``allowed`` (the nearest valid name by ``difflib``, when one is close)."""
    import difflib

    unknown = sorted(str(k) for k in set(entry) - allowed)
    if unknown:
        hints = [f"{key!r}" for k in unknown for key in difflib.get_close_matches(k, sorted(allowed), n=1)]
        hint = f" (did you mean {', '.join(hints)}?)" if hints else ""
        raise InventoryError(f"{what}: unknown key(s) {unknown}{hint}")


def _upsert_volume(session: Session, project_id: str, spec: dict, volumes_dir: Path) -> SandboxVolume:
    if not isinstance(spec, dict):
        raise InventoryError(f"project {project_id}: a volume must be a mapping, got {spec!r}")
    _check_keys(spec, _VOLUME_KEYS, f"volume {spec.get('id', spec.get('name', '?'))}")
    vid = str(spec.get("id") or new_id())
    volume = session.get(SandboxVolume, vid)
    if volume is None:
        if "size_gb" not in spec:
            raise InventoryError(f"volume {vid}: size_gb is required")
        volume = SandboxVolume(id=vid, project_id=project_id, size_gb=1)
        session.add(volume)
    elif volume.project_id != project_id:
        raise InventoryError(f"volume {vid} already belongs to another project")
    for key in ("name", "volume_type", "service_type", "availability_zone", "status"):
        if key in spec:
            setattr(volume, key, spec[key])
    for key in ("bootable", "shareable"):
        if key in spec:
            setattr(volume, key, bool(spec[key]))
    if "size_gb" in spec:
        size = spec["size_gb"]
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise InventoryError(f"volume {vid}: size_gb must be a positive integer")
        if size > MAX_SIZE_GB:
            raise InventoryError(f"volume {vid}: size_gb must be at most {MAX_SIZE_GB}")
        volume.size_gb = size
    _check_lengths(volume, f"volume {vid}")
    session.flush()
    ensure_volume_file(volumes_dir, volume)
    return volume


def _upsert_server(session: Session, project_id: str, spec: dict, volumes_dir: Path) -> SandboxServer:
    if not isinstance(spec, dict):
        raise InventoryError(f"project {project_id}: a server must be a mapping, got {spec!r}")
    _check_keys(spec, _SERVER_KEYS, f"server {spec.get('id', spec.get('name', '?'))}")
    sid = str(spec.get("id") or new_id())
    server = session.get(SandboxServer, sid)
    if server is None:
        server = SandboxServer(id=sid, project_id=project_id)
        session.add(server)
    elif server.project_id != project_id:
        raise InventoryError(f"server {sid} already belongs to another project")
    rtype = spec.get("type", spec.get("resource_type", server.resource_type or SERVER))
    if rtype not in SERVER_TYPES:
        raise InventoryError(f"server {sid}: type must be one of {SERVER_TYPES}, got {rtype!r}")
    server.resource_type = rtype
    server.name = spec.get("name", server.name or "")
    server.status = check_status(spec.get("status", server.status or "ACTIVE"), f"server {sid}")
    server.task_state = check_task_state(spec.get("task_state", None), f"server {sid}")
    server.availability_zone = spec.get("availability_zone", server.availability_zone)
    server.flavor = spec.get("flavor", server.flavor)
    _check_lengths(server, f"server {sid}")
    session.flush()
    if "volumes" in spec:
        vols = spec["volumes"] or []
        if not isinstance(vols, list):
            raise InventoryError(f"server {sid}: volumes must be a list")
        server.attachments.clear()
        session.flush()
        for index, vspec in enumerate(vols):
            volume = _upsert_volume(session, project_id, vspec, volumes_dir)
            device = vspec.get("device") or _device(index)
            session.add(SandboxAttachment(server_id=sid, volume_id=volume.id, device=device))
            volume.status = "in-use"
        session.flush()
    return server


def load_inventory(session: Session, data: dict[str, Any], volumes_dir: Path) -> dict[str, int]:
    """Upsert everything in an inventory mapping. Returns counts ``{"servers": n, "volumes": m}``.

    Raises :class:`InventoryError`; the caller's transaction should then roll back (nothing half-loaded).
    """
    if not isinstance(data, dict) or not isinstance(data.get("projects"), dict):
        raise InventoryError("inventory must be a mapping with a 'projects' mapping")
    _check_keys(data, {"projects"}, "inventory")
    servers = volumes = 0
    seen: dict[str, str] = {}
    for project_id, project in data["projects"].items():
        project = project or {}
        if not isinstance(project, dict):
            raise InventoryError(f"project {project_id}: must be a mapping")
        _check_keys(project, _PROJECT_KEYS, f"project {project_id}")
        for sspec in project.get("servers") or []:
            if isinstance(sspec, dict) and sspec.get("id") is not None:
                sid = str(sspec["id"])
                if sid in seen:
                    raise InventoryError(f"server {sid}: listed twice (projects {seen[sid]} and {project_id})"
                                         if seen[sid] != str(project_id) else
                                         f"server {sid}: listed twice in project {project_id}")
                seen[sid] = str(project_id)
        for vspec in project.get("volumes") or []:
            _upsert_volume(session, str(project_id), vspec, volumes_dir)
            volumes += 1
        for sspec in project.get("servers") or []:
            _upsert_server(session, str(project_id), sspec, volumes_dir)
            servers += 1
            volumes += len(sspec.get("volumes") or [])
    return {"servers": servers, "volumes": volumes}


def load_inventory_file(session: Session, path: Path, volumes_dir: Path) -> dict[str, int]:
    """:func:`load_inventory` on a YAML file."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise InventoryError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from exc
    return load_inventory(session, data, volumes_dir)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line for a YAML error: ``line L, column C: <problem>``."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark is not None else problem


def list_servers(session: Session, project_id: str | None = None) -> list[SandboxServer]:
    """Servers (with attachments and volumes loaded), optionally of one project, by project then name."""
    query = select(SandboxServer).options(
        selectinload(SandboxServer.attachments).selectinload(SandboxAttachment.volume)
    )
    if project_id:
        query = query.where(SandboxServer.project_id == project_id)
    return list(session.scalars(query.order_by(SandboxServer.project_id, SandboxServer.name)))


def list_volumes(session: Session, project_id: str | None = None) -> list[SandboxVolume]:
    """Volumes, optionally of one project."""
    query = select(SandboxVolume)
    if project_id:
        query = query.where(SandboxVolume.project_id == project_id)
    return list(session.scalars(query.order_by(SandboxVolume.project_id, SandboxVolume.name)))


def set_server(session: Session, server_id: str, **changes: Any) -> SandboxServer:
    """Change a server's ``status``, ``task_state``, ``availability_zone`` or ``name``.

    ``task_state=""`` clears the task. Raises :class:`InventoryError` for an unknown id or key, a status outside
    Nova's (``core.facts.NOVA_STATUSES``, any case) or a task state outside Nova's (``NOVA_TASK_STATES``).
    """
    server = session.get(SandboxServer, server_id)
    if server is None:
        raise InventoryError(f"no sandbox server {server_id}")
    for key, value in changes.items():
        if value is None:
            continue
        if key not in {"status", "task_state", "availability_zone", "name"}:
            raise InventoryError(f"cannot change {key}")
        if key == "status":
            value = check_status(value, f"server {server_id}")
        if key == "task_state":
            value = check_task_state(value or None, f"server {server_id}")
        setattr(server, key, value)
    _check_lengths(server, f"server {server_id}")
    return server


def delete_resource(session: Session, resource_id: str, volumes_dir: Path) -> str:
    """Delete a sandbox server (detaching its volumes) or volume (and its file). Returns what was deleted."""
    server = session.get(SandboxServer, resource_id)
    if server is not None:
        for att in list(server.attachments):
            if len(att.volume.attachments) <= 1:
                att.volume.status = "available"
        session.delete(server)
        return "server"
    volume = session.get(SandboxVolume, resource_id)
    if volume is not None:
        session.delete(volume)
        volume_file(volumes_dir, resource_id).unlink(missing_ok=True)
        change_log(volumes_dir, resource_id).unlink(missing_ok=True)
        shutil.rmtree(changes_dir(volumes_dir, resource_id), ignore_errors=True)
        shutil.rmtree(cow_dir(volumes_dir, resource_id), ignore_errors=True)
        return "volume"
    raise InventoryError(f"no sandbox server or volume {resource_id}")


def write_volume(volumes_dir: Path, volume: SandboxVolume, offset: int, source: BinaryIO) -> int:
    """Copy ``source`` into the volume at byte ``offset``. Returns bytes written.

    Holds the volume's exclusive lock while writing (a snapshot being taken makes it wait), copies the old bytes
    into live snapshots first and records the written range for change tracking. Raises :class:`InventoryError`
    if the data would run past the volume's end.
    """
    path = ensure_volume_file(volumes_dir, volume)
    size = volume.size_gb * GIB
    if offset < 0:
        raise InventoryError(f"volume {volume.id}: offset must not be negative")
    written = 0
    with open(path, "r+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        while True:
            block = source.read(4 * 1024 * 1024)
            if not block:
                break
            if offset + written + len(block) > size:
                raise InventoryError(f"volume {volume.id}: write past its end ({size} bytes)")
            write_at(volumes_dir, volume.id, fh.fileno(), offset + written, block)
            written += len(block)
        os.fsync(fh.fileno())
    return written


def hash_volume(volumes_dir: Path, volume_id: str) -> str:
    """SHA-256 hex of every byte of a volume file."""
    digest = hashlib.sha256()
    with open(volume_file(volumes_dir, volume_id), "rb") as fh:
        for block in iter(lambda: fh.read(4 * 1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()
