"""Shared fixtures of the bank tests: every test runs on the local backend and on the real S3 server."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import pytest

from opencsbs.bank import open_bank
from opencsbs.blockio.files import FileBlockReader, FileBlockWriter
from opencsbs.config import BankSettings, Settings

MiB = 1 << 20
S3_ENDPOINT = os.environ.get("OPENCSBS_TEST_S3_ENDPOINT")


def s3_bank_settings(**extra) -> BankSettings:
    return BankSettings(backend="s3", s3_endpoint=S3_ENDPOINT, s3_bucket="opencsbs-tests",
                        s3_access_key=os.environ.get("OPENCSBS_TEST_S3_ACCESS_KEY"),
                        s3_secret_key=os.environ.get("OPENCSBS_TEST_S3_SECRET_KEY"),
                        s3_prefix=f"t-{uuid.uuid4().hex[:12]}", **extra)


class BankEnv:
    """Makes banks (same backend and place each time) and disk images for one test."""

    def __init__(self, backend: str, tmp_path: Path):
        self.backend = backend
        self.tmp = tmp_path
        if backend == "s3":
            self.bank_settings = s3_bank_settings()
        else:
            self.bank_settings = BankSettings(path=tmp_path / "bank", fsync=False)
        self.opened = []

    def settings(self, **bank_overrides) -> Settings:
        bs = self.bank_settings.model_copy(update=bank_overrides)
        return Settings(data_dir=self.tmp / "data", bank=bs)

    def open(self, **bank_overrides):
        bank = open_bank(self.settings(**bank_overrides))
        self.opened.append(bank)
        return bank

    def image(self, name: str, data: bytes | None = None, size: int | None = None,
              writes: list[tuple[int, bytes]] = ()) -> Path:
        """A (sparse) file of ``size`` bytes, or holding ``data``, then ``writes`` applied."""
        path = self.tmp / name
        with open(path, "wb") as fh:
            if data is not None:
                fh.write(data)
            if size is not None:
                fh.truncate(size)
            for off, buf in writes:
                fh.seek(off)
                fh.write(buf)
        return path

    def restore(self, bank, index_name: str, name: str = "restored.img") -> Path:
        idx = bank.read_index(index_name)
        out = self.tmp / name
        w = FileBlockWriter(out, idx.size)
        try:
            bank.restore_volume(index_name, w)
        finally:
            w.close()
        return out

    def backup(self, bank, path: Path, index_name: str, **kw):
        r = FileBlockReader(path)
        try:
            return bank.backup_volume(r, index_name, **kw)
        finally:
            r.close()

    def close(self):
        for b in self.opened:
            b.close()


def sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(MiB), b""):
            h.update(block)
    return h.hexdigest()


@pytest.fixture(params=["local", "s3"])
def env(request, tmp_path):
    from conftest import require_component

    if request.param == "s3":
        require_component(bool(S3_ENDPOINT), "no S3 server: run scripts/services/s3.sh start "
                                             "(sets OPENCSBS_TEST_S3_ENDPOINT)")
    e = BankEnv(request.param, tmp_path)
    yield e
    e.close()
