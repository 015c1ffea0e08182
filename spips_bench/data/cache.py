"""The decoded-patch cache: each category's patches decoded and resized once, then read memory-mapped.

Decoding and resizing the PNGs of a category is what a cheap metric's run spends most of its time on,
and every run did it again. The cache keeps the result per (dataset root, kind, split, category, load
size) under ``$SPIPS_BENCH_CACHE/patches/`` (:func:`patches_dir`)::

    <kind>-<split>-<category>-<load>-<digest>/
        index.json             what the folder holds: its key, every source file, the arrays of the build
        <part>-<build>.npy     uint8 (N, S, S, 3) per image part (ref, p0, p1), in sample order
        <judgment>-<build>.npy float64 (N,): the judgment of each sample
        .lock                  locked (``flock``) by the process that checks or builds the folder

What it guarantees:

* **Exact values.** A patch is cached only when the decoded float32 values are exactly ``k / 255`` for
  8-bit ``k`` (every 8-bit source file, resized or not), and it is read back with the reader's own
  ``value / 255.0`` in float32, so a cached item equals the decoded one bit for bit. A sample with a
  16-bit or float image is not cached: it is decoded from its files on every read, as without the cache.
  At the native load size (patches of different sizes) nothing is cached.
* **Never a hidden failure.** A sample whose files cannot be used (unreadable, corrupt, unpaired, a bad
  judgment) is not cached either: it is read from its files every time, so the reader reports it as it
  would without the cache (``--on-error fail|skip`` names the file).
* **Validated.** The index records each source file's name, size and ``mtime_ns``, and the SHA-256 of
  the files modified in the two seconds before the build started (a change within the file system's
  timestamp resolution would not show in the times), together with the versions of Pillow and numpy
  and the SHA-256 of the decoding code. Any difference (a file changed, added or removed) rebuilds
  that category's folder, and a line on stderr says so.
* **Atomic.** Every file is written to a temporary file and renamed into place
  (:func:`spips_bench.io.atomic_path`); the index is written last and names the arrays of its build, so
  an interrupted build leaves nothing that a later run trusts (its temporary files are removed then,
  or, after a kill, by the next build of the folder).
* **Concurrent runs.** A process checks and builds a folder holding its lock: a second run waits and
  then reads what the first built. Readers (DataLoader workers, ``torchrun`` ranks) map the arrays
  read-only. Memory stays flat: the build streams the arrays to disk sample by sample, and reading
  maps them.
* **Read-only caches.** A folder that cannot be written is still read when its index is valid;
  otherwise the run decodes from the source files, with one notice.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import json
import math
import os
import re
import secrets
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from torch.utils.data import Dataset

from spips_bench import settings
from spips_bench.io import TEMP_SUFFIX, atomic_path, atomic_write_text, sha256_file

CACHE_FORMAT = "spips-patches/1"
#: The folder of :func:`settings.cache_dir` that holds the patch cache.
FOLDER = "patches"
INDEX = "index.json"
LOCK = ".lock"
#: Files modified this close (ns) before a build are also recorded by content (see the module docstring).
RACY_NS = 2_000_000_000
_CHUNK = 64  # samples per batch of the build's loader
_SHOW = 3  # changed files named in the rebuild notice
#: ``_LUT[k] == np.float32(k) / 255.0``: what the reader computes for an 8-bit value ``k``.
_LUT = np.arange(256, dtype=np.float32) / 255.0
_notified: set[str] = set()  # cache folders whose "cannot be written" notice this process printed

#: One sample as the reader decodes it: float32 ``(H, W, 3)`` arrays per image part, the judgment and
#: the conversions made; None for a sample whose files cannot be used.
Decoded = tuple[dict[str, np.ndarray], float, list[str]] | None


class CacheableReader(Protocol):
    """What the cache needs of a reader (:class:`spips_bench.data.bapps.TwoAFCDataset`, ``JNDDataset``)."""

    root: Path
    split: str
    category: str
    load_size: int | None
    folder: Path
    names: list[str]

    @property
    def image_parts(self) -> tuple[str, ...]: ...

    @property
    def judgment_part(self) -> str: ...

    @property
    def kind_name(self) -> str: ...

    def filename(self, index: int, part: str) -> str | None: ...

    def decode(self, index: int) -> Decoded: ...

    def __len__(self) -> int: ...


def patches_dir() -> Path:
    """``$SPIPS_BENCH_CACHE/patches`` (or the default cache folder's): where the patch cache lives."""
    return settings.cache_dir() / FOLDER


def folder_for(reader: CacheableReader) -> Path:
    """The cache folder of one reader's (root, kind, split, category, load size)."""
    key = {"root": str(Path(reader.root).resolve()), "kind": reader.kind_name, "split": reader.split,
           "category": reader.category, "load_size": reader.load_size}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", f"{reader.kind_name}-{reader.split}-{reader.category}")[:60]
    return patches_dir() / f"{safe}-{reader.load_size}-{digest}"


def exact_uint8(array: np.ndarray) -> np.ndarray | None:
    """``array`` (float32 ``(H, W, 3)``) as uint8 when ``_LUT[result]`` gives it back exactly, else None."""
    if array.dtype != np.float32 or array.ndim != 3:
        return None
    q = np.rint(array * np.float32(255.0))
    if not (q.min() >= 0.0 and q.max() <= 255.0):  # also False for NaN
        return None
    k = q.astype(np.uint8)
    return k if np.array_equal(_LUT[k], array) else None


@functools.lru_cache(maxsize=1)
def _decoder_identity() -> dict[str, str]:
    """What the decoded values depend on besides the files: the decoding code and its libraries."""
    import PIL

    here = Path(__file__).parent
    code = hashlib.sha256()
    for name in ("images.py", "bapps.py", "cache.py"):
        code.update(sha256_file(here / name).encode())
    return {"code_sha256": code.hexdigest(), "pillow": PIL.__version__, "numpy": np.__version__}


def _listing(reader: CacheableReader) -> dict[str, list[Any]]:
    """Per part, ``[file name, size, mtime_ns]`` in sample order (None where a sample lacks the file)."""
    out: dict[str, list[Any]] = {}
    for part in (*reader.image_parts, reader.judgment_part):
        entries: list[Any] = []
        for i in range(len(reader)):
            name = reader.filename(i, part)
            try:
                st = os.stat(reader.folder / part / name) if name is not None else None
            except OSError:
                st = None
            entries.append([name, st.st_size, st.st_mtime_ns] if st is not None else None)
        out[part] = entries
    return out


def _racy(reader: CacheableReader, listing: dict[str, list[Any]], now_ns: int) -> dict[str, str]:
    """The SHA-256 of the files modified less than :data:`RACY_NS` before ``now_ns`` (``"part/name"`` keys):
    a change made within the file system's timestamp resolution after the build leaves size and time
    unchanged, so these files are checked by content."""
    racy: dict[str, str] = {}
    for part, entries in listing.items():
        for entry in entries:
            if entry is not None and entry[2] >= now_ns - RACY_NS:
                with contextlib.suppress(OSError):  # gone since: the listing no longer matches anyway
                    racy[f"{part}/{entry[0]}"] = _content_sha256(reader.folder / part / entry[0])
    return racy


def _content_sha256(path: Path) -> str:
    """The SHA-256 of a file read now (never a digest remembered for its size and time)."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _changes(old: dict[str, Any], new: dict[str, Any]) -> str:
    """What differs between two listings, in words: ``"2 file(s) changed, added or removed (p0/000003.png, ...)"``."""
    differ: list[str] = []
    for part in sorted(set(old) | set(new)):
        a = {e[0]: e[1:] for e in old.get(part, []) if e}
        b = {e[0]: e[1:] for e in new.get(part, []) if e}
        differ += [f"{part}/{n}" for n in sorted(set(a) | set(b)) if a.get(n) != b.get(n)]
    if not differ:
        return "its list of samples differs"
    more = f" and {len(differ) - _SHOW} more" if len(differ) > _SHOW else ""
    return f"{len(differ)} source file(s) changed, added or removed ({', '.join(differ[:_SHOW])}{more})"


class PatchCache:
    """The cached patches of one category, open for reading (what :func:`open_cache` returns).

    The arrays are memory-mapped read-only on first use in each process; pickling (a DataLoader worker
    started with ``spawn``) carries the paths only.
    """

    def __init__(self, folder: Path, index: dict[str, Any], *, reused: bool) -> None:
        self.folder = folder
        self.index = index
        #: True when the folder was found built and valid; False when this process built it.
        self.reused = reused
        self.cached = np.ones(int(index["samples"]), dtype=bool)
        self.cached[np.asarray(index["uncached"], dtype=np.int64)] = False
        self._conversions: dict[str, list[str]] = index["conversions"]
        self._arrays: dict[str, np.ndarray] | None = None
        self._pid = -1

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_arrays"] = None
        return state

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays of the build, part -> read-only memory map (opened once per process).

        Raises:
            OSError: a file is gone (another run rebuilt the folder since this one read its index).
            ValueError: a file does not hold the array the index describes.
        """
        if self._arrays is None or self._pid != os.getpid():
            arrays = {}
            for part, name in self.index["files"].items():
                arr = np.load(self.folder / name, mmap_mode="r", allow_pickle=False)
                if tuple(arr.shape) != tuple(self.index["shapes"][part]) or arr.dtype.str != self.index["dtypes"][part]:
                    raise ValueError(f"{self.folder / name}: holds {arr.dtype} {arr.shape}, not what its index says")
                arrays[part] = arr
            self._arrays, self._pid = arrays, os.getpid()
        return self._arrays

    def sample(self, index: int, image_parts: Sequence[str], judgment_part: str,
               ) -> tuple[dict[str, np.ndarray], float, list[str]] | None:
        """Item ``index``: float32 ``(3, S, S)`` arrays per image part (equal to the reader's), its judgment
        and conversions; None when the sample is not cached (read it from its files)."""
        if not self.cached[index]:
            return None
        arrays = self.arrays()
        # C-contiguous (3, S, S), as the reader's tensors: a strided layout could select other kernels.
        images = {part: _LUT[np.ascontiguousarray(arrays[part][index].transpose(2, 0, 1))] for part in image_parts}
        return images, float(arrays[judgment_part][index]), list(self._conversions.get(str(index), []))


class _Decoding(Dataset[tuple[int, "dict[str, np.ndarray] | None", float, list[str]]]):
    """The reader's samples as the build stores them: ``(index, uint8 arrays or None, judgment, notes)``."""

    def __init__(self, reader: CacheableReader) -> None:
        self.reader = reader

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, index: int) -> tuple[int, dict[str, np.ndarray] | None, float, list[str]]:
        decoded = self.reader.decode(index)
        if decoded is None:
            return index, None, math.nan, []
        images, value, notes = decoded
        size = self.reader.load_size
        out = {}
        for part, array in images.items():
            k = exact_uint8(array) if array.shape == (size, size, 3) else None
            if k is None:  # a 16-bit or float source: decoded from its file every time
                return index, None, math.nan, []
            out[part] = k
        return index, out, value, notes


