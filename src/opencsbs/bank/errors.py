"""Failures of the bank (the store of backup data).

The bank is an adapter: its errors are plain exceptions that the engine turns into a job's ``fail_code`` /
``fail_reason``; none of them is a client's mistake.
"""

from __future__ import annotations


class BankError(Exception):
    """Any failure of the bank."""


class BankConfigError(BankError):
    """The bank settings cannot be used (missing S3 credentials, unreadable key file, bad key length...)."""


class BankUnavailable(BankError):
    """The bank's backend cannot be reached or answers with a server error (S3 connection refused, timeout, 5xx)
    after the backend's own retries: transient, a job that meets it is tried again later."""


class BankKeyError(BankError):
    """The encryption key does not match the bank (wrong key, or a key missing for an encrypted bank)."""


class ObjectNotFound(BankError):
    """An object (chunk, index) that should exist is not in the backend."""

    def __init__(self, key: str):
        self.key = key
        super().__init__(f"object not found in the bank: {key}")


class IndexNotFound(BankError):
    """No index of that name."""

    def __init__(self, name: str):
        self.name = name
        super().__init__(f"no volume index named {name!r} in the bank")


class ChunkDamaged(BankError):
    """A chunk (or index) failed its check: bad header, decryption or decompression failure, hash mismatch."""

    def __init__(self, key: str, reason: str):
        self.key = key
        self.reason = reason
        super().__init__(f"damaged object {key}: {reason}")


class ChunkMissing(ObjectNotFound):
    """A chunk an index references is not in the backend."""
