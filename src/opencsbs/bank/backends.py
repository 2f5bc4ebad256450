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
    """

    def __init__(self, endpoint: str | None, bucket: str, access_key: str | None, secret_key: str | None,
                 region: str = "us-east-1", prefix: str = "", max_connections: int = 16, max_attempts: int = 5,
                 connect_timeout: float = 10, read_timeout: float = 120):
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
            return
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code not in ("404", "NoSuchBucket", "NotFound"):
                raise BankConfigError(f"S3 bucket {self.bucket}: {exc}") from exc
        try:
            self.client.create_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise BankConfigError(f"cannot create S3 bucket {self.bucket}: {exc}") from exc

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
            if self._missing(exc):
                raise ObjectNotFound(key) from None
            raise

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
        try:
            with self._reach():
                self.client.copy_object(Bucket=self.bucket, Key=self._k(key),
                                        CopySource={"Bucket": self.bucket, "Key": self._k(key)},
                                        MetadataDirective="REPLACE", Metadata={"touched": str(int(time.time()))})
        except ClientError as exc:
            if self._missing(exc):
                raise ObjectNotFound(key) from None
            raise

    def delete(self, key: str) -> None:
        with self._reach():
            self.client.delete_object(Bucket=self.bucket, Key=self._k(key))

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        n = len(self.prefix)
        with self._reach():
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._k(prefix)):
                for obj in page.get("Contents", []) or []:
                    yield ObjectInfo(obj["Key"][n:], int(obj["Size"]), obj["LastModified"].timestamp())

    def close(self) -> None:
        self.client.close()
