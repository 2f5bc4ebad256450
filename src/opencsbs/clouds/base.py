"""The interface every cloud driver implements.

Inventory side (what the CSBS rules read): :meth:`Inventory.get_servers` returns :class:`ServerFacts` for a
whole batch of ids with a constant number of cloud calls (list with filters, never one call per id).
``calls`` counts the cloud calls a driver made, so benchmarks and tests can assert that.

Data side (what the backup engine drives), shaped after libvirt/KVM push-mode backups with checkpoints and dirty
bitmaps, and Cinder snapshots:

1. :meth:`DataPath.snapshot_server` takes a crash-consistent snapshot of *every* disk of a server before any
   byte is copied (libvirt: one ``backupBegin`` with a ``domaincheckpoint`` covering all disks; OpenStack: a Cinder
   snapshot per volume taken while the server is paused/quiesced; sandbox: a copy-on-write overlay registered on
   each volume file while the volumes are locked against writers). The snapshot is named by the caller (the
   engine uses the job id), so a retry after a crash finds or replaces the same snapshot instead of leaking a
   second one.
2. :meth:`DataPath.open_snapshot` gives a :class:`~opencsbs.core.blocks.BlockReader` of one disk of it, and
   :meth:`DataPath.changed_ranges` the byte ranges changed since an earlier snapshot of that disk, when the
   driver tracks changes (a libvirt dirty bitmap / checkpoint, a Cinder changed-block API); ``None`` means "read
   everything" and the bank then de-duplicates by content.
3. :meth:`DataPath.delete_snapshot` drops the snapshot's data (idempotent) but, after a successful backup,
   keeps its change token usable as the base of the next incremental backup.
4. Restores: :meth:`DataPath.power_off`, :meth:`DataPath.open_volume_writer` per target disk,
   :meth:`DataPath.power_on`.

Everything a worker must remember between steps is in the plain, JSON-serialisable :class:`ServerSnapshot`
(the engine persists it in its job row), so another worker process can continue after a crash.

Errors: a driver that cannot reach or authenticate to its cloud raises :class:`CloudUnavailable`; the API
answers 503 with CSBS.9999 rather than a wrong verdict. The two sides are two roles, :class:`Inventory` and
:class:`DataPath`; :class:`CloudDriver` is their sum. A driver that cannot move data at all is only an
:class:`Inventory`, and :func:`data_path` refuses it with :class:`DataPathUnsupported` (CSBS.9998); a data path
that cannot handle one disk raises the same error.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from opencsbs.core import codes
from opencsbs.core.blocks import BlockReader, BlockWriter, Range
from opencsbs.core.errors import CSBSError
from opencsbs.core.facts import SERVER_TYPES, ServerFacts


@dataclass(frozen=True)
class CloudContext:
    """Who asks: the project whose resources are visible, and (keystone mode) the caller's token to pass on."""

    project_id: str
    auth_token: str | None = None
    all_tenants: bool = False


class CloudUnavailable(CSBSError):
    """The cloud did not answer, answered 5xx, or refused the service credentials (HTTP 503, CSBS.9999)."""

    def __init__(self, what: str):
        super().__init__(codes.CLOUD_UNAVAILABLE, what)


class DataPathUnsupported(CSBSError):
    """The driver cannot snapshot, read or write volumes (HTTP 500, CSBS.9998 "System not support")."""

    def __init__(self, driver: str, what: str):
        super().__init__(codes.SYSTEM_NOT_SUPPORTED, message=f"cloud driver {driver} cannot {what}")


