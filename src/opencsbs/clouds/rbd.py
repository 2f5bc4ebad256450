"""Ceph RBD images through librbd: snapshots, changed extents, and the reader and writer the bank uses.

One idea: opencsbs talks to Ceph itself (no attach, no copy through Cinder, Glance or QEMU), as block-level backup
tools for Ceph do. Used by the OpenStack driver (Cinder RBD volumes) and the libvirt driver (``<disk
type='network'>`` RBD disks).

Bindings: librbd's Python modules ``rados`` and ``rbd`` ship with Ceph (Debian/Ubuntu ``python3-rados`` and
``python3-rbd``), not on PyPI; they are imported on first use (:func:`bindings`). A virtualenv sees them through two
symbolic links (the ``.so`` files are built for the distribution's Python 3 minor version)::

    ln -s /usr/lib/python3/dist-packages/{rados,rbd}.cpython-311-x86_64-linux-gnu.so \\
          .venv/lib/python3.11/site-packages/

Sources: librbd Python API (``rbd.pyx`` of Ceph 16: ``Image.diff_iterate``, ``aio_read``, ``aio_write``,
``aio_write_zeroes``, ``create_snap``, ``remove_snap2``), the ``rados.Rados`` client options
(``rados_osd_op_timeout``, ``rados_mon_op_timeout``, ``client_mount_timeout``), and
https://docs.ceph.com/en/latest/rbd/rbd-snapshot/.

Semantics used:

- ``diff_iterate(0, size, from_snapshot, cb, whole_object=False)`` on an image opened at a snapshot calls ``cb``
  for every extent written (or discarded) between ``from_snapshot`` and that snapshot; with ``from_snapshot=None``
  for every allocated extent (the parent's too, for clones). librbd answers from the object map when the image has
  ``fast-diff`` (cheap), else by listing the objects' snapshot sets.
- RBD snapshot ids grow monotonically per image: an older snapshot has a smaller id.
- ``write_zeroes`` really zeroes (it deallocates whole objects); ``discard`` may skip partial objects
  (``rbd_skip_partial_discard``), so writers never use it for zeros.

Errors: every librados/librbd failure is raised as a :class:`~opencsbs.core.errors.CSBSError` whose message says
what failed in words a user understands (:func:`ceph_error`): the cluster unreachable or timing out is
:class:`CephUnavailable` (503 CSBS.9999, transient: jobs retry), anything else CSBS.9999 (500) naming the image
("was deleted", "the cluster is full", "is not allowed"). Offsets and lengths are bytes.
"""

from __future__ import annotations

import bisect
import errno
import logging
import os
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from opencsbs.clouds.base import CloudUnavailable, ScratchVolume
from opencsbs.blockio.sparse import merge_ranges
from opencsbs.core import codes
from opencsbs.core.blocks import Range
from opencsbs.core.errors import CSBSError

log = logging.getLogger(__name__)

#: what to do when the bindings are missing (also shown at start-up)
BINDINGS_HINT = ("the Ceph client bindings are missing: install the Debian/Ubuntu packages python3-rbd and "
                 "python3-rados (not on PyPI); in a virtualenv link them in: ln -s "
                 "/usr/lib/python3/dist-packages/{rados,rbd}.cpython-3*-x86_64-linux-gnu.so "
                 "<venv>/lib/python3.*/site-packages/")

_modules: tuple[Any, Any] | None = None


class RbdBindingsMissing(CSBSError):
    """The ``rados``/``rbd`` modules cannot be imported (CSBS.9998, message: how to install them)."""

    def __init__(self) -> None:
        super().__init__(codes.SYSTEM_NOT_SUPPORTED, message=BINDINGS_HINT)


class CephUnavailable(CloudUnavailable):
    """The Ceph cluster did not answer in time or refused the client (503 CSBS.9999; jobs retry)."""


def bindings() -> tuple[Any, Any]:
    """The ``(rados, rbd)`` modules. Raises :class:`RbdBindingsMissing`."""
    global _modules
    if _modules is None:
        try:
            import rados
            import rbd
        except ImportError as exc:
            raise RbdBindingsMissing() from exc
        _modules = (rados, rbd)
    return _modules


