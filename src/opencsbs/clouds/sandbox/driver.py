"""The sandbox driver: answers inventory questions from the ``sandbox_*`` tables and moves the bytes of the
sparse volume files (``clouds/sandbox/volumes.py``).

One :meth:`get_servers` call is one cloud call (one SELECT of the servers with their attachments and volumes
loaded eagerly), whatever the batch size.

Snapshots: ``<data_dir>/sandbox/snapshots/<name>/<volume_id>.img`` are sparse copies of every disk of a server,
taken while all its volume files are exclusively locked (writers wait: the server is "frozen" for the copy),
plus ``snapshot.json`` written last, which marks the snapshot complete. Change tokens are snapshot names.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from opencsbs.clouds.base import CloudContext, CloudDriver, ServerSnapshot, VolumeSnapshot
from opencsbs.clouds.sandbox import volumes as vf
from opencsbs.core import codes
from opencsbs.core.blocks import BlockReader, BlockWriter, Range
from opencsbs.core.errors import CSBSError
from opencsbs.core.facts import ServerFacts, VolumeFacts
from opencsbs.db.models import SandboxAttachment, SandboxServer, SandboxVolume

GIB = 1024**3

#: SQLite allows 32766 bound parameters; stay well under it per IN list.
_IN_CHUNK = 900


def server_facts(server: SandboxServer) -> ServerFacts:
    """Translate a sandbox row (with attachments and volumes loaded) into :class:`ServerFacts`."""
    volumes = tuple(
        VolumeFacts(
            id=a.volume.id,
            name=a.volume.name,
            size_gb=a.volume.size_gb,
            bootable=a.volume.bootable,
            shareable=a.volume.shareable,
            volume_type=a.volume.volume_type,
            service_type=a.volume.service_type,
            status=a.volume.status,
            availability_zone=a.volume.availability_zone,
            device=a.device,
        )
        for a in server.attachments
    )
    return ServerFacts(
        id=server.id,
        project_id=server.project_id,
        name=server.name,
        resource_type=server.resource_type,
        status=server.status,
        task_state=server.task_state,
        availability_zone=server.availability_zone,
        volumes=volumes,
        flavor=server.flavor,
    )


class SandboxDriver(CloudDriver):
    """Driver of the built-in sandbox cloud. ``sessions``: the opencsbs session factory;
    ``volumes_dir``: where volume files live."""

    name = "sandbox"

    def __init__(self, sessions: sessionmaker[Session], volumes_dir: Path):
        super().__init__()
        self.sessions = sessions
        self.volumes_dir = Path(volumes_dir)

    def volume_path(self, volume_id: str) -> Path:
        """The sparse file holding a volume's bytes."""
        return self.volumes_dir / f"{volume_id}.img"

    def get_servers(self, ctx: CloudContext, server_ids: Sequence[str]) -> dict[str, ServerFacts]:
        ids = list(dict.fromkeys(server_ids))
        self.count_call()
        found: dict[str, ServerFacts] = {}
        with self.sessions() as session:
            for start in range(0, len(ids), _IN_CHUNK):
                chunk = ids[start : start + _IN_CHUNK]
                query = (
                    select(SandboxServer)
                    .where(SandboxServer.id.in_(chunk))
                    .options(selectinload(SandboxServer.attachments).selectinload(SandboxAttachment.volume))
                )
                if not ctx.all_tenants:
                    query = query.where(SandboxServer.project_id == ctx.project_id)
                for server in session.scalars(query):
                    found[server.id] = server_facts(server)
        return found

    # --- data side ------------------------------------------------------------------------------------------

    @property
    def snapshots_dir(self) -> Path:
        """Where snapshot copies live."""
        return self.volumes_dir.parent / "snapshots"

    def _server(self, session: Session, ctx: CloudContext, server_id: str) -> SandboxServer:
        query = (
            select(SandboxServer)
            .where(SandboxServer.id == server_id)
            .options(selectinload(SandboxServer.attachments).selectinload(SandboxAttachment.volume))
        )
        if not ctx.all_tenants:
            query = query.where(SandboxServer.project_id == ctx.project_id)
        server = session.scalars(query).first()
        if server is None:
            raise CSBSError(codes.SERVER_NOT_FOUND)
        return server

    def snapshot_server(
        self, ctx: CloudContext, server_id: str, name: str, since: dict[str, str] | None = None
    ) -> ServerSnapshot:
        self.count_call()
        folder = self.snapshots_dir / name
        meta = folder / "snapshot.json"
        if meta.exists():
            return ServerSnapshot.from_dict(json.loads(meta.read_text()))
        with self.sessions() as session:
            server = self._server(session, ctx, server_id)
            disks = [(a.volume, a.device) for a in server.attachments]
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        paths = [vf.volume_file(self.volumes_dir, v.id) for v, _ in disks]
        snaps = []
        with vf.locked_volumes(paths, exclusive=True):
            for (volume, device), path in zip(disks, paths):
                vf.sparse_copy(path, folder / f"{volume.id}.img")
            for volume, _ in disks:
                vf.rotate_change_log(self.volumes_dir, volume.id, name)
            for (volume, device), path in zip(disks, paths):
                snaps.append(
                    VolumeSnapshot(
                        volume_id=volume.id,
                        snapshot_id=f"{name}:{volume.id}",
                        size=os.stat(folder / f"{volume.id}.img").st_size,
                        device=device,
                        bootable=volume.bootable,
                        change_token=name,
                        since=(since or {}).get(volume.id),
                        handle={"path": str(folder / f"{volume.id}.img")},
                    )
                )
        snapshot = ServerSnapshot(server_id=server_id, name=name, volumes=tuple(snaps), handle={"dir": str(folder)})
        tmp = folder / "snapshot.json.tmp"
        tmp.write_text(json.dumps(snapshot.to_dict()))
        os.replace(tmp, meta)
        return snapshot

    def open_snapshot(self, snapshot: VolumeSnapshot) -> BlockReader:
        return vf.FileSnapshotReader(Path(snapshot.handle["path"]), snapshot.size)

    def changed_ranges(self, snapshot: VolumeSnapshot) -> Sequence[Range] | None:
        if not snapshot.since or not snapshot.change_token:
            return None
        return vf.changes_between(self.volumes_dir, snapshot.volume_id, snapshot.since, snapshot.change_token)

    def delete_snapshot(self, snapshot: ServerSnapshot) -> None:
        self.count_call()
        shutil.rmtree(self.snapshots_dir / snapshot.name, ignore_errors=True)

    def open_volume_writer(self, ctx: CloudContext, volume_id: str) -> BlockWriter:
        self.count_call()
        with self.sessions() as session:
            volume = session.get(SandboxVolume, volume_id)
            if volume is None or (volume.project_id != ctx.project_id and not ctx.all_tenants):
                raise CSBSError(codes.VOLUMES_NOT_IN_TARGET, volume_id)
            size = volume.size_gb * GIB
        return vf.VolumeWriter(self.volumes_dir, volume_id, size)

    def _set_status(self, ctx: CloudContext, server_id: str, status: str) -> str:
        self.count_call()
        with self.sessions() as session:
            server = self._server(session, ctx, server_id)
            before = server.status
            server.status = status
            session.commit()
        return before

    def power_off(self, ctx: CloudContext, server_id: str) -> bool:
        return self._set_status(ctx, server_id, "SHUTOFF") == "ACTIVE"

    def power_on(self, ctx: CloudContext, server_id: str) -> None:
        self._set_status(ctx, server_id, "ACTIVE")