@dataclass(frozen=True)
class VolumeSnapshot:
    """One disk of a :class:`ServerSnapshot`.

    ``size``: bytes of the disk at snapshot time; ``snapshot_id``: the cloud's id of the disk snapshot (shown as
    ``snapshot_id`` of a volume backup); ``change_token``: what to pass as ``since`` to a later
    :meth:`DataPath.snapshot_server` to learn the changes after this snapshot (libvirt checkpoint name,
    sandbox generation), None when the driver tracks no changes; ``since``: the token this snapshot's changed
    ranges are relative to (None: unknown, read everything); ``handle``: driver data (paths, node names).
    """

    volume_id: str
    snapshot_id: str
    size: int
    device: str | None = None
    bootable: bool = False
    change_token: str | None = None
    since: str | None = None
    handle: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ServerSnapshot:
    """A crash-consistent snapshot of all disks of ``server_id``, named ``name`` by the caller."""

    server_id: str
    name: str
    volumes: tuple[VolumeSnapshot, ...]
    handle: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form (persisted by the engine between steps)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServerSnapshot:
        """Inverse of :meth:`to_dict`."""
        vols = tuple(VolumeSnapshot(**v) for v in data["volumes"])
        return cls(server_id=data["server_id"], name=data["name"], volumes=vols, handle=dict(data.get("handle") or {}))

    def volume(self, volume_id: str) -> VolumeSnapshot:
        """The snapshot of disk ``volume_id``; ``KeyError`` if the server snapshot has none."""
        for v in self.volumes:
            if v.volume_id == volume_id:
                return v
        raise KeyError(volume_id)


class Inventory(ABC):
    """The inventory role: what the CSBS rules read (``get_servers``, ``list_server_ids``). A driver that is only
    an :class:`Inventory` cannot move data: :func:`data_path` refuses it with CSBS.9998 (an OpenStack cloud
    without ``cloud.openstack_rbd_backends``). Thread-safe: API threads and workers share one instance."""

    #: short name used in config (``cloud.driver``)
    name: str = "abstract"
    #: server types this driver can back up (subset of ``core.facts.SERVER_TYPES``)
    protectable_types: frozenset[str] = SERVER_TYPES
    #: storage backends (``VolumeFacts.backend``) whose volumes the data side can read; None: not told (no
    #: CSBS.6061 verdicts)
    data_backends: frozenset[str] | None = None

    def __init__(self) -> None:
        self._calls = 0
        self._calls_lock = threading.Lock()

    @property
    def calls(self) -> int:
        """Cloud calls made so far (for benchmarks and call-count tests)."""
        return self._calls

    def count_call(self, n: int = 1) -> None:
        """Record ``n`` cloud calls."""
        with self._calls_lock:
            self._calls += n

    @abstractmethod
    def get_servers(self, ctx: CloudContext, server_ids: Sequence[str]) -> dict[str, ServerFacts]:
        """Facts of the servers among ``server_ids`` that ``ctx.project_id`` may see, by id.

        Ids that are unknown, or belong to another project, are simply absent. Constant number of cloud calls
        whatever ``len(server_ids)``. Raises :class:`CloudUnavailable` when the cloud cannot be asked.
        """

    def placement_needs(self, server: ServerFacts) -> tuple[str, ...]:
        """What a worker must offer to read or write ``server``'s data, beyond ``driver:<name>`` and its zone
        (placement, core/placement.py), e.g. ``("libvirt:kvm-2",)``; default: nothing more."""
        return ()

    @abstractmethod
    def list_server_ids(self, ctx: CloudContext) -> list[str]:
        """Ids of every server ``ctx.project_id`` may see (one listing call; feed them to :meth:`get_servers`).
        Raises :class:`CloudUnavailable`."""

    def close(self) -> None:
        """Release connections (default: nothing)."""