def ceph_error(exc: BaseException, what: str) -> CSBSError:
    """A librados/librbd exception as the :class:`CSBSError` to raise; ``what`` names the object ("volume image
    volumes/volume-1@snap", "Ceph pool volumes")."""
    rados, rbd = bindings()
    err = getattr(exc, "errno", None)
    if isinstance(exc, (rados.TimedOut, rbd.Timeout)) or err in (errno.ETIMEDOUT, errno.ESHUTDOWN):
        return CephUnavailable(f"Ceph ({what}: the cluster did not answer in time)")
    if isinstance(exc, (rbd.ConnectionShutdown, rados.ConnectionShutdown)):
        return CephUnavailable(f"Ceph ({what}: the connection to the cluster was shut down)")
    if isinstance(exc, (rbd.ImageNotFound, rados.ObjectNotFound)) or err == errno.ENOENT:
        return CSBSError(codes.INTERNAL_ERROR, message=f"{what} does not exist (was it deleted?)")
    if isinstance(exc, (rbd.NoSpace, rados.NoSpace, rbd.DiskQuotaExceeded)) or err in (errno.ENOSPC, errno.EDQUOT):
        return CSBSError(codes.INTERNAL_ERROR, message=f"{what}: the Ceph cluster (or the pool's quota) is full")
    if isinstance(exc, (rbd.PermissionError, rados.PermissionError)) or err in (errno.EACCES, errno.EPERM):
        return CSBSError(codes.INTERNAL_ERROR,
                         message=f"{what}: the Ceph user is not allowed (its caps need 'profile rbd' on the pool)")
    if isinstance(exc, rbd.ReadOnlyImage) or err == errno.EROFS:
        return CSBSError(codes.INTERNAL_ERROR, message=f"{what} is read-only")
    if isinstance(exc, rbd.ImageBusy) or err == errno.EBUSY:
        return CSBSError(codes.INTERNAL_ERROR, message=f"{what} is busy")
    return CSBSError(codes.INTERNAL_ERROR, message=f"{what}: Ceph error {exc}")


def _errno_error(ret: int, what: str) -> CSBSError:
    """A negative return value of an aio completion as a :class:`CSBSError` (see :func:`ceph_error`)."""
    return ceph_error(OSError(-ret, os.strerror(-ret)), what)


#: opencsbs's RBD snapshot names: ``backup.<server snapshot name>.snap.opencsbs``
_SNAP_RE = re.compile(r"^backup\.(csbs-[a-z0-9-]+)\.snap\.opencsbs$")


def rbd_snapshot_name(name: str) -> str:
    r"""The RBD snapshot name of the server snapshot ``name`` (the engine's ``csbs-<job id>``): lower-cased,
    characters other than ``a-z0-9-`` turned into ``-``, inside Cinder's pattern for backup snapshots
    (``^backup\.([a-z0-9\-]+?)\.snap\.(.+)$``), which Cinder's RBD driver removes before deleting a volume."""
    clean = re.sub(r"[^a-z0-9-]", "-", name.lower())
    return f"backup.{clean}.snap.opencsbs"


def is_opencsbs_snapshot(snap_name: str) -> bool:
    """Whether an RBD snapshot name is one opencsbs made."""
    return _SNAP_RE.match(snap_name) is not None


@dataclass(frozen=True)
class SnapshotInfo:
    """One snapshot of an image: ``id`` grows with each new snapshot of the image; ``size`` of the image then."""

    name: str
    id: int
    size: int
    created: datetime | None = None


def _intersects(ranges: Sequence[Range], starts: Sequence[int], off: int, length: int) -> bool:
    """Whether ``[off, off + length)`` meets one of the sorted, merged ``ranges`` (``starts``: their offsets)."""
    i = bisect.bisect_right(starts, off) - 1
    if i >= 0 and ranges[i][0] + ranges[i][1] > off:
        return True
    return i + 1 < len(ranges) and ranges[i + 1][0] < off + length


