"""The project's servers as the cloud driver sees them (an opencsbs extension: CSBS itself has no listing; its
console asks the compute service). Used by ``GET /opencsbs/v1/{project_id}/servers`` and the web console.

Cost: one driver ``list_server_ids`` call and one ``get_servers`` call, whatever the number of servers. Nothing
here judges protectability: clients ask ``check_protectable`` for that.
"""

from __future__ import annotations

from opencsbs.auth.base import Principal
from opencsbs.clouds.base import CloudContext
from opencsbs.core.listing import page_anchor
from opencsbs.core.facts import ServerFacts
from opencsbs.runtime import Runtime

DEFAULT_LIMIT = 1000


def list_servers(runtime: Runtime, principal: Principal, project_id: str, marker: str | None = None,
                 limit: int | None = None) -> list[dict]:
    """The servers of ``project_id`` sorted by name then id: ``{"id", "name", "resource_type", "status",
    "task_state", "availability_zone", "volumes": [{"id", "name", "size_gb", "bootable", "device"}]}``
    (``size_gb`` in GiB), those after server id ``marker``, at most ``limit`` (default 1000).

    Raises 400 CSBS.9001 for a marker that is not one of the project's servers; ``CloudUnavailable`` (503) when
    the driver cannot ask its cloud.
    """
    ctx = CloudContext(project_id=project_id, auth_token=principal.auth_token)
    ids = runtime.driver.list_server_ids(ctx)
    facts = runtime.driver.get_servers(ctx, ids) if ids else {}
    servers = sorted((s for s in facts.values() if s.project_id == project_id), key=lambda s: (s.name, s.id))
    if marker is not None:
        position = page_anchor(next((i for i, s in enumerate(servers) if s.id == marker), None), marker)
        servers = servers[position + 1:]
    servers = servers[:DEFAULT_LIMIT if limit is None else limit]
    return [
        {
            "id": s.id, "name": s.name, "resource_type": s.resource_type, "status": s.status,
            "task_state": s.task_state, "availability_zone": s.availability_zone,
            "volumes": [{"id": v.id, "name": v.name, "size_gb": v.size_gb, "bootable": v.bootable,
                         "device": v.device} for v in s.volumes],
        }
        for s in servers
    ]


def find_server(runtime: Runtime, server_id: str) -> ServerFacts | None:
    """Server ``server_id`` of any project as the cloud driver sees it (asked with the service's own
    credentials, every project), or ``None`` when the cloud has no such server."""
    return runtime.driver.get_servers(CloudContext(project_id="", all_tenants=True), [server_id]).get(server_id)


def project_server(runtime: Runtime, project_id: str, server_id: str,
                   auth_token: str | None = None) -> ServerFacts | None:
    """Server ``server_id`` if it is one of ``project_id``'s as the cloud driver sees it (asked with the caller's
    ``auth_token`` when it is scoped to the project, else with the service's credentials filtered to the
    project, as check_protectable asks), or ``None``: no such server, or another project's (never revealed).
    Raises ``CloudUnavailable`` (503) when the driver cannot ask its cloud."""
    ctx = CloudContext(project_id=project_id, auth_token=auth_token)
    found = runtime.driver.get_servers(ctx, [server_id]).get(server_id)
    return found if found is not None and found.project_id == project_id else None
