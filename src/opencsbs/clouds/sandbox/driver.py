"""The sandbox driver: answers inventory questions from the ``sandbox_*`` tables.

One :meth:`get_servers` call is one cloud call (one SELECT of the servers with their attachments and volumes
loaded eagerly), whatever the batch size.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from opencsbs.clouds.base import CloudContext, CloudDriver
from opencsbs.core.facts import ServerFacts, VolumeFacts
from opencsbs.db.models import SandboxAttachment, SandboxServer

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