class Cluster:
    """A connection to one Ceph cluster as one client, made on first use and shared by threads.

    ``conf``: path of ``ceph.conf`` (None: librados's default search); ``client``: the user, with or without the
    ``client.`` prefix (``opencsbs`` → ``client.opencsbs``); ``keyring``: its keyring file (None: ``ceph.conf``'s
    ``keyring`` setting). ``connect_timeout``/``op_timeout``: seconds before a monitor/OSD request fails (an
    unreachable cluster is then :class:`CephUnavailable` instead of a hang).
    """

    def __init__(self, conf: str | os.PathLike | None, client: str = "admin", keyring: str | os.PathLike | None = None,
                 connect_timeout: float = 20.0, op_timeout: float = 120.0):
        self.conf = str(conf) if conf else None
        self.client = client if client.startswith("client.") else f"client.{client}"
        self.keyring = str(keyring) if keyring else None
        self.connect_timeout = connect_timeout
        self.op_timeout = op_timeout
        self._lock = threading.Lock()
        self._rados = None
        self._ioctx: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"Cluster({self.client}@{self.conf or 'default ceph.conf'})"

    def check_settings(self) -> None:
        """Raise ``ValueError`` with one line saying what is missing (bindings, files); no network call."""
        try:
            bindings()
        except RbdBindingsMissing as exc:
            raise ValueError(exc.error_msg) from None
        if self.conf and not os.path.isfile(self.conf):
            raise ValueError(f"Ceph configuration file {self.conf} does not exist")
        if self.keyring and not os.access(self.keyring, os.R_OK):
            raise ValueError(f"Ceph keyring {self.keyring} of {self.client} cannot be read")

    def _connect(self):
        rados, _rbd = bindings()
        options = {"rados_osd_op_timeout": str(int(self.op_timeout)), "rados_mon_op_timeout": str(int(self.connect_timeout)),
                   "client_mount_timeout": str(int(self.connect_timeout))}
        if self.keyring:
            options["keyring"] = self.keyring
        what = f"connecting to Ceph as {self.client}"
        try:
            handle = rados.Rados(conffile=self.conf or "", name=self.client, conf=options)
        except rados.Error as exc:
            raise CephUnavailable(f"{what} (configuration {self.conf}: {exc})") from exc
        try:
            handle.connect(timeout=int(max(1, self.connect_timeout)))
        except rados.Error as exc:
            handle.shutdown()
            if isinstance(exc, rados.ObjectNotFound):
                raise CephUnavailable(f"{what} (no keyring found for {self.client})") from exc
            if isinstance(exc, rados.PermissionError):
                raise CephUnavailable(f"{what} (the cluster refused the key of {self.client})") from exc
            if isinstance(exc, rados.TimedOut):
                raise CephUnavailable(f"{what} (no monitor answered within {self.connect_timeout:g} s)") from exc
            raise CephUnavailable(f"{what} ({exc})") from exc
        return handle

    def ioctx(self, pool: str):
        """The I/O context of ``pool`` (cached). Raises :class:`CephUnavailable`, or CSBS.9999 for a missing pool."""
        rados, _rbd = bindings()
        with self._lock:
            io = self._ioctx.get(pool)
            if io is not None:
                return io
            if self._rados is None:
                self._rados = self._connect()
            try:
                io = self._rados.open_ioctx(pool)
            except rados.Error as exc:
                raise ceph_error(exc, f"Ceph pool {pool}") from exc
            self._ioctx[pool] = io
            return io

    def drop(self) -> None:
        """Forget the connection (the next call reconnects)."""
        with self._lock:
            handle, ios = self._rados, list(self._ioctx.values())
            self._rados, self._ioctx = None, {}
        for io in ios:
            try:
                io.close()
            except Exception:  # noqa: BLE001 - closing anyway
                pass
        if handle is not None:
            try:
                handle.shutdown()
            except Exception:  # noqa: BLE001
                pass

    close = drop

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        rados, rbd = bindings()
        try:
            yield
        except (rados.Error, rbd.Error) as exc:
            error = ceph_error(exc, what)
            if isinstance(error, CephUnavailable):
                self.drop()
            raise error from exc

    @contextmanager
    def image(self, pool: str, name: str, snapshot: str | None = None, read_only: bool = False) -> Iterator[Any]:
        """An open ``rbd.Image`` (closed on exit); errors as in :func:`ceph_error`."""
        _rados, rbd = bindings()
        what = f"RBD image {pool}/{name}" + (f"@{snapshot}" if snapshot else "")
        io = self.ioctx(pool)
        with self._errors(what):
            img = rbd.Image(io, name, snapshot=snapshot, read_only=read_only)
        try:
            with self._errors(what):
                yield img
        finally:
            img.close()

    # -- images and snapshots -----------------------------------------------------------------------------------
    def list_images(self, pool: str) -> list[str]:
        """Names of the images of ``pool``."""
        _rados, rbd = bindings()
        io = self.ioctx(pool)
        with self._errors(f"Ceph pool {pool}"):
            return list(rbd.RBD().list(io))

    def exists(self, pool: str, name: str) -> bool:
        """Whether image ``pool/name`` exists."""
        _rados, rbd = bindings()
        try:
            with self.image(pool, name, read_only=True):
                return True
        except CSBSError as exc:
            if isinstance(exc.__cause__, rbd.ImageNotFound):
                return False
            raise

    def size(self, pool: str, name: str, snapshot: str | None = None) -> int:
        """Bytes of the image (at ``snapshot``)."""
        with self.image(pool, name, snapshot, read_only=True) as img:
            return int(img.size())

    def list_snapshots(self, pool: str, name: str, missing_ok: bool = False) -> list[SnapshotInfo]:
        """The (user) snapshots of an image, oldest first; ``missing_ok``: none for a missing image."""
        _rados, rbd = bindings()
        try:
            with self.image(pool, name, read_only=True) as img:
                return self._snapshots(img)
        except CSBSError as exc:
            if missing_ok and isinstance(exc.__cause__, rbd.ImageNotFound):
                return []
            raise

    @staticmethod
    def _snapshots(img) -> list[SnapshotInfo]:
        snaps = []
        for s in img.list_snaps():
            try:
                created = img.get_snap_timestamp(s["id"])
            except Exception:  # noqa: BLE001 - old clusters: no timestamp
                created = None
            snaps.append(SnapshotInfo(s["name"], int(s["id"]), int(s["size"]), created))
        return sorted(snaps, key=lambda s: s.id)

    def create_snapshot(self, pool: str, name: str, snapshot: str) -> SnapshotInfo:
        """Snapshot image ``pool/name`` now as ``snapshot``; an existing snapshot of that name is returned as is.

        A client holding the image's exclusive lock (QEMU running the volume) performs the snapshot on librbd's
        request, after its in-flight writes: the snapshot is crash-consistent for that image."""
        _rados, rbd = bindings()
        with self.image(pool, name) as img:
            if not img.snap_exists(snapshot):
                flags = getattr(rbd, "RBD_SNAP_CREATE_IGNORE_QUIESCE_ERROR", 0)
                try:
                    img.create_snap(snapshot, flags)
                except rbd.ImageExists:
                    pass
            for s in self._snapshots(img):
                if s.name == snapshot:
                    return s
        raise CSBSError(codes.INTERNAL_ERROR, message=f"snapshot {pool}/{name}@{snapshot} vanished after creation")

    def remove_snapshot(self, pool: str, name: str, snapshot: str) -> bool:
        """Remove ``pool/name@snapshot`` (unprotecting it first if protected); False when the image or the
        snapshot does not exist (idempotent). A protected snapshot with clones raises CSBS.9999 ("busy")."""
        _rados, rbd = bindings()
        try:
            with self.image(pool, name) as img:
                if not img.snap_exists(snapshot):
                    return False
                if img.is_protected_snap(snapshot):
                    img.unprotect_snap(snapshot)
                try:
                    img.remove_snap(snapshot)
                except rbd.ImageNotFound:
                    return False
                return True
        except CSBSError as exc:
            if isinstance(exc.__cause__, rbd.ImageNotFound):
                return False
            raise

    def allocated_ranges(self, pool: str, name: str, snapshot: str | None) -> list[Range]:
        """Extents of the image (at ``snapshot``) that may hold data (clones: the parent's too), merged."""
        with self.image(pool, name, snapshot, read_only=True) as img:
            return _diff(img, None)

    def changed_ranges(self, pool: str, name: str, snapshot: str, since: str) -> list[Range] | None:
        """Extents written or discarded between snapshot ``since`` and ``snapshot`` of one image, merged; None
        when ``since`` does not exist (any more) or is not older than ``snapshot`` (then everything must be read)."""
        with self.image(pool, name, snapshot, read_only=True) as img:
            if not img.snap_exists(since):
                return None
            if img.snap_get_id(since) >= img.snap_get_id(snapshot):
                return None
            return _diff(img, since)

    def open_reader(self, pool: str, name: str, snapshot: str, read_ahead: int = 8,
                    focus: Sequence[Range] | None = None) -> SnapshotReader:
        """A :class:`SnapshotReader` of ``pool/name@snapshot`` (close it)."""
        _rados, rbd = bindings()
        what = f"RBD snapshot {pool}/{name}@{snapshot}"
        io = self.ioctx(pool)
        with self._errors(what):
            img = rbd.Image(io, name, snapshot=snapshot, read_only=True)
        try:
            with self._errors(what):
                snap_id = int(img.snap_get_id(snapshot))
                return SnapshotReader(img, what, read_ahead=read_ahead, focus=focus,
                                      verify=lambda: self._check_snapshot(pool, name, snapshot, snap_id, what))
        except BaseException:
            img.close()
            raise

    def _check_snapshot(self, pool: str, name: str, snapshot: str, snap_id: int, what: str) -> None:
        """Raise CSBS.9999 unless ``pool/name@snapshot`` still exists as snapshot ``snap_id`` (a fresh handle:
        an open one keeps reading a removed snapshot, as zeros)."""
        _rados, rbd = bindings()
        gone = CSBSError(codes.INTERNAL_ERROR, message=f"{what} was deleted during the copy (was the volume "
                                                       "deleted?); the data read from it is not kept")
        try:
            with self.image(pool, name, read_only=True) as img:
                if not img.snap_exists(snapshot) or int(img.snap_get_id(snapshot)) != snap_id:
                    raise gone
        except CSBSError as exc:
            if isinstance(exc.__cause__, rbd.ImageNotFound):
                raise gone from exc
            raise

    def create_image(self, pool: str, name: str, size: int) -> None:
        """Create image ``pool/name`` of ``size`` bytes (thin: nothing allocated), features layering only; an image
        of that name left by an earlier attempt is removed first."""
        _rados, rbd = bindings()
        self.remove_image(pool, name)
        io = self.ioctx(pool)
        with self._errors(f"RBD image {pool}/{name}"):
            rbd.RBD().create(io, name, int(size), old_format=False, features=rbd.RBD_FEATURE_LAYERING)

    def remove_image(self, pool: str, name: str) -> bool:
        """Remove image ``pool/name`` (its snapshots first); False when it did not exist."""
        _rados, rbd = bindings()
        io = self.ioctx(pool)
        try:
            with self.image(pool, name) as img:
                for snap in list(img.list_snaps()):
                    img.remove_snap(snap["name"])
        except CSBSError as exc:
            if isinstance(exc.__cause__, rbd.ImageNotFound):
                return False
            raise
        with self._errors(f"RBD image {pool}/{name}"):
            try:
                rbd.RBD().remove(io, name)
            except rbd.ImageNotFound:
                return False
        return True

    def open_image_reader(self, pool: str, name: str, read_ahead: int = 8) -> SnapshotReader:
        """A reader of image ``pool/name`` as it is now (no snapshot; for an image nobody else writes, such as
        a drill's scratch copy). Close it."""
        _rados, rbd = bindings()
        what = f"RBD image {pool}/{name}"
        io = self.ioctx(pool)
        with self._errors(what):
            img = rbd.Image(io, name, read_only=True)
        try:
            with self._errors(what):
                return SnapshotReader(img, what, read_ahead=read_ahead)
        except BaseException:
            img.close()
            raise

    def open_writer(self, pool: str, name: str, in_flight: int = 8) -> ImageWriter:
        """An :class:`ImageWriter` over the whole of image ``pool/name`` (close it)."""
        _rados, rbd = bindings()
        what = f"RBD image {pool}/{name}"
        io = self.ioctx(pool)
        with self._errors(what):
            img = rbd.Image(io, name)
        try:
            with self._errors(what):
                return ImageWriter(img, what, in_flight=in_flight)
        except BaseException:
            img.close()
            raise


