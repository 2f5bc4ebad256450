"""The libvirt driver's inventory side: the domains of one host as :class:`ServerFacts`.

Cost per batch: one ``virConnectGetAllDomainStats`` call (state and block devices of every domain), whatever the
batch size. What the stats do not carry (``<shareable/>``, boot order, ``<serial>``, metadata) comes from the
domain XML, which is cached per domain and dropped on libvirt's domain events (lifecycle, device added/removed,
metadata changed) and whenever the stats' disk list differs from the cached XML; a cache miss costs one
``virDomainGetXMLDesc`` (counted). In steady state a batch is one call.

The inventory connection is read-only (``virConnectOpenReadOnly``); it is opened lazily and reopened after libvirt
reports it closed. Errors: libvirtd unreachable, or any libvirt error other than "no such domain", raises
:class:`CloudUnavailable` (HTTP 503, CSBS.9999).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from opencsbs.clouds.base import CloudContext, CloudUnavailable, Inventory
from opencsbs.clouds.libvirt import rbd_disks
from opencsbs.clouds.libvirt.config import LibvirtConfig
from opencsbs.clouds.libvirt.domain import DomainInfo, block_capacities, parse_domain_xml, server_facts
from opencsbs.core.errors import CSBSError
from opencsbs.core.facts import SERVER, ServerFacts

log = logging.getLogger(__name__)

_event_loop_lock = threading.Lock()
_event_loop_started = False
_quiet = False


def libvirt_binding():
    """The ``libvirt`` module, its error printing on stderr turned off (errors are raised and logged instead).
    Raises :class:`CloudUnavailable` when libvirt-python is not installed."""
    try:
        import libvirt
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise CloudUnavailable("libvirt driver: the libvirt-python binding is not installed (pip install "
                               "'opencsbs[libvirt]')") from exc
    global _quiet
    if not _quiet:  # libvirt prints every error on stderr by default; they are raised (and logged) instead
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        _quiet = True
    return libvirt


def ensure_event_loop(libvirt) -> None:
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


class LibvirtInventory(Inventory):
    """Servers of one libvirt host, inventory only (see the module docstring); settings in :class:`LibvirtConfig`.
    Raises ``ValueError`` when the RBD settings are incomplete."""

    name = "libvirt"
    protectable_types = frozenset({SERVER})

    def __init__(self, config: LibvirtConfig) -> None:
        Inventory.__init__(self)  # not super(): in LibvirtDriver the next class is the data path
        self.config = config
        self.uri: str = config.uri
        self.availability_zone: str | None = config.availability_zone
        self.default_project: str | None = config.default_project
        self._lock = threading.RLock()
        self._conn = None
        self._callbacks: list[int] = []
        self._xml_cache: dict[str, DomainInfo] = {}
        self._generation: dict[str, int] = {}
        self.rbd_settings = config.rbd
        self._rbd = None
        if self.rbd_settings is not None:
            from opencsbs.clouds.rbd import Cluster

            r = self.rbd_settings
            self._rbd = Cluster(r.conf, r.user, r.keyring, connect_timeout=r.connect_timeout, op_timeout=r.op_timeout)
            try:
                self._rbd.check_settings()
            except ValueError as exc:
                raise ValueError(f"cloud.libvirt_rbd: {exc}") from None

    # -- connection and cache -------------------------------------------------------------------------------
    def _connection(self):
        libvirt = libvirt_binding()
        with self._lock:
            if self._conn is not None:
                return self._conn
            ensure_event_loop(libvirt)
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
        libvirt = libvirt_binding()
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
        libvirt = libvirt_binding()
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
                facts = server_facts(info, stats, self.default_project, self.availability_zone,
                                     self._rbd_capacities(info, stats))
                if facts is not None and (ctx.all_tenants or facts.project_id == ctx.project_id):
                    found[uuid] = facts
        except libvirt.libvirtError as exc:
            self._drop_connection()
            raise CloudUnavailable(f"libvirt {self.uri}: {exc.get_error_message()}") from exc
        # answer under the ids as asked (UUIDs may come in upper case)
        return {sid: found[sid.lower()] for sid in server_ids if sid.lower() in found}

    def _rbd_capacities(self, info: DomainInfo, stats: dict) -> dict[str, int] | None:
        """Sizes of the RBD disks libvirt reports no capacity for (a shut-off domain's network disks), from Ceph
        (one image open each, counted); None without ``cloud.libvirt_rbd``."""
        if self._rbd is None:
            return None
        caps = block_capacities(stats)
        out = {}
        for d in info.disks:
            loc = rbd_disks.rbd_location(d)
            if loc is not None and not caps.get(d.target):
                self.count_call()
                try:
                    out[d.target] = self._rbd.size(*loc)
                except CSBSError:
                    log.warning("size of RBD disk %s/%s of %s unknown", *loc, info.uuid, exc_info=True)
        return out

    def list_server_ids(self, ctx: CloudContext) -> list[str]:
        """Every domain's UUID (one call); :meth:`get_servers` then keeps those of ``ctx``'s project."""
        libvirt = libvirt_binding()
        conn = self._connection()
        self.count_call()
        try:
            return [dom.UUIDString() for dom in conn.listAllDomains(0)]
        except libvirt.libvirtError as exc:
            self._drop_connection()
            raise CloudUnavailable(f"libvirt {self.uri}: {exc.get_error_message()}") from exc

    def close(self) -> None:
        """Close the read-only connection and drop the event callbacks."""
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
