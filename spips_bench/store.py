"""The per-sample score store: the seam between computing metrics and reporting on them.

A run folder (``--out``) holds, one value per cell::

    run.json                                  configuration fingerprint, versions, per-metric status
    judgments/2afc/<category>.csv             sample,judge      (fraction of raters preferring p1)
    judgments/jnd/<category>.csv              sample,same       (fraction of raters judging p0 == p1)
    scores/2afc/<category>/<metric>.csv       sample,d0,d1      (d0 = metric(p0, ref), d1 = metric(p1, ref))
    scores/jnd/<category>/<metric>.csv        sample,d          (d = metric(p0, p1): dist = p0, ref = p1)
    parts/rank<r>/...                         the same layout, one tree per torchrun rank, merged at the end
    summary.csv, tables.md, tables.tex        derived from the files above only

Rows are sorted by sample name; values are written with Python's shortest round-trip ``repr`` of the
float64 value (``nan`` for a non-finite score), so equal scores always give byte-identical files. Each
file is rewritten whole through a temporary file, ``fsync`` and ``os.replace``: a reader, or a run
killed at any moment, sees either the previous or the next complete version, never half a file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from spips_bench.errors import DatasetError, RunConfigError, StoreWriteError

#: Score columns per kind of judgment.
SCORE_COLUMNS: dict[str, tuple[str, ...]] = {"2afc": ("d0", "d1"), "jnd": ("d",)}
#: The human-judgment column per kind.
JUDGMENT_COLUMN: dict[str, str] = {"2afc": "judge", "jnd": "same"}

RUN_FILE = "run.json"
LOCK_FILE = ".lock"
#: Suffix of the temporary files of :func:`atomic_write_text`; one left behind by a killed run is stale.
TEMP_SUFFIX = ".tmp"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
#: Everything a run writes; ``--overwrite`` removes exactly these and nothing else.
OWNED_ENTRIES = ("scores", "judgments", "parts", RUN_FILE, "summary.csv", "tables.md", "tables.tex")


def write_failure(path: Path, exc: OSError) -> StoreWriteError:
    """The error for a store file that cannot be written: the file, the system's reason and the way out."""
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free some disk space (or choose another --out)"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "make the folder writable (or choose another --out)"
    else:
        fix = "fix the folder (or choose another --out)"
    return StoreWriteError(
        f"{path}: cannot write ({reason}); {fix}, then rerun the same command: everything stored "
        "before is intact and the run resumes from it."
    )


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that the file is always complete: temp file, fsync, rename.

    Raises:
        StoreWriteError: the file cannot be written (disk full, no permission); the previous version
            of ``path``, if any, is left as it was and no temporary file remains.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    except OSError as exc:
        raise write_failure(path, exc) from exc
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600 files; results are meant to be shared
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise write_failure(path, exc) from exc
        raise
    # The rename itself must reach the disk too, or a power cut can leave the old name behind.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def format_value(value: float) -> str:
    """The one text form of a stored number: shortest round-trip repr, ``nan`` for non-finite."""
    v = float(value)
    return repr(v) if math.isfinite(v) else "nan"


def check_name(name: str, what: str) -> str:
    """Refuse names that cannot be a file name on every platform (``/``, spaces, leading dots)."""
    if not _SAFE_NAME.match(name):
        raise ValueError(
            f"{what} {name!r} cannot name a store file; use letters, digits, '.', '_', '+' and '-' only."
        )
    return name


def write_table(path: Path, columns: tuple[str, ...], rows: Mapping[str, tuple[float, ...]]) -> None:
    """Write ``sample,<columns>`` rows sorted by sample name, atomically."""
    lines = [",".join(("sample", *columns))]
    for sample in sorted(rows):
        values = rows[sample]
        if len(values) != len(columns):
            raise ValueError(f"{path}: sample {sample!r} has {len(values)} values for columns {columns}")
        lines.append(",".join((sample, *map(format_value, values))))
    atomic_write_text(path, "\n".join(lines) + "\n")