class RbdScratch(ScratchVolume):
    """A drill's scratch RBD image ``pool/image`` of ``cluster`` (made by :meth:`Cluster.create_image`)."""

    def __init__(self, cluster: Cluster, pool: str, image: str, in_flight: int = 8):
        self.cluster = cluster
        self.pool = pool
        self.image = image
        self.in_flight = in_flight
        self.where = f"RBD image {pool}/{image}"

    def writer(self) -> ImageWriter:
        return self.cluster.open_writer(self.pool, self.image, in_flight=self.in_flight)

    def reader(self) -> SnapshotReader:
        return self.cluster.open_image_reader(self.pool, self.image, read_ahead=self.in_flight)

    def remove(self) -> None:
        self.cluster.remove_image(self.pool, self.image)


def _diff(img, since: str | None) -> list[Range]:
    """``diff_iterate`` over the whole image opened as ``img``, merged (byte extents, not whole objects)."""
    extents: list[Range] = []

    def collect(off: int, length: int, exists: bool) -> int:
        if since is not None or exists:
            extents.append((off, length))
        return 0

    img.diff_iterate(0, int(img.size()), since, collect, include_parent=True, whole_object=False)
    return merge_ranges(extents)


class _Aio:
    """Completion bookkeeping shared by the reader and the writer: results land in a dict under a condition."""

    def __init__(self) -> None:
        self.cv = threading.Condition()
        self.pending: dict[Any, Any] = {}
        self.done: dict[Any, tuple[int, bytes | None]] = {}

    def finished(self, key: Any, ret: int, data: bytes | None) -> None:
        with self.cv:
            self.pending.pop(key, None)
            self.done[key] = (ret, data)
            self.cv.notify_all()

    def wait_all(self) -> None:
        with self.cv:
            while self.pending:
                self.cv.wait()


