"""How chunks and indexes are addressed and encoded (see ``docs/bank.md``).

Every stored object is an *envelope*::

    magic (4 bytes: b"OCB1" chunk, b"OCI1" index) | flags (1 byte) | [nonce (12 bytes) if encrypted] | payload

``flags`` bit 0: payload is a zstd frame; bit 1: payload is AES-256-GCM ciphertext + 16-byte tag, whose
associated data is ``magic | flags | address-or-index-name``, so an object cannot be swapped for another.

Addresses are 32-byte BLAKE3 digests in hex of the *plaintext* chunk. With encryption the digest is keyed
(BLAKE3 keyed mode with a key derived from the bank key), so addresses reveal nothing about the data to whoever
can read the bank without the key.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import zstandard
from blake3 import blake3

from opencsbs.bank.errors import BankConfigError, ChunkDamaged

CHUNK_MAGIC = b"OCB1"
INDEX_MAGIC = b"OCI1"
F_ZSTD = 1
F_AESGCM = 2
NONCE_LEN = 12
HEADER_LEN = 5
_SAMPLE = 64 << 10

_ENC_CONTEXT = "opencsbs bank v1 chunk and index encryption"
_MAC_CONTEXT = "opencsbs bank v1 keyed chunk address"
_ID_CONTEXT = "opencsbs bank v1 key identifier"


def load_key(path: str | os.PathLike) -> bytes:
    """The 32-byte bank key from ``path``: 32 raw bytes, or 64 hex characters (whitespace ignored).

    Raises :class:`BankConfigError` when unreadable or of another length.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise BankConfigError(f"cannot read encryption key file {path}: {exc}") from exc
    text = raw.strip()
    if len(text) == 64:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            pass
    if len(raw) == 32:
        return raw
    raise BankConfigError(f"encryption key file {path} must hold 32 raw bytes or 64 hex characters")


class Codec:
    """Addresses, encodes and decodes chunks and indexes. Thread-safe (per-thread zstd contexts).

    ``key``: 32-byte bank key or ``None`` (no encryption); ``level``: zstd level (1 = fast).
    """

    def __init__(self, key: bytes | None, level: int = 1):
        self.encrypted = key is not None
        self.level = level
        self._tls = threading.local()
        if key is not None:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # only encrypted banks pay its import

            if len(key) != 32:
                raise BankConfigError("the bank key must be 32 bytes")
            self._mac_key = blake3(key, derive_key_context=_MAC_CONTEXT).digest()
            self._aead = AESGCM(blake3(key, derive_key_context=_ENC_CONTEXT).digest())
            self.key_id = blake3(key, derive_key_context=_ID_CONTEXT).hexdigest()[:32]
            self.hash_name = "blake3-keyed"
        else:
            self._mac_key = None
            self._aead = None
            self.key_id = None
            self.hash_name = "blake3"

    # --- hashing -------------------------------------------------------------------------------------
    def digest(self, data: bytes | memoryview) -> bytes:
        """The 32-byte address digest of ``data`` (keyed when encrypted). Releases the GIL on large inputs."""
        if self._mac_key is not None:
            return blake3(data, key=self._mac_key, max_threads=1).digest()
        return blake3(data).digest()

    def volume_hasher(self) -> blake3:
        """A hasher for the whole-volume hash (keyed when encrypted), fed with chunk digests in order."""
        if self._mac_key is not None:
            return blake3(key=self._mac_key)
        return blake3()

    # --- zstd contexts (not thread-safe: one per thread) -----------------------------------------------
    def _cctx(self) -> zstandard.ZstdCompressor:
        c = getattr(self._tls, "c", None)
        if c is None:
            c = self._tls.c = zstandard.ZstdCompressor(level=self.level)
        return c

    def _dctx(self) -> zstandard.ZstdDecompressor:
        d = getattr(self._tls, "d", None)
        if d is None:
            d = self._tls.d = zstandard.ZstdDecompressor()
        return d

    # --- envelopes -----------------------------------------------------------------------------------
    def _seal(self, magic: bytes, data: bytes, bind: bytes, compress: bool = True) -> bytes:
        flags = 0
        payload: bytes = data
        if compress:
            cctx = self._cctx()
            # incompressible data (random, already compressed) is kept raw: three 64 KiB samples (start,
            # middle, end) tell, so such chunks cost no compression pass on backup and none on restore
            n = len(data)
            worth = n <= _SAMPLE * 8 or any(
                len(cctx.compress(data[o:o + _SAMPLE])) < _SAMPLE - _SAMPLE // 32
                for o in (0, (n // 2) - _SAMPLE // 2, n - _SAMPLE))
            if worth:
                packed = cctx.compress(data)
                if len(packed) < len(data) - len(data) // 32:
                    payload = packed
                    flags |= F_ZSTD
        if self._aead is not None:
            flags |= F_AESGCM
            header = magic + bytes([flags])
            nonce = os.urandom(NONCE_LEN)
            return header + nonce + self._aead.encrypt(nonce, payload, header + bind)
        return magic + bytes([flags]) + payload

    def _open(self, magic: bytes, blob: bytes, bind: bytes, name: str, max_size: int) -> bytes:
        if len(blob) < HEADER_LEN or blob[:4] != magic:
            raise ChunkDamaged(name, "bad header")
        flags = blob[4]
        header = blob[:HEADER_LEN]
        payload: bytes | memoryview = memoryview(blob)[HEADER_LEN:]
        if flags & F_AESGCM:
            if self._aead is None:
                raise ChunkDamaged(name, "encrypted, but the bank is opened without a key")
            if len(payload) < NONCE_LEN + 16:
                raise ChunkDamaged(name, "truncated ciphertext")
            from cryptography.exceptions import InvalidTag

            try:
                payload = self._aead.decrypt(bytes(payload[:NONCE_LEN]), bytes(payload[NONCE_LEN:]), header + bind)
            except InvalidTag:
                raise ChunkDamaged(name, "authentication failed (wrong key or altered data)") from None
        elif self._aead is not None:
            raise ChunkDamaged(name, "not encrypted in an encrypted bank")
        if flags & F_ZSTD:
            try:
                return self._dctx().decompress(payload, max_output_size=max_size)
            except zstandard.ZstdError as exc:
                raise ChunkDamaged(name, f"zstd: {exc}") from None
        return bytes(payload)

    def encode_chunk(self, digest: bytes, data: bytes) -> bytes:
        """The stored form of a chunk whose address digest is ``digest``."""
        return self._seal(CHUNK_MAGIC, data, digest)

    def decode_chunk(self, digest: bytes, blob: bytes, expected_len: int | None, name: str = "") -> bytes:
        """The plaintext of a stored chunk, checked against its address (and length when given).

        Raises :class:`ChunkDamaged`.
        """
        name = name or digest.hex()
        data = self._open(CHUNK_MAGIC, blob, digest, name, max_size=(expected_len or 64 << 20))
        if expected_len is not None and len(data) != expected_len:
            raise ChunkDamaged(name, f"length {len(data)}, expected {expected_len}")
        if self.digest(data) != digest:
            raise ChunkDamaged(name, "content does not match its address")
        return data

    def encode_index(self, name: str, document: bytes) -> bytes:
        """The stored form of an index document (JSON bytes)."""
        return self._seal(INDEX_MAGIC, document, name.encode())

    def decode_index(self, name: str, blob: bytes) -> bytes:
        """The JSON bytes of a stored index. Raises :class:`ChunkDamaged`."""
        return self._open(INDEX_MAGIC, blob, name.encode(), f"index {name}", max_size=1 << 30)