def _as_list(batch: list[Any]) -> list[Any]:
    return batch


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold the folder's lock (``flock``, waiting for another process that holds it).

    Raises:
        OSError: the folder or its lock file cannot be created or opened for writing.
    """
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            acquire(fd)
        except OSError as exc:  # a file system without locks: the atomic renames still keep it whole
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)  # also for DataLoader workers that inherited the descriptor
        os.close(fd)


def acquire(fd: int) -> None:
    """Take the exclusive lock on ``fd``, waiting as long as another process holds it."""
    fcntl.flock(fd, fcntl.LOCK_EX)


def _valid(folder: Path, meta: dict[str, Any], listing: dict[str, Any], sources: Path,
           names: list[str]) -> tuple[dict[str, Any] | None, str | None]:
    """The folder's index when it describes exactly these sources; else None and why (None: no index)."""
    try:
        index = json.loads((folder / INDEX).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as exc:
        return None, f"its index cannot be read ({exc})"
    if not isinstance(index, dict) or index.get("format") != CACHE_FORMAT:
        return None, f"its index is not of format {CACHE_FORMAT}"
    for key, value in meta.items():
        if index.get(key) != value:
            what = {"key": "for another dataset", "code_sha256": "by another version of the decoding code"}.get(
                key, f"with {key} {index.get(key)} (now {value})")
            return None, f"it was built {what}"
    if index.get("names") != names or index.get("sources") != listing:
        return None, _changes(index.get("sources") or {}, listing)
    for key, digest in (index.get("racy") or {}).items():
        try:
            same = _content_sha256(sources / key) == digest
        except OSError:
            same = False
        if not same:
            return None, f"1 source file changed ({key})"
    missing = [n for n in index.get("files", {}).values() if not (folder / n).is_file()]
    if missing:
        return None, f"its array {missing[0]} is missing"
    return index, None


def open_cache(reader: CacheableReader, *, workers: int = 0, progress: bool = False,
               log: Callable[[str], None] | None = None) -> PatchCache | None:
    """The patch cache of ``reader``'s category: reused when valid, built (or rebuilt) otherwise.

    Args:
        reader: the category's reader (its own ``decode`` fills the cache).
        workers: DataLoader worker processes that decode while the cache is built.
        progress: a progress bar on stderr while it is built.
        log: called with the one-line notices (a rebuild and why; a cache that cannot be written).

    Returns:
        The open cache, or None when nothing can be cached (the native load size) or the cache folder
        cannot be written and holds no valid cache (a notice says so, once per process).
    """
    emit = log or (lambda line: print(line, file=sys.stderr))
    if reader.load_size is None or len(reader) == 0:
        return None
    folder = folder_for(reader)
    meta = {"key": {"root": str(Path(reader.root).resolve()), "kind": reader.kind_name, "split": reader.split,
                    "category": reader.category, "load_size": reader.load_size}, **_decoder_identity()}
    now = time.time_ns()
    listing = _listing(reader)
    names = list(reader.names)
    try:
        with _locked(folder):
            index, why = _valid(folder, meta, listing, reader.folder, names)
            if index is not None:
                return PatchCache(folder, index, reused=True)
            if why is not None:
                emit(f"patch cache {folder}: {why}; decoding {reader.kind_name}/{reader.split}/{reader.category} "
                     "again.")
            index = _build(reader, folder, meta, listing, _racy(reader, listing, now), names, now,
                           workers=workers, progress=progress)
            return PatchCache(folder, index, reused=False)
    except OSError as exc:
        index, _ = _valid(folder, meta, listing, reader.folder, names)  # a read-only folder may still hold it
        if index is not None:
            return PatchCache(folder, index, reused=True)
        if str(patches_dir()) not in _notified:  # one notice, not one per category
            _notified.add(str(patches_dir()))
            emit(f"notice: the patch cache {folder} cannot be written ({exc.strerror or exc}); decoding every "
                 f"patch from its file. Make {patches_dir()} writable, point ${settings.CACHE} at a writable "
                 "folder, or pass --no-cache.")
        return None


def _build(reader: CacheableReader, folder: Path, meta: dict[str, Any], listing: dict[str, Any],
           racy: dict[str, str], names: list[str], now: int, *, workers: int, progress: bool) -> dict[str, Any]:
    """Decode every sample of ``reader`` into new arrays of ``folder`` and write their index (held lock).

    Raises:
        OSError: a file cannot be written (nothing is left that a later run would trust).
    """
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    _clean(folder, keep=())
    n, size = len(reader), int(reader.load_size or 0)
    build = secrets.token_hex(4)
    files = {part: f"{part}-{build}.npy" for part in (*reader.image_parts, reader.judgment_part)}
    shapes: dict[str, list[int]] = {part: [n, size, size, 3] for part in reader.image_parts}
    shapes[reader.judgment_part] = [n]
    judgments = np.full(n, np.nan, dtype=np.float64)  # 8 bytes a sample
    conversions: dict[str, list[str]] = {}
    uncached: list[int] = []
    blank = bytes(size * size * 3)
    with contextlib.ExitStack() as stack:
        outs = {}
        for part in reader.image_parts:
            tmp = stack.enter_context(atomic_path(folder / files[part], error=None))
            fh = stack.enter_context(tmp.open("r+b"))
            np.lib.format.write_array_header_1_0(
                fh, {"descr": np.dtype(np.uint8).str, "fortran_order": False, "shape": tuple(shapes[part])})
            outs[part] = fh
        decoding = _Decoding(reader)
        # Without workers no loader is needed; with them, the loader's own generator leaves the global
        # random state untouched (a training run that builds the cache must draw what it would without).
        loader: Iterable[list[Any]] = (
            DataLoader(decoding, batch_size=_CHUNK, num_workers=workers, collate_fn=_as_list,
                       generator=torch.Generator()) if workers > 0
            else ([decoding[i] for i in range(j, min(j + _CHUNK, n))] for j in range(0, n, _CHUNK)))
        bar = stack.enter_context(tqdm(total=n, desc=f"decoding {reader.kind_name}/{reader.category}", unit="item",
                                       file=sys.stderr, disable=not progress, leave=False))
        expected = 0
        for batch in loader:
            for index, arrays, value, notes in batch:
                if index != expected:
                    raise RuntimeError(f"the cache build of {folder} received sample {index}, expected {expected}")
                expected += 1
                for part, fh in outs.items():
                    fh.write(arrays[part].tobytes() if arrays is not None else blank)
                if arrays is None:
                    uncached.append(index)
                else:
                    judgments[index] = value
                    if notes:
                        conversions[str(index)] = notes
            bar.update(len(batch))
        if expected != n:
            raise RuntimeError(f"the cache build of {folder} received {expected} of {n} samples")
        with atomic_path(folder / files[reader.judgment_part], error=None) as tmp, tmp.open("wb") as out:
            np.save(out, judgments, allow_pickle=False)
    index = {"format": CACHE_FORMAT, **meta, "built_ns": now, "samples": n, "names": names, "sources": listing,
             "racy": racy, "files": files, "shapes": shapes,
             "dtypes": {part: np.dtype(np.uint8 if part in reader.image_parts else np.float64).str for part in files},
             "uncached": uncached, "conversions": conversions}
    atomic_write_text(folder / INDEX, json.dumps(index, separators=(",", ":")) + "\n", error=None)
    _clean(folder, keep=tuple(files.values()))
    return index


def _clean(folder: Path, keep: Sequence[str]) -> None:
    """Remove the arrays of other builds and temporary files left by a killed one (lock held)."""
    with os.scandir(folder) as it:
        for entry in it:
            stale = entry.name.endswith(".npy") and entry.name not in keep
            temporary = entry.name.startswith(".") and TEMP_SUFFIX in entry.name and entry.name != LOCK
            if (stale or temporary) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
