"""Local file I/O shared by the package: the one atomic writer and the one SHA-256 helper.

Every file the package writes whole goes through :func:`atomic_path` (or its shorthands
:func:`atomic_write_text` and :func:`atomic_write_bytes`): the content goes to a temporary file in the
same folder, is flushed to the disk (``fsync``), renamed over the target, and the folder is synced so
that the rename survives a power cut. A reader, or a process killed half-way, sees either the old file
or the new one, never a part. A file produced elsewhere and then moved into place (a verified download)
is moved with :func:`replace_durably`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from spips_bench.errors import StoreWriteError, write_failure_fix

#: Suffix of the temporary files of :func:`atomic_path`; a folder's leftovers are ``.<name>.*<suffix>``.
TEMP_SUFFIX = ".tmp"

#: Turns a failed local write of a path into the error to raise; None re-raises the ``OSError`` itself.
WriteFailure = Callable[[Path, OSError], BaseException] | None


def write_failure(path: Path, exc: OSError) -> StoreWriteError:
    """The error for a result file that cannot be written: the file, the system's reason and the way out."""
    return StoreWriteError(
        f"{path}: cannot write ({exc.strerror or exc}); {write_failure_fix(exc, '--out')}, then rerun the "
        "same command: everything stored before is intact and the run resumes from it."
    )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (a rename into it) to the disk."""
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, suffix: str = TEMP_SUFFIX,
                error: WriteFailure = write_failure) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write the whole file to; on success it replaces ``path``.

    For writers that take a file name (``safetensors.torch.save_file``, ``Figure.savefig``). On a normal
    exit the temporary file is synced to the disk, renamed over ``path`` and the folder is synced; on an
    exception it is removed and ``path`` keeps its previous content. ``suffix`` ends the temporary name
    (a figure writer that picks the format from the name needs e.g. ``".tmp.png"``).

    Raises:
        StoreWriteError: (with the default ``error``) the file cannot be written (disk full, no
            permission); the previous version of ``path``, if any, is left as it was and no temporary
            file remains. With ``error=None`` the ``OSError`` itself.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=suffix)
        try:
            os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600 files; results are meant to be shared
        finally:
            os.close(fd)
    except OSError as exc:
        if error is None:
            raise
        raise error(target, exc) from exc
    try:
        yield Path(tmp)
        _fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and error is not None:
            raise error(target, exc) from exc
        raise
    # The rename itself must reach the disk too, or a power cut can leave the old name behind.
    fsync_dir(target.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, error: WriteFailure = write_failure) -> None:
    """Write ``data`` to ``path`` so that the file is always complete (see :func:`atomic_path`).

    Raises:
        StoreWriteError: (with the default ``error``) the file cannot be written (disk full, no
            permission); the previous version of ``path``, if any, is left as it was.
    """
    with atomic_path(path, error=error) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, error: WriteFailure = write_failure) -> None:
    """Write ``text`` (UTF-8, ``\\n`` line ends) to ``path`` so that the file is always complete.

    Raises:
        StoreWriteError: (with the default ``error``) the file cannot be written (disk full, no
            permission); the previous version of ``path``, if any, is left as it was and no temporary
            file remains.
    """
    with atomic_path(path, error=error) as tmp, tmp.open("w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def replace_durably(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Move the finished file ``src`` over ``dst`` (same file system) and sync both to the disk.

    Raises:
        OSError: the file cannot be synced or renamed; ``src`` is left in place.
    """
    _fsync_file(os.fspath(src))
    os.replace(src, dst)
    fsync_dir(Path(dst).parent)


# -- hashing -----------------------------------------------------------------------------------------

_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def sha256_bytes(data: bytes) -> str:
    """The SHA-256 of ``data`` as 64 lower-case hex digits."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file as 64 lower-case hex digits; cached per (path, size, mtime) in this process."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    cached = _HASH_CACHE.get(key)
    if cached is not None:
        return cached
    h = hashlib.sha256()
    with p.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    _HASH_CACHE[key] = digest
    return digest
