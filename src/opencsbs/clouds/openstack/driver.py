"""The OpenStack driver's inventory side, through openstacksdk.

Whose eyes: with ``auth.mode = keystone`` and ``cloud.openstack_pass_token`` (the default) the caller's own
Keystone token is re-scoped to the caller's project (keystoneauth ``v3.Token``) and Nova, Cinder and Ironic show
exactly what that project may see. Otherwise the service user of the ``clouds.yaml`` entry ``cloud.openstack_cloud``
asks on the project's behalf (``all_tenants`` + ``project_id`` filters; it needs the admin role).

Cost per batch, whatever its size (each HTTP request is counted with :meth:`Inventory.count_call`):

* Nova ``GET /servers/detail`` of the project (one call per page of the server's maximum page size, 1000 by
  default: the count depends on the project's size, never on the batch's),
* Cinder ``GET /volumes/detail`` of the project (skipped when no asked server was found),
* Ironic ``GET /nodes/detail?associated=True`` when a bare-metal endpoint is in use, plus
  ``GET /volume/targets?detail=True`` when a node without Nova volumes is among the asked ones,
* when asked ids are still missing: Nova ``GET /servers/detail?changes-since=...`` (service user: also
  ``deleted=True``) over the last ``openstack_deleted_lookback_hours``, so a deleted or soft-deleted server answers
  "terminated" (CSBS.6001) and not "not found" (CSBS.6000).

Plus, once per new token, its re-scoping (one Keystone call); API version discovery is cached across sessions.

Data side: :class:`OpenStackDriver` adds :class:`~opencsbs.clouds.openstack.datapath.RbdDataPath` (Cinder volumes
on Ceph RBD, through librbd) when ``cloud.openstack_rbd_backends`` is set, checked when the driver is built;
otherwise :func:`build_openstack_driver` gives the inventory-only :class:`OpenStackInventory`, and backups and
restores fail with CSBS.9998 (:func:`opencsbs.clouds.base.data_path`).

Errors: the cloud unreachable, timing out (``openstack_timeout``), answering 5xx, or refusing the service user
(401/403) raise :class:`CloudUnavailable` (503, CSBS.9999). A caller's token the cloud refuses (401) answers 401
(APIGW.0301), never a verdict.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from cachetools import TTLCache

from opencsbs.clouds.base import (CloudContext, CloudDriver, CloudUnavailable, Inventory, ScratchVolume,
                                  ServerSnapshot, VolumeSnapshot)
from opencsbs.clouds.openstack.datapath import RbdDataPath
from opencsbs.clouds.openstack.translate import baremetal_server_facts, nova_server_facts
from opencsbs.core import codes
from opencsbs.core.blocks import BlockReader, BlockWriter, Range
from opencsbs.core.errors import CSBSError
from opencsbs.core.facts import ServerFacts

log = logging.getLogger(__name__)

#: how long a connection made from a caller's token is reused (its re-scoped token lives longer)
_TOKEN_CONN_SECONDS = 300


class _Refused(Exception):
    """The cloud refused the credentials used (HTTP 401)."""


def build_openstack_driver(settings) -> Inventory:
    """:class:`OpenStackDriver` when ``cloud.openstack_rbd_backends`` is set, else the inventory-only
    :class:`OpenStackInventory`. Raises ``ValueError`` (openstacksdk missing, RBD settings incomplete)."""
    if settings.cloud.openstack_rbd_backends:
        return OpenStackDriver(settings)
    return OpenStackInventory(settings)


class OpenStackInventory(Inventory):
    """Servers of an OpenStack cloud, inventory only. Settings read: ``cloud.openstack_*`` and
    ``auth.mode``/``auth.keystone_url`` (see ``config.CloudSettings``). Connections are made lazily: building the
    driver never calls the cloud."""

    name = "openstack"

    def __init__(self, settings) -> None:
        super().__init__()
        try:
            import openstack  # noqa: F401
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ValueError("cloud.driver openstack needs openstacksdk (pip install 'opencsbs[openstack]')") from exc
        self.settings = settings
        self.cloud = settings.cloud
        self.pass_token = settings.auth.mode == "keystone" and self.cloud.openstack_pass_token
        self.service_types = dict(self.cloud.openstack_volume_service_types)
        self._lock = threading.Lock()
        self._service_conn = None
        self._token_conns: TTLCache[str, Any] = TTLCache(maxsize=512, ttl=_TOKEN_CONN_SECONDS)
        self._discovery_cache: dict = {}

    # -- connections --------------------------------------------------------------------------------------------
    def _count_response(self, response, *_args, **_kwargs):
        self.count_call()
        return response

    def _watch(self, ks_session) -> None:
        ks_session.session.hooks.setdefault("response", []).append(self._count_response)

    def _cloud_region(self):
        import openstack.config
        import openstack.exceptions

        if not self.cloud.openstack_cloud:
            raise CloudUnavailable("openstack driver (cloud.openstack_cloud is not set)")
        files = [str(self.cloud.openstack_clouds_yaml)] if self.cloud.openstack_clouds_yaml else None
        try:
            config = openstack.config.OpenStackConfig(config_files=files, load_envvars=False)
            return config.get_one(
                cloud=self.cloud.openstack_cloud,
                region_name=self.cloud.openstack_region,
                api_timeout=self.cloud.openstack_timeout,
            )
        except openstack.exceptions.ConfigException as exc:
            raise CloudUnavailable(f"openstack driver configuration ({exc})") from exc

    def _service_connection(self):
        import openstack.connection

        with self._lock:
            if self._service_conn is None:
                region = self._cloud_region()
                conn = openstack.connection.Connection(config=region)
                conn.session.discovery_cache = self._discovery_cache
                self._watch(conn.session)
                self._service_conn = conn
            return self._service_conn

    def _auth_url(self) -> str:
        url = self.cloud.openstack_auth_url or self.settings.auth.keystone_url
        if not url:
            url = (self._cloud_region().config.get("auth") or {}).get("auth_url")
        if not url:
            raise CloudUnavailable("openstack driver (no Keystone URL for the caller's token)")
        return url

    def _token_connection(self, ctx: CloudContext):
        import openstack.connection
        from keystoneauth1 import session as ks_session
        from keystoneauth1.identity import v3

        key = hashlib.sha256(f"{ctx.project_id}\0{ctx.auth_token}".encode()).hexdigest()
        with self._lock:
            conn = self._token_conns.get(key)
        if conn is not None:
            return conn
        auth = v3.Token(auth_url=self._auth_url(), token=ctx.auth_token, project_id=ctx.project_id)
        sess = ks_session.Session(auth=auth, timeout=self.cloud.openstack_timeout,
                                  discovery_cache=self._discovery_cache)
        self._watch(sess)
        conn = openstack.connection.Connection(session=sess, region_name=self.cloud.openstack_region,
                                               app_name="opencsbs")
        with self._lock:
            self._token_conns[key] = conn
        return conn

    def _connection(self, ctx: CloudContext) -> tuple[Any, bool]:
        """``(connection, scoped)``: scoped connections see only the caller's project (no project filters)."""
        if self.pass_token and ctx.auth_token and not ctx.all_tenants:
            return self._token_connection(ctx), True
        return self._service_connection(), False

    # -- the calls ----------------------------------------------------------------------------------------------
    def _project_filters(self, ctx: CloudContext, scoped: bool) -> dict[str, Any]:
        if scoped:
            return {}
        if ctx.all_tenants:
            return {"all_projects": True}
        return {"all_projects": True, "project_id": ctx.project_id}

    def _use_baremetal(self, conn) -> bool:
        if self.cloud.openstack_baremetal is not None:
            return self.cloud.openstack_baremetal
        try:
            return bool(conn.session.get_endpoint(service_type="baremetal", interface="public",
                                                  region_name=self.cloud.openstack_region))
        except Exception:  # noqa: BLE001 - keystoneauth raises EndpointNotFound (and friends) when absent
            return False

    def _fetch(self, conn, ctx: CloudContext, scoped: bool, wanted: set[str]) -> dict[str, ServerFacts]:
        filters = self._project_filters(ctx, scoped)
        servers = {s.id: s for s in conn.compute.servers(details=True, **filters)
                   if s.id in wanted}
        nodes = []
        if self._use_baremetal(conn):
            nodes = [n for n in conn.baremetal.nodes(details=True, associated=True)
                     if n.instance_id in wanted]
        volumes: dict[str, Any] = {}
        if servers or nodes:
            volumes = {v.id: v for v in conn.block_storage.volumes(details=True, **filters)}
        found = {sid: nova_server_facts(s, volumes, self.service_types) for sid, s in servers.items()}
        if nodes:
            targets: dict[str, list] = {}
            if any(not (found.get(n.instance_id) and found[n.instance_id].volumes) for n in nodes):
                for t in conn.baremetal.volume_targets(details=True):
                    targets.setdefault(t.node_id, []).append(t)
            for node in nodes:
                found[node.instance_id] = baremetal_server_facts(
                    node, found.get(node.instance_id), targets.get(node.id, []), volumes, self.service_types
                )
        missing = wanted - found.keys()
        hours = self.cloud.openstack_deleted_lookback_hours
        if missing and hours > 0:
            # Nova lists deleted and soft-deleted servers changed since a time to any user (admins: deleted=True
            # narrows it to those); the default listing above leaves them out
            since = (datetime.now(UTC) - timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")
            extra = {} if scoped else {"deleted_only": True}
            for s in conn.compute.servers(details=True, changes_since=since, **extra, **filters):
                if s.id in missing and s.id not in found:
                    found[s.id] = nova_server_facts(s, {}, self.service_types)
        return found

    def get_servers(self, ctx: CloudContext, server_ids: Sequence[str]) -> dict[str, ServerFacts]:
        wanted = set(server_ids)
        if not wanted:
            return {}
        conn, scoped = self._connection(ctx)
        try:
            return self._fetch(conn, ctx, scoped, wanted)
        except CSBSError:
            raise
        except Exception as exc:  # noqa: BLE001 - every cloud failure becomes one clear answer
            raise self._translate_error(exc, scoped) from exc

    def list_server_ids(self, ctx: CloudContext) -> list[str]:
        """Ids of the project's Nova servers (bare-metal instances are Nova servers too), one listing call."""
        conn, scoped = self._connection(ctx)
        try:
            return [s.id for s in conn.compute.servers(details=False, **self._project_filters(ctx, scoped))]
        except CSBSError:
            raise
        except Exception as exc:  # noqa: BLE001 - every cloud failure becomes one clear answer
            raise self._translate_error(exc, scoped) from exc

    def _translate_error(self, exc: Exception, scoped: bool) -> CSBSError:
        import openstack.exceptions
        from keystoneauth1 import exceptions as ks_exc

        status = None
        if isinstance(exc, openstack.exceptions.HttpException):
            status = exc.status_code
        elif isinstance(exc, ks_exc.HttpError):
            status = exc.http_status
        if scoped and (status == 401 or isinstance(exc, ks_exc.Unauthorized)):
            with self._lock:
                self._token_conns.clear()
            return CSBSError(codes.AUTH_FAILED, "the cloud refused the token")
        if isinstance(exc, ks_exc.Unauthorized) or status == 401:
            log.error("the OpenStack cloud refused opencsbs's service user (check cloud.openstack_cloud)")
            with self._lock:
                self._service_conn = None
            return CloudUnavailable("asking the cloud (service user refused)")
        if status == 403:
            log.error("the OpenStack cloud denied a listing to opencsbs (the service user needs the admin role)")
            return CloudUnavailable("asking the cloud (not allowed)")
        if isinstance(exc, (ks_exc.ConnectTimeout, ks_exc.RequestTimeout)):
            return CloudUnavailable("asking the cloud (timed out)")
        if isinstance(exc, (ks_exc.ConnectFailure, ks_exc.ConnectionError)):
            return CloudUnavailable("asking the cloud (unreachable)")
        if isinstance(exc, (ks_exc.EndpointNotFound, ks_exc.EmptyCatalog, ks_exc.DiscoveryFailure)):
            return CloudUnavailable("asking the cloud (service not in the catalog)")
        if status is not None:
            log.warning("OpenStack answered HTTP %s: %s", status, exc)
            return CloudUnavailable(f"asking the cloud (HTTP {status})")
        log.exception("OpenStack request failed")
        return CloudUnavailable(f"asking the cloud ({type(exc).__name__})")

    def close(self) -> None:
        with self._lock:
            conns = [self._service_conn, *self._token_conns.values()]
            self._service_conn = None
            self._token_conns.clear()
        for conn in conns:
            if conn is not None:
                try:
                    conn.close()
                except Exception:  # noqa: BLE001
                    pass


class OpenStackDriver(OpenStackInventory, CloudDriver):
    """:class:`OpenStackInventory` plus the data path of Cinder volumes on Ceph RBD
    (:class:`~opencsbs.clouds.openstack.datapath.RbdDataPath`, settings ``cloud.openstack_rbd_backends``, which
    must not be empty). Raises ``ValueError`` naming what is missing from the RBD settings."""

    def __init__(self, settings) -> None:
        super().__init__(settings)
        if not self.cloud.openstack_rbd_backends:
            raise ValueError("cloud.openstack_rbd_backends is empty: the OpenStack driver has no data path")
        self.datapath = RbdDataPath(self.cloud, self._service_connection,
                                    lambda exc: self._translate_error(exc, False), self.count_call)
        self.datapath.check_settings()  # ValueError: one line saying what is missing
        self.data_backends = self.datapath.backends

    def placement_needs(self, server: ServerFacts) -> tuple[str, ...]:
        """``rbd:<backend>`` of each disk whose Cinder backend is known: a worker needs that Ceph's settings."""
        return tuple(sorted({f"rbd:{v.backend}" for v in server.volumes if v.backend}))

    def placement_capabilities(self) -> tuple[str, ...]:
        """``rbd:<backend>`` of every backend of ``cloud.openstack_rbd_backends``."""
        return tuple(sorted(f"rbd:{b}" for b in self.data_backends or ()))

    def snapshot_server(self, ctx: CloudContext, server_id: str, name: str,
                        since: dict[str, str] | None = None) -> ServerSnapshot:
        return self.datapath.snapshot_server(ctx, server_id, name, since)

    def open_snapshot(self, snapshot: VolumeSnapshot) -> BlockReader:
        return self.datapath.open_snapshot(snapshot)

    def changed_ranges(self, snapshot: VolumeSnapshot) -> Sequence[Range] | None:
        return self.datapath.changed_ranges(snapshot)

    def delete_snapshot(self, snapshot: ServerSnapshot, keep_change_token: bool = True) -> None:
        return self.datapath.delete_snapshot(snapshot, keep_change_token)

    def prune_change_tracking(self, needed: dict[str, set[str]]) -> int:
        return self.datapath.prune_change_tracking(needed)

    def open_volume_writer(self, ctx: CloudContext, volume_id: str) -> BlockWriter:
        return self.datapath.open_volume_writer(ctx, volume_id)

    def open_scratch(self, volume_id: str | None, size: int, name: str) -> ScratchVolume | None:
        return self.datapath.open_scratch(volume_id, size, name)

    def remove_scratch(self, volume_id: str | None, name: str) -> None:
        self.datapath.remove_scratch(volume_id, name)

    def power_off(self, ctx: CloudContext, server_id: str) -> bool:
        return self.datapath.power_off(ctx, server_id)

    def power_on(self, ctx: CloudContext, server_id: str) -> None:
        return self.datapath.power_on(ctx, server_id)

    def close(self) -> None:
        self.datapath.close()
        super().close()
