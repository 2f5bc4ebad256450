"""Object backends of the bank: one small interface, two implementations.

Keys are ``/``-separated relative names (``chunks/ab/ab12...``, ``indexes/checkpoints/<id>/<vb>.idx``).
Every :meth:`ObjectStore.put` is atomic: a reader sees the whole old object, the whole new one, or none (local:
temporary file + ``rename``; S3: a single PUT). Times are POSIX seconds (float, UTC).
"""

from __future__ import annotations

import abc
import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from opencsbs.bank.errors import BankConfigError, BankUnavailable, ObjectNotFound
from opencsbs.blockio.direct import ALIGN, open_direct, pwrite_direct
from opencsbs.blockio.sparse import start_writeback

TMP_PREFIX = ".tmp-"
#: objects at least this large (chunks) are written with O_DIRECT by :class:`LocalStore` when it fsyncs
DIRECT_MIN = 1 << 20


@dataclass(frozen=True)
class ObjectInfo:
    """``key``, ``size`` in bytes, ``mtime`` (POSIX seconds of the last write or touch)."""

    key: str
    size: int
    mtime: float


class ObjectStore(abc.ABC):
    """The interface every backend implements. A backend that misses one of the abstract methods cannot be
    built (``TypeError``); :meth:`sync`, :meth:`cleanup_temporary` and :meth:`close` have no-op defaults for
    backends whose every put is durable, that leave no temporary objects or hold no connection."""

    #: a human-readable location, for reports
    location: str = ""

    @abc.abstractmethod
    def put(self, key: str, data: bytes, sync: bool = True) -> None:
        """Store ``data`` under ``key`` atomically (replacing any old object). ``sync=False`` lets a backend
        defer durability until :meth:`sync` is called for the key."""

    def sync(self, keys: list[str]) -> None:
        """Make the objects ``keys``, stored with ``sync=False``, durable (no-op where every put is)."""

    @abc.abstractmethod
    def get(self, key: str) -> bytes:
        """The object's bytes; raises :class:`ObjectNotFound`."""

    @abc.abstractmethod
    def head(self, key: str) -> ObjectInfo | None:
        """Size and mtime of ``key``, or ``None`` when absent."""

    @abc.abstractmethod
    def touch(self, key: str) -> None:
        """Set ``key``'s mtime to now (raises :class:`ObjectNotFound` when absent)."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; absent keys are ignored."""

    @abc.abstractmethod
    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix`` (no particular order)."""

    def cleanup_temporary(self, older_than: float) -> int:
        """Remove leftovers of interrupted writes older than ``older_than`` (POSIX time); returns how many."""
        return 0

    #: whether the storage itself keeps objects under a retention (:meth:`retain`): S3 Object Lock
    enforces_retention: bool = False

    def retain(self, key: str, mode: str, until: datetime) -> bool:
        """Have the storage refuse to delete ``key`` before ``until`` (aware or naive-UTC datetime), in ``mode``
        ``"GOVERNANCE"`` or ``"COMPLIANCE"``; a retention already longer or stronger is kept. False where the
        backend has no such thing (the default) or the object is absent."""
        return False

    def delete_unless_retained(self, key: str) -> bool:
        """:meth:`delete`; False when the storage keeps the data under a retention (:meth:`retain`; the key is
        then hidden, the data freed by a later :meth:`prune_versions`)."""
        self.delete(key)
        return True

    def prune_versions(self) -> tuple[int, int]:
        """Remove the old versions of objects that a versioned store kept because their retention had not
        ended when they were deleted or overwritten; ``(versions removed, bytes freed)``. (0, 0) by default."""
        return 0, 0

    def close(self) -> None:
        """Release connections."""


class LocalStore(ObjectStore):
    """A folder. ``fsync`` makes every object durable before it gets its name (crash-safe on power loss)."""

    def __init__(self, root: str | os.PathLike, fsync: bool = True):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self.location = str(self.root)
        self._made: set[str] = set()

    def _path(self, key: str) -> Path:
        return self.root / key

    def put(self, key: str, data: bytes, sync: bool = True) -> None:
        path = self._path(key)
        parent = str(path.parent)
        if parent not in self._made:
            os.makedirs(parent, exist_ok=True)
            self._made.add(parent)
        tmp = os.path.join(parent, f"{TMP_PREFIX}{uuid.uuid4().hex}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            view = memoryview(data)
            direct = len(view) // ALIGN * ALIGN if self.fsync and len(view) >= DIRECT_MIN else 0
            if direct:
                # large objects (chunks) go to the device without filling the page cache; the unaligned tail
                # follows through it, and the fsync below or in sync() covers it and the metadata
                dfd = open_direct(tmp)
                try:
                    if dfd >= 0 and pwrite_direct(dfd, view[:direct], 0):
                        view = view[direct:]
                        os.lseek(fd, direct, os.SEEK_SET)
                finally:
                    if dfd >= 0:
                        os.close(dfd)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            if self.fsync and sync:
                os.fsync(fd)
            elif self.fsync:
                start_writeback(fd)  # the later sync() then finds it (mostly) on disk
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        os.replace(tmp, path)
        if self.fsync and sync:
            self._fsync_dir(parent)

    @staticmethod
    def _fsync_dir(path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def sync(self, keys: list[str]) -> None:
        """fsync the files (their data was written with ``sync=False``; the kernel has been writing it back
        meanwhile), then their folders (the renames)."""
        if not self.fsync:
            return
        dirs = set()
        for key in keys:
            path = self._path(key)
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            dirs.add(str(path.parent))
        for d in dirs:
            self._fsync_dir(d)

    def get(self, key: str) -> bytes:
        try:
            with open(self._path(key), "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            raise ObjectNotFound(key) from None

    def head(self, key: str) -> ObjectInfo | None:
        try:
            st = os.stat(self._path(key))
        except FileNotFoundError:
            return None
        return ObjectInfo(key, st.st_size, st.st_mtime)

    def touch(self, key: str) -> None:
        try:
            os.utime(self._path(key))
        except FileNotFoundError:
            raise ObjectNotFound(key) from None

    def delete(self, key: str) -> None:
        try:
            os.unlink(self._path(key))
        except FileNotFoundError:
            pass

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        # walk from the deepest existing folder of the prefix
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self._path(base) if base else self.root
        if not start.is_dir():
            return
        root_len = len(str(self.root)) + 1
        for dirpath, _dirnames, filenames in os.walk(start):
            for fn in filenames:
                if fn.startswith(TMP_PREFIX):
                    continue
                full = os.path.join(dirpath, fn)
                key = full[root_len:].replace(os.sep, "/")
                if not key.startswith(prefix):
                    continue
                try:
                    st = os.stat(full)
                except FileNotFoundError:
                    continue
                yield ObjectInfo(key, st.st_size, st.st_mtime)

    def cleanup_temporary(self, older_than: float) -> int:
        n = 0
        for dirpath, _dirnames, filenames in os.walk(self.root):
            for fn in filenames:
                if fn.startswith(TMP_PREFIX):
                    full = os.path.join(dirpath, fn)
                    try:
                        if os.stat(full).st_mtime < older_than:
                            os.unlink(full)
                            n += 1
                    except FileNotFoundError:
                        pass
        return n


class S3Store(ObjectStore):
    """A bucket (and key prefix) of an S3-compatible server, through boto3 with path-style addressing.

    Checksums are only sent/validated when the operation requires them (``when_required``), which every
    S3-compatible server accepts. The bucket is created when missing.

    Transient failures (connection refused or reset, timeouts, throttling, 5xx) are retried by botocore's
    ``standard`` retry mode: ``max_attempts`` tries in all, with exponential backoff and jitter (at most 20 s
    between two); connect timeout ``connect_timeout`` s, read timeout ``read_timeout`` s. What still fails after
    that raises :class:`~opencsbs.bank.errors.BankUnavailable` with one line (the endpoint and the cause).

    ``object_lock``: the bucket has S3 Object Lock (created so when missing; an existing bucket without it is a
    :class:`BankConfigError`, as Object Lock can only be turned on when a bucket is created). The bucket is then
    versioned, and: :meth:`retain` sets a version's retention (the storage refuses to delete that version before
    its retain-until date, whoever asks); :meth:`delete` removes every version of a key, and where the storage
    refuses (a retention in force) hides the key behind a delete marker, the data kept until :meth:`prune_versions`
    can remove it; :meth:`touch` writes a new version carrying the old one's retention; :meth:`get` of a key hidden
    by a delete marker (someone deleted it without a version id) reads its newest kept version, so a backup under
    retention survives such a delete. Tested on the Ceph RADOS Gateway (SeaweedFS accepts Object Lock settings but
    does not enforce them). The bank never bypasses governance retention to delete.
    """

    enforces_retention = False

    def __init__(self, endpoint: str | None, bucket: str, access_key: str | None, secret_key: str | None,
                 region: str = "us-east-1", prefix: str = "", max_connections: int = 16, max_attempts: int = 5,
                 connect_timeout: float = 10, read_timeout: float = 120, object_lock: bool = False):
        import boto3
        from botocore.config import Config

        if not access_key or not secret_key:
            raise BankConfigError("bank backend s3 needs s3_access_key and s3_secret_key")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.location = f"s3 {endpoint or 'aws'} bucket {bucket}" + (f" prefix {self.prefix}" if self.prefix else "")
        cfg = Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required",
                     response_checksum_validation="when_required", max_pool_connections=max_connections,
                     retries={"max_attempts": max_attempts, "mode": "standard"}, connect_timeout=connect_timeout,
                     read_timeout=read_timeout)
        self.client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access_key,
                                   aws_secret_access_key=secret_key, region_name=region, config=cfg)
        self.object_lock = object_lock
        self.enforces_retention = object_lock
        self._ensure_bucket()

    @contextlib.contextmanager
    def _reach(self) -> Iterator[None]:
        """Turn an unreachable or failing server (after botocore's retries) into :class:`BankUnavailable`."""
        from botocore.exceptions import ClientError, HTTPClientError
        from botocore.exceptions import ConnectionError as BotoConnectionError

        try:
            yield
        except (BotoConnectionError, HTTPClientError) as exc:
            raise BankUnavailable(f"{self.location} unreachable: {exc}") from None
        except ClientError as exc:
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if status >= 500 or code in ("SlowDown", "RequestTimeout", "ServiceUnavailable", "InternalError"):
                raise BankUnavailable(f"{self.location} failed: {exc}") from None
            raise

    def _ensure_bucket(self) -> None:
        from botocore.exceptions import ClientError

        try:
            with self._reach():
                self.client.head_bucket(Bucket=self.bucket)
            self._check_object_lock()
            return
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code not in ("404", "NoSuchBucket", "NotFound"):
                raise BankConfigError(f"S3 bucket {self.bucket}: {exc}") from exc
        try:
            if self.object_lock:
                self.client.create_bucket(Bucket=self.bucket, ObjectLockEnabledForBucket=True)
            else:
                self.client.create_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise BankConfigError(f"cannot create S3 bucket {self.bucket}: {exc}") from exc
        self._check_object_lock()

    def _check_object_lock(self) -> None:
        """With ``object_lock``: the bucket must have Object Lock enabled (:class:`BankConfigError` if not)."""
        from botocore.exceptions import ClientError

        if not self.object_lock:
            return
        try:
            with self._reach():
                conf = self.client.get_object_lock_configuration(Bucket=self.bucket)
            enabled = conf.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"
        except ClientError:
            enabled = False
        if not enabled:
            raise BankConfigError(f"S3 bucket {self.bucket} has no Object Lock (s3_object_lock needs a bucket "
                                  "created with it: give a new bucket name)")

    def _k(self, key: str) -> str:
        return self.prefix + key

    @staticmethod
    def _missing(exc: Exception) -> bool:
        code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
        return code in ("404", "NoSuchKey", "NotFound")

    def put(self, key: str, data: bytes, sync: bool = True) -> None:
        with self._reach():
            self.client.put_object(Bucket=self.bucket, Key=self._k(key), Body=data)

    def get(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            with self._reach():
                return self.client.get_object(Bucket=self.bucket, Key=self._k(key))["Body"].read()
        except ClientError as exc:
            if not self._missing(exc):
                raise
        kept = self._versions(key)[0] if self.object_lock else []
        if not kept:
            raise ObjectNotFound(key)
        # hidden by a delete marker: the newest version the storage kept
        with self._reach():
            return self.client.get_object(Bucket=self.bucket, Key=self._k(key),
                                          VersionId=kept[0]["VersionId"])["Body"].read()

    def _versions(self, key: str) -> tuple[list[dict], list[dict]]:
        """The object versions and the delete markers of exactly ``key``, newest first."""
        full = self._k(key)
        versions: list[dict] = []
        markers: list[dict] = []
        paginator = self.client.get_paginator("list_object_versions")
        with self._reach():
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                versions += [v for v in page.get("Versions", []) or [] if v["Key"] == full]
                markers += [m for m in page.get("DeleteMarkers", []) or [] if m["Key"] == full]
        versions.sort(key=lambda v: v["LastModified"], reverse=True)
        markers.sort(key=lambda v: v["LastModified"], reverse=True)
        return versions, markers

    def head(self, key: str) -> ObjectInfo | None:
        from botocore.exceptions import ClientError

        try:
            with self._reach():
                r = self.client.head_object(Bucket=self.bucket, Key=self._k(key))
        except ClientError as exc:
            if self._missing(exc):
                return None
            raise
        return ObjectInfo(key, int(r["ContentLength"]), r["LastModified"].timestamp())

    def touch(self, key: str) -> None:
        from botocore.exceptions import ClientError

        # a server-side copy onto itself renews LastModified without moving the data through the client
        old = self._head(key) if self.object_lock else None
        try:
            with self._reach():
                self.client.copy_object(Bucket=self.bucket, Key=self._k(key),
                                        CopySource={"Bucket": self.bucket, "Key": self._k(key)},
                                        MetadataDirective="REPLACE", Metadata={"touched": str(int(time.time()))})
        except ClientError as exc:
            if self._missing(exc):
                raise ObjectNotFound(key) from None
            raise
        if old is None:
            return
        # versioned: the copy is a new version, without retention (the RADOS Gateway does not copy it); it gets
        # the old one's, and the old version goes unless its retention keeps it (then prune_versions takes it later)
        if old.get("ObjectLockRetainUntilDate") is not None:
            self.retain(key, old.get("ObjectLockMode") or "GOVERNANCE", old["ObjectLockRetainUntilDate"])
        self._delete_version(key, old.get("VersionId"))

    def _head(self, key: str, version_id: str | None = None) -> dict | None:
        from botocore.exceptions import ClientError

        extra = {"VersionId": version_id} if version_id else {}
        try:
            with self._reach():
                return self.client.head_object(Bucket=self.bucket, Key=self._k(key), **extra)
        except ClientError as exc:
            if self._missing(exc):
                return None
            raise

    def _delete_version(self, key: str, version_id: str | None) -> bool:
        """Delete one version; False when the storage refuses (a retention in force)."""
        from botocore.exceptions import ClientError

        if not version_id:
            return False
        try:
            with self._reach():
                self.client.delete_object(Bucket=self.bucket, Key=self._k(key), VersionId=version_id)
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code", "")) == "AccessDenied":
                return False
            if self._missing(exc):
                return True
            raise
        return True

    def retain(self, key: str, mode: str, until: datetime) -> bool:
        """Put (or extend) the retention of ``key``'s current version (Object Lock); a longer or stronger one
        in force is kept. A governance retention made compliance needs the governance bypass, which the bank's
        owner has. False when the bucket has no Object Lock or ``key`` is absent."""
        from botocore.exceptions import ClientError

        if not self.object_lock:
            return False
        if until.tzinfo is None:
            until = until.replace(tzinfo=UTC)
        head = self._head(key)
        if head is None:
            return False
        old_mode, old_until = head.get("ObjectLockMode"), head.get("ObjectLockRetainUntilDate")
        if old_until is not None:
            if old_mode == "COMPLIANCE":
                mode = "COMPLIANCE"
            if old_until >= until and old_mode == mode:
                return True
            until = max(until, old_until)
        args = {"Bucket": self.bucket, "Key": self._k(key), "VersionId": head.get("VersionId"),
                "Retention": {"Mode": mode, "RetainUntilDate": until}}
        if not args["VersionId"]:
            del args["VersionId"]
        try:
            with self._reach():
                self.client.put_object_retention(**args)
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code", "")) != "AccessDenied" or old_mode != "GOVERNANCE":
                raise
            with self._reach():
                self.client.put_object_retention(**args, BypassGovernanceRetention=True)
        return True

    def delete(self, key: str) -> None:
        if self.object_lock:
            self._delete_versions(key)
            return
        with self._reach():
            self.client.delete_object(Bucket=self.bucket, Key=self._k(key))

    def delete_unless_retained(self, key: str) -> bool:
        if not self.object_lock:
            self.delete(key)
            return True
        return self._delete_versions(key) == 0

    def _delete_versions(self, key: str) -> int:
        """Object Lock: delete every version of ``key`` the storage lets go (an older version must not come
        back as the current one); when some are kept (retention in force), a delete marker hides the key. The
        number of versions kept."""
        versions, markers = self._versions(key)
        kept = sum(not self._delete_version(key, v["VersionId"]) for v in versions)
        if kept:
            if not markers or not markers[0].get("IsLatest"):
                with self._reach():
                    self.client.delete_object(Bucket=self.bucket, Key=self._k(key))
        else:
            for m in markers:
                self._delete_version(key, m["VersionId"])
        return kept

    def prune_versions(self) -> tuple[int, int]:
        """Object Lock: remove the noncurrent versions whose retention has ended, and the delete markers left
        with nothing behind them. ``(versions removed, bytes freed)``."""
        if not self.object_lock:
            return 0, 0
        removed = freed = 0
        n = len(self.prefix)
        paginator = self.client.get_paginator("list_object_versions")
        live: set[str] = set()
        markers: list[dict] = []
        with self._reach():
            pages = list(paginator.paginate(Bucket=self.bucket, Prefix=self.prefix))
        for page in pages:
            for v in page.get("Versions", []) or []:
                if v.get("IsLatest"):
                    live.add(v["Key"])
                    continue
                if self._delete_version(v["Key"][n:], v["VersionId"]):
                    removed += 1
                    freed += int(v.get("Size") or 0)
                else:
                    live.add(v["Key"])
            markers += page.get("DeleteMarkers", []) or []
        for m in markers:
            if m["Key"] not in live and self._delete_version(m["Key"][n:], m["VersionId"]):
                removed += 1
        return removed, freed

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        n = len(self.prefix)
        with self._reach():
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._k(prefix)):
                for obj in page.get("Contents", []) or []:
                    yield ObjectInfo(obj["Key"][n:], int(obj["Size"]), obj["LastModified"].timestamp())

    def close(self) -> None:
        self.client.close()