def read_table(path: Path, columns: tuple[str, ...]) -> dict[str, tuple[float, ...]]:
    """Read a file written by :func:`write_table`; a missing file is an empty table."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    lines = text.splitlines()
    expected = ",".join(("sample", *columns))
    if not lines or lines[0] != expected:
        got = lines[0] if lines else "an empty file"
        raise DatasetError(
            f"{path}: expected the header {expected!r}, found {got!r}. The file was not written by "
            "spips-bench; remove it (or the whole run folder) and rerun."
        )
    rows: dict[str, tuple[float, ...]] = {}
    for lineno, line in enumerate(lines[1:], start=2):
        parts = line.split(",")
        if len(parts) != len(columns) + 1:
            raise DatasetError(f"{path}:{lineno}: expected {len(columns) + 1} fields, got {line!r}")
        try:
            rows[parts[0]] = tuple(float(p) for p in parts[1:])
        except ValueError as exc:
            raise DatasetError(f"{path}:{lineno}: not a number in {line!r}") from exc
    return rows


class ShardWriter:
    """Accumulates rows for one store file and rewrites it whole on :meth:`flush`.

    The file is read once at creation, so rows stored by an earlier (interrupted) run are kept; a row
    that is already stored is never replaced (a resumed run recomputes whole batches).
    """

    def __init__(self, path: Path, columns: tuple[str, ...]) -> None:
        self.path = path
        self.columns = columns
        self.rows: dict[str, tuple[float, ...]] = read_table(path, columns)
        self._dirty = False

    def add(self, sample: str, values: tuple[float, ...]) -> None:
        if sample not in self.rows:
            self.rows[sample] = values
            self._dirty = True

    def flush(self) -> None:
        if self._dirty:
            write_table(self.path, self.columns, self.rows)
            self._dirty = False


class ScoreStore:
    """A run folder: locating, reading, writing and merging its per-sample files.

    Args:
        root: the run folder (``--out``).
        rank: this process's torchrun rank; ranks other than a single process write under ``parts/``.
        world_size: number of processes writing the store.
    """

    def __init__(self, root: str | os.PathLike[str], *, rank: int = 0, world_size: int = 1) -> None:
        self.root = Path(root)
        self.rank = rank
        self.world_size = world_size

    # -- paths -------------------------------------------------------------------------------------

    def _base(self, part: int | None) -> Path:
        return self.root if part is None else self.root / "parts" / f"rank{part}"

    def score_path(self, kind: str, category: str, metric: str, *, part: int | None = None) -> Path:
        return self._base(part) / "scores" / kind / check_name(category, "category") / (
            check_name(metric, "metric") + ".csv"
        )

    def judgment_path(self, kind: str, category: str, *, part: int | None = None) -> Path:
        return self._base(part) / "judgments" / kind / (check_name(category, "category") + ".csv")

    @property
    def run_file(self) -> Path:
        return self.root / RUN_FILE

    def _own_part(self) -> int | None:
        return None if self.world_size == 1 else self.rank

    def _sources(self, relative: Path) -> list[Path]:
        """The main file and every rank's part of it (parts exist only during or after a torchrun run)."""
        paths = [self.root / relative]
        parts = self.root / "parts"
        if parts.is_dir():
            paths += sorted(p / relative for p in parts.iterdir() if p.name.startswith("rank"))
        return paths

    # -- writing -----------------------------------------------------------------------------------

    def score_writer(self, kind: str, category: str, metric: str) -> ShardWriter:
        path = self.score_path(kind, category, metric, part=self._own_part())
        return ShardWriter(path, SCORE_COLUMNS[kind])

    def judgment_writer(self, kind: str, category: str) -> ShardWriter:
        path = self.judgment_path(kind, category, part=self._own_part())
        return ShardWriter(path, (JUDGMENT_COLUMN[kind],))

    # -- reading -----------------------------------------------------------------------------------

    def _read_merged(self, relative: Path, columns: tuple[str, ...]) -> dict[str, tuple[float, ...]]:
        merged: dict[str, tuple[float, ...]] = {}
        for path in self._sources(relative):
            for sample, values in read_table(path, columns).items():
                merged.setdefault(sample, values)
        return merged

    def read_scores(self, kind: str, category: str, metric: str) -> dict[str, tuple[float, ...]]:
        """Scores of one metric on one category, ``{sample: (d0, d1)}`` or ``{sample: (d,)}``."""
        rel = self.score_path(kind, category, metric).relative_to(self.root)
        return self._read_merged(rel, SCORE_COLUMNS[kind])

    def read_judgments(self, kind: str, category: str) -> dict[str, float]:
        """Human judgments of one category, ``{sample: judge}`` (2AFC) or ``{sample: same}`` (JND)."""
        rel = self.judgment_path(kind, category).relative_to(self.root)
        return {s: v[0] for s, v in self._read_merged(rel, (JUDGMENT_COLUMN[kind],)).items()}

    def entries(self) -> list[tuple[str, str, str]]:
        """Every stored ``(kind, category, metric)``, sorted, rank parts included."""
        found: set[tuple[str, str, str]] = set()
        bases = [self.root]
        if (self.root / "parts").is_dir():
            bases += [p for p in (self.root / "parts").iterdir() if p.name.startswith("rank")]
        for base in bases:
            for kind in SCORE_COLUMNS:
                kdir = base / "scores" / kind
                if not kdir.is_dir():
                    continue
                for f in kdir.glob("*/*.csv"):
                    found.add((kind, f.parent.name, f.stem))
        return sorted(found)

    # -- merging rank parts ------------------------------------------------------------------------

    def merge_parts(self) -> None:
        """Fold every ``parts/rank*/`` file into the main layout, then remove the parts (rank 0 only)."""
        parts = self.root / "parts"
        if not parts.is_dir():
            return
        relatives: set[Path] = set()
        for rank_dir in parts.iterdir():
            relatives.update(f.relative_to(rank_dir) for f in rank_dir.rglob("*.csv"))
        for rel in sorted(relatives):
            kind = rel.parts[1]
            columns = SCORE_COLUMNS[kind] if rel.parts[0] == "scores" else (JUDGMENT_COLUMN[kind],)
            write_table(self.root / rel, columns, self._read_merged(rel, columns))
        for f in sorted(parts.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            f.unlink() if f.is_file() else f.rmdir()
        parts.rmdir()

    # -- run.json ----------------------------------------------------------------------------------

    def read_run(self) -> dict[str, Any] | None:
        """The run record, or ``None`` for a fresh folder."""
        try:
            text = self.run_file.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RunConfigError(
                f"{self.run_file}: not valid JSON ({exc}); remove the run folder and rerun.") from exc
        if not isinstance(data, dict):
            raise RunConfigError(f"{self.run_file}: expected a JSON object; remove the run folder and rerun.")
        return data

    def write_run(self, record: Mapping[str, Any]) -> None:
        atomic_write_text(self.run_file, json.dumps(record, indent=2, sort_keys=False) + "\n")

    def is_fresh(self) -> bool:
        """True when the folder is absent or holds nothing but dot files and a README (nothing scored)."""
        if not self.root.exists():
            return True
        return all(p.name.startswith(".") or p.name == "README.md" for p in self.root.iterdir())

    def remove_stale_temporaries(self) -> list[Path]:
        """Delete temporary files a killed run left behind (call only while holding :meth:`lock`)."""
        stale = [p for name in OWNED_ENTRIES if (self.root / name).is_dir()
                 for p in (self.root / name).rglob(f".*{TEMP_SUFFIX}") if p.is_file()]
        stale += [p for p in self.root.glob(f".*{TEMP_SUFFIX}") if p.is_file()]
        for p in stale:
            p.unlink()
        return stale

    def clear(self) -> None:
        """Remove everything a run wrote (``--overwrite``); files this package did not write are kept."""
        import shutil

        for name in OWNED_ENTRIES:
            p = self.root / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold an exclusive ``flock`` on the folder; a second run on the same ``--out`` is refused.

        Raises:
            RunConfigError: another process holds the lock (the message names the lock file and pid).
            StoreWriteError: the folder cannot be created or written.
        """
        path = self.root / LOCK_FILE
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            f = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held open for the whole run
        except OSError as exc:
            raise write_failure(path, exc) from exc
        try:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                f.seek(0)
                holder = f.read().strip() or "unknown"
                raise RunConfigError(
                    f"{self.root} is in use by another spips-bench run (pid {holder} holds the lock "
                    f"{path}). Wait for it to finish, or choose another --out."
                ) from exc
            f.seek(0)
            f.truncate()
            f.write(str(os.getpid()))
            f.flush()
            yield
        finally:
            f.close()  # closing the descriptor releases the lock