class DataPath(ABC):
    """The data-path role: what the backup engine drives (see the module docstring). Every method but
    :meth:`changed_ranges` and :meth:`prune_change_tracking` (which have safe defaults) must be implemented."""

    @abstractmethod
    def snapshot_server(
        self, ctx: CloudContext, server_id: str, name: str, since: dict[str, str] | None = None
    ) -> ServerSnapshot:
        """Snapshot every disk of ``server_id`` at one instant, before any data is copied.

        ``name``: the caller's unique name for it; calling again with the same name returns the existing complete
        snapshot or replaces a partial one. ``since``: ``{volume_id: change_token}`` of an earlier snapshot, so
        that :meth:`changed_ranges` can answer relative to it. Raises :class:`CloudUnavailable`, or
        ``CSBSError(SERVER_NOT_FOUND)`` when the server is gone.
        """

    @abstractmethod
    def open_snapshot(self, snapshot: VolumeSnapshot) -> BlockReader:
        """A reader of one disk snapshot's bytes (close it when done)."""

    def changed_ranges(self, snapshot: VolumeSnapshot) -> Sequence[Range] | None:
        """Sorted ``(offset, length)`` ranges of ``snapshot`` that may differ from the snapshot whose change token
        was given as ``since``; None when unknown (then everything is read)."""
        return None

    @abstractmethod
    def delete_snapshot(self, snapshot: ServerSnapshot, keep_change_token: bool = True) -> None:
        """Drop the snapshot's data; idempotent (a missing snapshot is fine).

        ``keep_change_token`` (after a backup that succeeded): the snapshot's change tokens stay usable as ``since``
        of the next backup, and the driver may drop older tokens of the same disks that they supersede (the
        engine always starts an incremental from the newest backup). False (after a backup that failed, whose
        tokens no backup records): the tokens may go too. ``snapshot.volumes`` may be empty: a backup that failed
        before its snapshot was recorded asks to drop whatever was made under ``snapshot.name`` for
        ``snapshot.server_id`` (the driver finds the disks itself)."""

    def placement_capabilities(self) -> tuple[str, ...]:
        """What this data path can serve beyond ``driver:<name>`` (placement, core/placement.py): the needs of
        :meth:`Inventory.placement_needs` it meets, e.g. ``("libvirt:kvm-2",)``; default: nothing more."""
        return ()

    def prune_change_tracking(self, needed: dict[str, set[str]]) -> int:
        """Drop change-tracking data no future :meth:`changed_ranges` call can need. ``needed``: for each volume
        id, the change tokens still usable as ``since`` (tokens of kept backups and of unfinished jobs); a volume
        absent from it has none. Returns how many pieces (e.g. log files) were dropped; default: nothing to do.
        Dropping too much must only ever make :meth:`changed_ranges` answer None (a full read), never a wrong
        answer."""
        return 0

    def open_scratch(self, volume_id: str | None, size: int, name: str) -> ScratchVolume | None:
        """Scratch space of ``size`` bytes for a restore drill of a disk backup of ``volume_id`` (None: unknown),
        named after ``name`` (unique per drill and disk; a leftover of that name from an interrupted drill is
        replaced). None (the default): the cloud has none, the drill uses a scratch file on the opencsbs host."""
        return None

    def remove_scratch(self, volume_id: str | None, name: str) -> None:
        """Delete what :meth:`open_scratch` made under ``name`` (a drill that failed or was interrupted);
        idempotent. Default: nothing to delete."""

    @abstractmethod
    def open_volume_writer(self, ctx: CloudContext, volume_id: str) -> BlockWriter:
        """A writer over the whole of volume ``volume_id`` for a restore (the server should be powered off)."""

    @abstractmethod
    def power_off(self, ctx: CloudContext, server_id: str) -> bool:
        """Stop ``server_id``; returns whether it was running. Idempotent."""

    @abstractmethod
    def power_on(self, ctx: CloudContext, server_id: str) -> None:
        """Start ``server_id``. Idempotent."""


class ScratchVolume(ABC):
    """Scratch space of the cloud that a restore drill restores one disk backup into (docs/verify.md): made by
    :meth:`DataPath.open_scratch`, written once, read back, removed. ``where``: a human-readable location."""

    where: str = ""

    @abstractmethod
    def writer(self) -> BlockWriter:
        """A writer over the whole scratch volume (close it)."""

    @abstractmethod
    def reader(self) -> BlockReader:
        """A reader of what was written (close it)."""

    @abstractmethod
    def remove(self) -> None:
        """Delete the scratch volume; idempotent."""


class CloudDriver(Inventory, DataPath):
    """A driver with both roles: inventory and data path."""


def data_path(driver: Inventory) -> DataPath:
    """``driver`` as a :class:`DataPath`; raises :class:`DataPathUnsupported` (CSBS.9998) for an inventory-only
    driver."""
    if isinstance(driver, DataPath):
        return driver
    raise DataPathUnsupported(driver.name, "back up or restore (it has no data path)")
