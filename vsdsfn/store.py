"""Finished chunks of a job, kept in a hidden folder beside OUTPUT for a resume.

The folder ``.OUTPUTNAME.vsdsfn-chunks`` holds ``manifest.json`` (the job's settings,
the input's identity, the chunks' frame ranges, and each finished chunk's file, size
and SHA-256) and one file per finished chunk. Running the same job again keeps the
chunks whose file still matches its checksum; a folder whose settings or input differ
is emptied first. Only files this module names are ever written or removed, and the
folder is removed once OUTPUT is complete.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .plan import Chunk
from .source import VideoError

__all__ = ["Store", "StoreError", "folder_for", "identity", "sha256_file"]

log = logging.getLogger("vsdsfn")

FORMAT = 1
MANIFEST = "manifest.json"
LOCK = "lock"


class StoreError(VideoError):
    """The chunk folder cannot be used; the text names the fix."""


def folder_for(out: Path) -> Path:
    """The chunk folder of output ``out``: hidden, beside it."""
    return out.parent / f".{out.name}.vsdsfn-chunks"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def identity(path: Path) -> dict[str, Any]:
    """What tells a file apart from an edited or replaced one: its path, size, modification
    time and a hash of its first and last MiB (cheap for a film)."""
    st = path.stat()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        if st.st_size > 2 << 20:
            f.seek(-(1 << 20), os.SEEK_END)
            h.update(f.read())
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256_ends": h.hexdigest()}


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Store:
    """The chunk folder of one job, locked while this process uses it.

    ``key`` is everything a chunk depends on (settings, the input's identity, the chunk
    plan); ``suffix`` the chunk files' extension.
    """

    def __init__(self, out: Path, key: dict[str, Any], chunks: list[Chunk], suffix: str) -> None:
        self.folder = folder_for(out)
        self.key = json.loads(json.dumps(key, default=str))   # as the manifest holds it
        self.chunks, self.suffix = chunks, suffix
        self.done: dict[int, dict[str, Any]] = {}
        self._lock_fd: int | None = None

    # -- opening --------------------------------------------------------------------------

    def open(self) -> list[Chunk]:
        """Create or reuse the folder, lock it, and return the chunks still to render."""
        created = self._make_folder()
        self._lock()
        if not created:
            self._load()
        self._save()
        return [c for c in self.chunks if c.index not in self.done]

    def _make_folder(self) -> bool:
        try:
            os.mkdir(self.folder)
            return True
        except FileExistsError:
            if not self.folder.is_dir() or not (self.folder / MANIFEST).is_file():
                raise StoreError(f"{str(self.folder)!r} exists but is not a vsdsfn chunk folder (no {MANIFEST}); "
                                 "move it away or choose another -o") from None
            return False
        except OSError as exc:
            raise StoreError(f"cannot create the chunk folder {str(self.folder)!r} ({exc.strerror}); "
                             "choose an output in a folder you can write to") from None

    def _lock(self) -> None:
        self._lock_fd = os.open(self.folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock_fd)
            self._lock_fd = None
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise StoreError(f"another vsdsfn is rendering into {str(self.folder)!r}; wait for it to end "
                                 "or choose another -o") from None
            raise

    def _load(self) -> None:
        """Keep the finished chunks of an earlier run of the same job whose files match."""
        try:
            old = json.loads((self.folder / MANIFEST).read_text())
        except (OSError, ValueError) as exc:
            log.warning("chunk folder: unreadable %s (%s); rendering everything", MANIFEST, exc)
            old = {}
        same = old.get("format") == FORMAT and old.get("key") == self.key
        for entry in old.get("done", {}).values():
            path = self.folder / entry["file"]
            if not same:
                path.unlink(missing_ok=True)
            elif not path.is_file() or path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
                log.warning("chunk %d: its file is missing or does not match its checksum; rendering it again",
                            entry["index"])
                path.unlink(missing_ok=True)
            else:
                self.done[entry["index"]] = entry
        if old and not same:
            log.warning("chunk folder: kept chunks were rendered with other settings or another input; "
                        "rendering everything")

    # -- progress ---------------------------------------------------------------------------

    def path(self, chunk: Chunk) -> Path:
        return self.folder / f"chunk-{chunk.index:06d}{self.suffix}"

    def add(self, chunk: Chunk, data: bytes, **extra: Any) -> None:
        """Keep a finished chunk: its file first (synced), then the manifest naming it (with
        ``extra``, JSON values)."""
        path = self.path(chunk)
        _write_atomic(path, data)
        entry = {**extra, "index": chunk.index, "start": chunk.start, "stop": chunk.stop, "file": path.name,
                 "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        self.done[chunk.index] = entry
        self._save()

    def _save(self) -> None:
        manifest = {"format": FORMAT, "key": self.key,
                    "chunks": [[c.start, c.stop] for c in self.chunks],
                    "done": {str(i): e for i, e in sorted(self.done.items())}}
        _write_atomic(self.folder / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())
        _fsync_dir(self.folder)

    def files(self) -> Iterator[Path]:
        """The chunk files in frame order (all chunks must be done)."""
        for c in self.chunks:
            yield self.folder / self.done[c.index]["file"]

    # -- closing ---------------------------------------------------------------------------

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def remove(self, extra: tuple[str, ...] = ()) -> None:
        """Remove the folder (OUTPUT is complete): the files named here, then the folder if
        nothing else is in it."""
        for name in [e["file"] for e in self.done.values()] + list(extra) + [MANIFEST, MANIFEST + ".tmp", LOCK]:
            (self.folder / name).unlink(missing_ok=True)
        self.close()
        with contextlib.suppress(OSError):
            self.folder.rmdir()
        if self.folder.exists():
            log.warning("left %s in place: it holds files vsdsfn did not write", self.folder)
