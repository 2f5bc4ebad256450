"""The libvirt driver's inventory side: the domains of one host as :class:`ServerFacts`.

Cost per batch: one ``virConnectGetAllDomainStats`` call (state and block devices of every domain), whatever the
batch size. What the stats do not carry (``<shareable/>``, boot order, ``<serial>``, metadata) comes from the
domain XML, which is cached per domain and dropped on libvirt's domain events (lifecycle, device added/removed,
metadata changed) and whenever the stats' disk list differs from the cached XML; a cache miss costs one
``virDomainGetXMLDesc`` (counted). In steady state a batch is one call.

The connection is read-only (``virConnectOpenReadOnly``); it is opened lazily and reopened after libvirt reports
it closed. Errors: libvirtd unreachable, or any libvirt error other than "no such domain", raises
:class:`CloudUnavailable` (HTTP 503, CSBS.9999).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from opencsbs.clouds.base import CloudContext, CloudDriver, CloudUnavailable
from opencsbs.clouds.libvirt.domain import DomainInfo, block_capacities, parse_domain_xml, server_facts
from opencsbs.core.facts import SERVER, ServerFacts

log = logging.getLogger(__name__)

_event_loop_lock = threading.Lock()
_event_loop_started = False


def _libvirt():
    try:
        import libvirt
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise CloudUnavailable("libvirt driver: the libvirt-python binding is not installed (pip install "
                               "'opencsbs[libvirt]')") from exc
    return libvirt


def _ensure_event_loop(libvirt) -> None:
    """Run libvirt's default event loop in a daemon thread (once per process; needed for events and keepalive)."""
    global _event_loop_started
    with _event_loop_lock:
        if _event_loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _event_loop_started = True


class LibvirtDriver(CloudDriver):
    """Servers of one libvirt host. Settings read: ``cloud.libvirt_uri`` (e.g. ``qemu:///system``,
    ``qemu+ssh://backup@host/system``), ``cloud.libvirt_az`` (the host's availability zone) and
    ``cloud.libvirt_project_id`` (owner of domains without project metadata; None: such domains are invisible)."""

    name = "libvirt"
    protectable_types = frozenset({SERVER})

    def __init__(self, settings) -> None:
        super().__init__()
        cloud = settings.cloud
        self.uri: str = cloud.libvirt_uri
        self.availability_zone: str | None = cloud.libvirt_az
        self.default_project: str | None = cloud.libvirt_project_id
        self._lock = threading.RLock()
        self._conn = None
        self._callbacks: list[int] = []
        self._xml_cache: dict[str, DomainInfo] = {}
        self._generation: dict[str, int] = {}

    # -- connection and cache -------------------------------------------------------------------------------
    def _connection(self):
        libvirt = _libvirt()
        with self._lock:
            if self._conn is not None:
                return self._conn
            _ensure_event_loop(libvirt)
            try:
                conn = libvirt.openReadOnly(self.uri)
                conn.setKeepAlive(5, 3)
                conn.registerCloseCallback(self._on_close, None)
                ids = [
                    conn.domainEventRegisterAny(None, event, self._on_domain_event, None)
                    for event in (
                        libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                        libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_ADDED,
                        libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED,
                        libvirt.VIR_DOMAIN_EVENT_ID_METADATA_CHANGE,
                    )
                ]
            except libvirt.libvirtError as exc:
                raise CloudUnavailable(f"libvirt {self.uri}: {exc.get_error_message()}") from exc
            self._conn, self._callbacks = conn, ids
            self._xml_cache.clear()
            return conn

    def _on_domain_event(self, _conn, dom, *_args) -> None:
        uuid = dom.UUIDString()
        with self._lock:
            self._xml_cache.pop(uuid, None)
            self._generation[uuid] = self._generation.get(uuid, 0) + 1

    def _on_close(self, conn, _reason, _opaque) -> None:
        with self._lock:
            if self._conn is conn:
                self._conn = None
                self._callbacks = []
                self._xml_cache.clear()

    def _drop_connection(self) -> None:
        with self._lock:
            conn, self._conn, self._callbacks = self._conn, None, []
            self._xml_cache.clear()
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - already broken
                pass

    def _domain_info(self, dom, uuid: str, block_names: frozenset[str]) -> DomainInfo | None:
        """The parsed XML of ``dom`` (cached); None when the domain vanished meanwhile."""
        libvirt = _libvirt()
        with self._lock:
            cached = self._xml_cache.get(uuid)
            generation = self._generation.get(uuid, 0)
        if cached is not None and cached.sourced_targets == block_names:
            return cached
        self.count_call()
        try:
            info = parse_domain_xml(dom.XMLDesc(0))
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise
        with self._lock:
            if self._generation.get(uuid, 0) == generation:
                self._xml_cache[uuid] = info
        return info

    # -- inventory ----------------------------------------------------------------------------------------------
    def get_servers(self, ctx: CloudContext, server_ids: Sequence[str]) -> dict[str, ServerFacts]:
        libvirt = _libvirt()
        wanted = {sid.lower() for sid in server_ids}
        conn = self._connection()
        found: dict[str, ServerFacts] = {}
        try:
            self.count_call()
            records = conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_BLOCK, 0)
            for dom, stats in records:
                uuid = dom.UUIDString()
                if uuid not in wanted:
                    continue
                info = self._domain_info(dom, uuid, frozenset(block_capacities(stats)))
                if info is None:
                    continue
                facts = server_facts(info, stats, self.default_project, self.availability_zone)
                if facts is not None and (ctx.all_tenants or facts.project_id == ctx.project_id):
                    found[uuid] = facts
        except libvirt.libvirtError as exc:
            self._drop_connection()
            raise CloudUnavailable(f"libvirt {self.uri}: {exc.get_error_message()}") from exc
        # answer under the ids as asked (UUIDs may come in upper case)
        return {sid: found[sid.lower()] for sid in server_ids if sid.lower() in found}

    def close(self) -> None:
        with self._lock:
            conn, callbacks = self._conn, self._callbacks
            self._conn, self._callbacks = None, []
        if conn is not None:
            for cb in callbacks:
                try:
                    conn.domainEventDeregisterAny(cb)
                except Exception:  # noqa: BLE001 - closing anyway
                    pass
            try:
                conn.unregisterCloseCallback()
                conn.close()
            except Exception:  # noqa: BLE001
                pass
