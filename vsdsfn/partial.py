"""Output files that appear only when complete: an exclusive temporary file beside the
output, renamed over it (file and folder synced) on success, removed otherwise.

>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> with Partial(folder / "out.txt") as part:
...     _ = part.file.write(b"done")
...     part.commit()
>>> sorted(p.name for p in folder.iterdir()), (folder / "out.txt").read_bytes()
(['out.txt'], b'done')
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from pathlib import Path

__all__ = ["Partial", "replace_synced"]


def replace_synced(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Rename the finished file ``tmp`` over ``path`` durably: the file's data is synced
    first and the folder's entry after, so a crash leaves the old file or the new one."""
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    folder = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def _create_exclusive(folder: Path, prefix: str, suffix: str) -> tuple[int, Path]:
    """A new file with a name no other file has, created with the permissions a new file
    gets (``0o666`` less the umask), without changing the process's umask."""
    for _ in range(100):
        name = folder / f"{prefix}{secrets.token_hex(4)}{suffix}"
        try:
            return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666), name
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {folder}")


class Partial:
    """A temporary file this process creates exclusively in ``out``'s folder (``file``,
    open for writing at ``path``), and on demand a scratch folder beside it for
    intermediate files. :meth:`commit` renames the file over ``out``; :meth:`discard` (and
    leaving a ``with`` block) removes what was not committed. Nothing else is ever opened
    for writing or removed. Raises :class:`OSError` when the folder is not writable."""

    def __init__(self, out: str | os.PathLike) -> None:
        self.out = Path(out)
        fd, self.path = _create_exclusive(self.out.parent, f".{self.out.name}.", f".vsdsfn-part{self.out.suffix}")
        self.file = os.fdopen(fd, "wb")
        self._scratch: Path | None = None
        self.committed = False

    def scratch(self) -> Path:
        """A folder of this process's own beside the output (same file system), removed
        with the partial file."""
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", suffix=".vsdsfn-work",
                                                  dir=self.out.parent))
        return self._scratch

    def commit(self) -> None:
        """Rename the finished file over the output (synced)."""
        self.file.close()
        replace_synced(self.path, self.out)
        self.committed = True
        self.discard()

    def discard(self) -> None:
        """Remove the temporary file (unless committed) and the scratch folder."""
        self.file.close()
        if not self.committed:
            self.path.unlink(missing_ok=True)
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def __enter__(self) -> Partial:
        return self

    def __exit__(self, *exc) -> None:
        self.discard()