class SnapshotReader:
    """:class:`~opencsbs.core.blocks.BlockReader` of an RBD image opened at a snapshot.

    Reads ahead with up to ``read_ahead`` ``aio_read``s in flight: after a read of ``(off, n)`` it asks for the
    next windows of ``n`` bytes (aligned to multiples of ``n``, as the bank reads whole chunks) that meet the
    allocated extents and, when ``focus`` is given (the changed extents of an incremental backup), meet those too.
    A read that was not foreseen is read directly. :meth:`verify` confirms the snapshot still exists (a removed
    snapshot reads as zeros through a handle opened before). ``bytes_read``: bytes asked from Ceph (foreseen reads that
    were never used included), ``reads``: requests made. Not for concurrent use by several threads.
    """

    def __init__(self, img, what: str, read_ahead: int = 8, focus: Sequence[Range] | None = None,
                 verify=None):
        self._img = img
        self._verify = verify
        self.what = what
        self.size = int(img.size())
        self.read_ahead = max(0, int(read_ahead))
        self.bytes_read = 0
        self.reads = 0
        self._allocated: list[Range] | None = None
        self._focus = merge_ranges(list(focus)) if focus is not None else None
        self._focus_starts = [o for o, _ in self._focus] if self._focus is not None else None
        self._aio = _Aio()
        self._next = 0  # next window offset to consider for read-ahead
        self._closed = False

    def allocated_ranges(self) -> Sequence[Range] | None:
        if self._allocated is None:
            self._allocated = _diff(self._img, None)
        return self._allocated

    def _wanted(self, off: int, length: int) -> bool:
        alloc = self.allocated_ranges()
        starts = self._alloc_starts
        if not _intersects(alloc, starts, off, length):
            return False
        return self._focus is None or _intersects(self._focus, self._focus_starts, off, length)

    @property
    def _alloc_starts(self) -> list[int]:
        starts = getattr(self, "_starts_cache", None)
        if starts is None:
            starts = self._starts_cache = [o for o, _ in self.allocated_ranges()]
        return starts

    def _issue(self, off: int, length: int) -> None:
        key = (off, length)
        aio = self._aio

        def done(completion, data, key=key) -> None:
            aio.finished(key, completion.get_return_value(), bytes(data) if data is not None else None)

        with aio.cv:
            aio.pending[key] = True
        try:
            self._img.aio_read(off, length, done)
        except BaseException:
            with aio.cv:
                aio.pending.pop(key, None)
            raise
        self.bytes_read += length
        self.reads += 1

    def _read_ahead(self, after: int, window: int) -> None:
        if self.read_ahead <= 0 or window <= 0:
            return
        aio = self._aio
        with aio.cv:
            outstanding = len(aio.pending) + len(aio.done)
        w = max(self._next, after)
        w = -(-w // window) * window  # aligned up
        while outstanding < self.read_ahead and w < self.size:
            n = min(window, self.size - w)
            if self._wanted(w, n):
                self._issue(w, n)
                outstanding += 1
                w += window
            else:
                w = self._skip(w, window)
        self._next = w

    def _skip(self, w: int, window: int) -> int:
        """The next aligned window after ``w`` that can meet the extents (jumps over long holes)."""
        ranges = self._focus if self._focus is not None else self.allocated_ranges()
        starts = self._focus_starts if self._focus is not None else self._alloc_starts
        i = bisect.bisect_right(starts, w + window - 1)
        if i >= len(ranges):
            return self.size
        return max(w + window, ranges[i][0] // window * window)

    def read(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self.size - offset))
        if length == 0:
            return b""
        key = (offset, length)
        aio = self._aio
        with aio.cv:
            foreseen = key in aio.pending or key in aio.done
            # foreseen reads this one has passed will never be asked for: forget them
            for k in [k for k in aio.done if k[0] < offset]:
                del aio.done[k]
        if not foreseen:
            self._issue(offset, length)
            self._next = max(self._next, offset + length)
        with aio.cv:
            while key not in aio.done:
                aio.cv.wait()
            ret, data = aio.done.pop(key)
        if ret < 0:
            raise _errno_error(ret, self.what)
        self._read_ahead(offset + length, length)
        if data is None or len(data) != length:
            got = 0 if data is None else len(data)
            raise CSBSError(codes.INTERNAL_ERROR, message=f"{self.what}: short read at {offset} ({got} of {length})")
        return data

    def verify(self) -> None:
        """Raise CSBS.9999 when the snapshot was deleted since it was opened (its reads then return zeros):
        called by the bank once everything was read, before the backup is recorded."""
        if self._verify is not None:
            self._verify()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._aio.wait_all()
        finally:
            self._img.close()


class ImageWriter:
    """:class:`~opencsbs.core.blocks.BlockWriter` of a whole RBD image: ``aio_write``/``aio_write_zeroes`` with up
    to ``in_flight`` requests outstanding; the first failure is raised by the next call. ``bytes_written`` and
    ``bytes_zeroed`` count what was asked."""

    def __init__(self, img, what: str, in_flight: int = 8):
        self._img = img
        self.what = what
        self.size = int(img.size())
        self.in_flight = max(1, int(in_flight))
        self.bytes_written = 0
        self.bytes_zeroed = 0
        self._aio = _Aio()
        self._seq = 0
        self._closed = False

    def _check(self) -> None:
        aio = self._aio
        with aio.cv:
            failed = [(k, r) for k, (r, _d) in aio.done.items() if r < 0]
            aio.done.clear()
        if failed:
            (_seq, offset), ret = failed[0]
            error = _errno_error(ret, self.what)
            error.error_msg = f"{error.error_msg} (writing at {offset})"
            raise error

    def _submit(self, offset: int, start) -> None:
        aio = self._aio
        with aio.cv:
            while len(aio.pending) >= self.in_flight:
                aio.cv.wait()
        self._check()
        self._seq += 1
        key = (self._seq, offset)

        def done(completion, key=key) -> None:
            aio.finished(key, completion.get_return_value(), None)

        with aio.cv:
            aio.pending[key] = start  # keeps the data alive until librbd is done with it
        try:
            with _raise_as(self.what):
                start(done)
        except BaseException:
            with aio.cv:
                aio.pending.pop(key, None)
            raise

    def write(self, offset: int, data: bytes) -> None:
        if offset < 0 or offset + len(data) > self.size:
            raise CSBSError(codes.INTERNAL_ERROR,
                            message=f"{self.what}: write of {len(data)} bytes at {offset} past its end ({self.size})")
        if not data:
            return
        data = bytes(data)
        self._submit(offset, lambda cb, d=data: self._img.aio_write(d, offset, cb))
        self.bytes_written += len(data)

    def write_zeroes(self, offset: int, length: int) -> None:
        length = max(0, min(length, self.size - offset))
        if length == 0:
            return
        self._submit(offset, lambda cb: self._img.aio_write_zeroes(offset, length, cb))
        self.bytes_zeroed += length

    def flush(self) -> None:
        self._aio.wait_all()
        self._check()
        with _raise_as(self.what):
            self._img.flush()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._aio.wait_all()
        finally:
            self._img.close()


@contextmanager
def _raise_as(what: str) -> Iterator[None]:
    rados, rbd = bindings()
    try:
        yield
    except (rados.Error, rbd.Error) as exc:
        raise ceph_error(exc, what) from exc
