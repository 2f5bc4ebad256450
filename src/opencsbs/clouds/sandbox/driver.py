"""The sandbox driver: answers inventory questions from the ``sandbox_*`` tables and moves the bytes of the
sparse volume files (``clouds/sandbox/volumes.py``).

One :meth:`get_servers` call is one cloud call (a column SELECT of the servers and one of their attached
volumes, the ids passed as one JSON array), whatever the batch size.

Snapshots: ``<data_dir>/sandbox/snapshots/<name>/`` holds a copy-on-write overlay of every disk of a server
(``clouds/sandbox/volumes.py``), registered while all its volume files are exclusively locked (writers wait: the
server is "frozen" for that instant), plus ``snapshot.json`` written last, which marks the snapshot complete.
Change tokens are snapshot names.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from opencsbs.clouds.base import CloudContext, CloudDriver, ServerSnapshot, VolumeSnapshot
from opencsbs.clouds.sandbox import volumes as vf
from opencsbs.core import codes
from opencsbs.core.blocks import BlockReader, BlockWriter, Range
from opencsbs.core.errors import CSBSError
from opencsbs.core.facts import ServerFacts, VolumeFacts
from opencsbs.db.base import RawQuery, in_ids
from opencsbs.clouds.sandbox.models import SandboxAttachment, SandboxServer, SandboxVolume

GIB = 1024**3

#: Columns read by get_servers.
_SERVER_COLUMNS = (
    SandboxServer.id, SandboxServer.project_id, SandboxServer.name, SandboxServer.resource_type,
    SandboxServer.status, SandboxServer.task_state, SandboxServer.availability_zone, SandboxServer.flavor,
)
_VOLUME_COLUMNS = (
    SandboxVolume.id, SandboxVolume.name, SandboxVolume.size_gb, SandboxVolume.bootable, SandboxVolume.shareable,
    SandboxVolume.volume_type, SandboxVolume.service_type, SandboxVolume.status, SandboxVolume.availability_zone,
)

#: get_servers' three statements (ids as one JSON array parameter ``ids``; see db.base.in_ids / RawQuery)
_PROJECT_SERVERS = RawQuery(lambda d: select(*_SERVER_COLUMNS).where(
    in_ids(SandboxServer.id, bindparam("ids"), d), SandboxServer.project_id == bindparam("project_id")))
_ANY_SERVERS = RawQuery(lambda d: select(*_SERVER_COLUMNS).where(in_ids(SandboxServer.id, bindparam("ids"), d)))
_ATTACHED_VOLUMES = RawQuery(lambda d: (
    select(SandboxAttachment.server_id, SandboxAttachment.device, *_VOLUME_COLUMNS)
    .join(SandboxVolume, SandboxVolume.id == SandboxAttachment.volume_id)
    .where(in_ids(SandboxAttachment.server_id, bindparam("ids"), d))
    .order_by(SandboxAttachment.server_id, SandboxAttachment.device)
))


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
    ``volumes_dir``: where volume files live; ``host``: the machine holding them (placement: a sandbox job runs
    only on a worker of that host, ``sandbox:<host>``; default the system's host name)."""

    name = "sandbox"

    def __init__(self, sessions: sessionmaker[Session], volumes_dir: Path, host: str | None = None):
        super().__init__()
        self.sessions = sessions
        self.volumes_dir = Path(volumes_dir)
        if host is None:
            import socket

            host = socket.gethostname()
        self.host = host

    def placement_needs(self, server: ServerFacts) -> tuple[str, ...]:
        """``sandbox:<host>``: the volume files are on this driver's host."""
        return (f"sandbox:{self.host}",)

    def placement_capabilities(self) -> tuple[str, ...]:
        """``sandbox:<host>``: a worker reads the volume files of its own host."""
        return (f"sandbox:{self.host}",)

    def volume_path(self, volume_id: str) -> Path:
        """The sparse file holding a volume's bytes."""
        return self.volumes_dir / f"{volume_id}.img"

    def get_servers(self, ctx: CloudContext, server_ids: Sequence[str]) -> dict[str, ServerFacts]:
        """One cloud call whatever ``len(server_ids)``: a lean column SELECT of the servers, then one of their
        attachments joined with the volumes (no ORM objects: a 1,000-server batch costs milliseconds)."""
        ids = list(dict.fromkeys(server_ids))
        self.count_call()
        if not ids:
            return {}
        with self.sessions() as session:
            conn = session.connection()
            if ctx.all_tenants:
                rows = _ANY_SERVERS.rows(conn, ids=json.dumps(ids))
            else:
                rows = _PROJECT_SERVERS.rows(conn, ids=json.dumps(ids), project_id=ctx.project_id)
            if not rows:
                return {}
            disks: dict[str, list[VolumeFacts]] = {}
            attached = _ATTACHED_VOLUMES.rows(conn, ids=json.dumps([r[0] for r in rows]))
            for sid, device, vid, name, size, boot, share, vtype, stype, status, az in attached:
                # positional: VolumeFacts(id, name, size_gb, bootable, shareable, volume_type, service_type,
                # status, availability_zone, device)
                disks.setdefault(sid, []).append(
                    VolumeFacts(vid, name, size, bool(boot), bool(share), vtype, stype, status, az, device)
                )
        # positional: ServerFacts(id, project_id, name, resource_type, status, task_state, availability_zone,
        # volumes, flavor); SQLite hands JSON columns over as text
        return {
            sid: ServerFacts(sid, project, name, rtype, status, task, az, tuple(disks.get(sid, ())),
                             json.loads(flavor) if isinstance(flavor, str) else flavor)
            for sid, project, name, rtype, status, task, az, flavor in rows
        }

    def list_server_ids(self, ctx: CloudContext) -> list[str]:
        """The project's server ids (every project's with ``all_tenants``), one SELECT."""
        self.count_call()
        query = select(SandboxServer.id).order_by(SandboxServer.id)
        if not ctx.all_tenants:
            query = query.where(SandboxServer.project_id == ctx.project_id)
        with self.sessions() as session:
            return list(session.scalars(query))

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
        for volume, _ in disks:  # a partial earlier attempt of the same name
            vf.unregister_snapshot(self.volumes_dir, volume.id, name)
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        paths = [vf.volume_file(self.volumes_dir, v.id) for v, _ in disks]
        snaps = []
        with vf.locked_volumes(paths, exclusive=True):
            for (volume, device), path in zip(disks, paths):
                size = os.stat(path).st_size
                vf.register_snapshot(self.volumes_dir, volume.id, name, folder, size)
                vf.rotate_change_log(self.volumes_dir, volume.id, name)
                snaps.append(
                    VolumeSnapshot(
                        volume_id=volume.id,
                        snapshot_id=f"{name}:{volume.id}",
                        size=size,
                        device=device,
                        bootable=volume.bootable,
                        change_token=name,
                        since=(since or {}).get(volume.id),
                        handle={"volume": str(path), "folder": str(folder)},
                    )
                )
        snapshot = ServerSnapshot(server_id=server_id, name=name, volumes=tuple(snaps), handle={"dir": str(folder)})
        tmp = folder / "snapshot.json.tmp"
        tmp.write_text(json.dumps(snapshot.to_dict()))
        os.replace(tmp, meta)
        return snapshot

    def open_snapshot(self, snapshot: VolumeSnapshot) -> BlockReader:
        return vf.CowSnapshotReader(Path(snapshot.handle["volume"]), Path(snapshot.handle["folder"]),
                                    snapshot.volume_id, snapshot.size)

    def changed_ranges(self, snapshot: VolumeSnapshot) -> Sequence[Range] | None:
        if not snapshot.since or not snapshot.change_token:
            return None
        return vf.changes_between(self.volumes_dir, snapshot.volume_id, snapshot.since, snapshot.change_token)

    def delete_snapshot(self, snapshot: ServerSnapshot, keep_change_token: bool = True) -> None:
        self.count_call()
        for volume in snapshot.volumes:
            vf.unregister_snapshot(self.volumes_dir, volume.volume_id, snapshot.name)
        shutil.rmtree(self.snapshots_dir / snapshot.name, ignore_errors=True)

    def prune_change_tracking(self, needed: dict[str, set[str]]) -> int:
        root = self.volumes_dir / "changes"
        if not root.is_dir():
            return 0
        dropped = 0
        for cdir in sorted(root.iterdir()):
            if cdir.is_dir():
                dropped += vf.prune_change_logs(self.volumes_dir, cdir.name, needed.get(cdir.name, set()))
        return dropped

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
