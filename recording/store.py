"""The recordings store: a small port, and the local (or mounted) directory that implements it.

Callers see keys (``YYYY/MM/DD/<uniqueid>_<ticket>.wav``), never paths, so an S3-compatible store
can take the directory's place. Every method blocks; the services call them in worker threads.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from recording.naming import safe_key

CHUNK_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class StoredObject:
    key: str
    sha256: str
    size_bytes: int


class RecordingStore(Protocol):
    def put(self, source: Path, key: str) -> StoredObject:
        """Copy ``source`` in under ``key`` durably, hashing it on the way; atomic for readers."""

    def stat(self, key: str) -> StoredObject | None:
        """Size and fresh SHA-256 of what the store holds under ``key``; None when absent."""

    def open(self, key: str) -> BinaryIO:
        """A binary stream of the object (``FileNotFoundError`` when absent)."""

    def size(self, key: str) -> int | None: ...

    def delete(self, key: str) -> bool: ...

    def keys(self) -> Iterator[str]: ...


def sha256_of(stream: BinaryIO) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    while chunk := stream.read(CHUNK_BYTES):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


class DirectoryStore:
    """Recordings as files under one directory (``HOTLINE_RECORDINGS_DIR``).

    A put writes ``.incoming/<name>.part``, fsyncs it, renames it into place and fsyncs the
    folder: a crash leaves either no object or a whole one, plus a ``.part`` that the next put
    of the same key overwrites.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._incoming = root / ".incoming"

    def _path(self, key: str) -> Path:
        return self.root / safe_key(key)

    def put(self, source: Path, key: str) -> StoredObject:
        target = self._path(key)
        self._incoming.mkdir(parents=True, exist_ok=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = self._incoming / (target.name + ".part")
        digest = hashlib.sha256()
        size = 0
        with source.open("rb") as reader, partial.open("wb") as writer:
            while chunk := reader.read(CHUNK_BYTES):
                digest.update(chunk)
                writer.write(chunk)
                size += len(chunk)
            writer.flush()
            os.fsync(writer.fileno())
        os.replace(partial, target)
        _fsync_folder(target.parent)
        return StoredObject(key, digest.hexdigest(), size)

    def stat(self, key: str) -> StoredObject | None:
        try:
            with self._path(key).open("rb") as stream:
                sha256, size = sha256_of(stream)
        except FileNotFoundError:
            return None
        return StoredObject(key, sha256, size)

    def open(self, key: str) -> BinaryIO:
        return self._path(key).open("rb")

    def size(self, key: str) -> int | None:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            return None

    def delete(self, key: str) -> bool:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            return False
        return True

    def keys(self) -> Iterator[str]:
        day = "[0-9][0-9][0-9][0-9]/[0-9][0-9]/[0-9][0-9]/*.wav"
        found = [*self.root.glob(day), *self.root.glob(f"*/{day}")]  # named PBXs' folders too
        for path in sorted(found):
            yield path.relative_to(self.root).as_posix()


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
