"""The per-sample score store: the seam between computing metrics and reporting on them.

A run folder (``--out``) holds, one value per cell::

    run.json                                  configuration fingerprint, versions, per-metric status,
                                              and the row count and SHA-256 of every store file
    judgments/2afc/<category>.csv             sample,judge      (fraction of raters preferring p1)
    judgments/jnd/<category>.csv              sample,same       (fraction of raters judging p0 == p1)
    scores/2afc/<category>/<metric>.csv       sample,d0,d1      (d0 = metric(p0, ref), d1 = metric(p1, ref))
    scores/jnd/<category>/<metric>.csv        sample,d          (d = metric(p0, p1): dist = p0, ref = p1)
    parts/rank<r>/...                         the same layout, one tree per torchrun rank, merged at the end
    summary.csv, tables.md, tables.tex        derived from the files above only

Rows are CSV records (a sample name holding a comma or a quote is quoted), sorted by sample name, one per
sample; values are written with Python's shortest round-trip ``repr`` of the float64 value (``inf`` and
``-inf`` as such, ``nan`` for a failed score), so equal scores always give byte-identical files. A file
is read back only if it is exactly in that form (no duplicate sample, no cut or reformatted number) and,
for the files of the main layout, only if its SHA-256 is the one ``run.json`` records (``"store"``).

Each file is rewritten whole through :func:`spips_bench.io.atomic_write_text` (a temporary file,
``fsync``, ``os.replace``): a reader, or a run killed at any moment, sees either the previous or the
next complete version, never half a file. The new digests reach ``run.json`` before the files are
replaced, the previous ones stay accepted until the replacement is done, so a kill between the two
writes leaves a folder that verifies.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import io
import json
import math
import os
import re
import struct
import sys
import threading
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from spips_bench.errors import DatasetError, RunConfigError
from spips_bench.io import TEMP_SUFFIX, atomic_write_text, sha256_bytes, write_failure
from spips_bench.stats.kinds import KINDS, JudgmentKind, judgment_kind

RUN_FILE = "run.json"
LOCK_FILE = ".lock"
#: The key of ``run.json`` that holds ``{relative path: {"rows": n, "sha256": hex}}`` of every store file.
DIGESTS_KEY = "store"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
#: Everything a run writes; ``--overwrite`` removes exactly these and nothing else.
OWNED_ENTRIES = ("scores", "judgments", "parts", RUN_FILE, "summary.csv", "tables.md", "tables.tex")
#: Unicode categories a sample name may not hold: control characters and line or paragraph separators.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})


def format_value(value: float) -> str:
    """The one text form of a stored number: shortest round-trip repr (``inf``, ``-inf``), ``nan``."""
    v = float(value)
    return "nan" if math.isnan(v) else repr(v)


def check_name(name: str, what: str) -> str:
    """Refuse names that cannot be a file name on every platform (``/``, spaces, leading dots)."""
    if not _SAFE_NAME.match(name):
        raise ValueError(
            f"{what} {name!r} cannot name a store file; use letters, digits, '.', '_', '+' and '-' only."
        )
    return name


def sample_problem(name: object) -> str | None:
    """Why ``name`` cannot be a sample name of the store (None if it can).

    A sample name is any non-empty string without control characters or line/paragraph separators
    (a comma or a quote is fine: the CSV writer quotes it). Such characters would be read back by other
    tools as a line break, so they are refused instead of stored.
    """
    if not isinstance(name, str) or not name:
        return "a sample name must be a non-empty string"
    bad = sorted({c for c in name if unicodedata.category(c) in _UNSAFE_CATEGORIES})
    if bad:
        return f"it holds the control or line-break character(s) {', '.join(map(ascii, bad))}"
    return None


def check_sample(name: str, where: object) -> str:
    """``name`` if it can be stored as a sample name; a ValueError naming it and ``where`` otherwise."""
    problem = sample_problem(name)
    if problem is not None:
        raise ValueError(f"{where}: sample {name!r} cannot be stored: {problem}. Rename the file(s) of "
                         "that sample to letters, digits, '.', '_' and '-'.")
    return name


def render_table(columns: tuple[str, ...], rows: Mapping[str, tuple[float, ...]], where: object = "store"
                 ) -> str:
    """The text of a store file: the header ``sample,<columns>``, then one CSV record per sample, sorted.

    Raises:
        ValueError: a row with the wrong number of values, or a sample name that cannot be stored.
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(("sample", *columns))
    for sample in sorted(rows):
        values = rows[sample]
        if len(values) != len(columns):
            raise ValueError(f"{where}: sample {sample!r} has {len(values)} values for columns {columns}")
        writer.writerow((check_sample(sample, where), *map(format_value, values)))
    return buf.getvalue()


def write_table(path: Path, columns: tuple[str, ...], rows: Mapping[str, tuple[float, ...]]) -> None:
    """Write ``sample,<columns>`` rows sorted by sample name, atomically."""
    atomic_write_text(path, render_table(columns, rows, path))


def _digest(data: bytes, rows: int) -> dict[str, Any]:
    return {"rows": rows, "sha256": sha256_bytes(data)}


def _corrupt(where: object, what: str) -> DatasetError:
    return DatasetError(
        f"{where}: {what}. The file was changed or damaged after spips-bench wrote it; remove it and rerun "
        "the same command (its samples are scored again), or restore it from a backup."
    )


def parse_table(data: bytes, path: Path, columns: tuple[str, ...]) -> dict[str, tuple[float, ...]]:
    """The rows of the bytes of a store file, refusing anything :func:`write_table` would not write.

    Raises:
        DatasetError: naming ``path`` (and the line): not UTF-8, a foreign header, a wrong number of
            fields, a value that is not a number in its stored form (e.g. a number cut short), a
            duplicate or out-of-order sample, or a sample name that cannot be stored.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _corrupt(path, f"not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    expected = ("sample", *columns)
    try:
        header = next(reader, None)
        if header is None or tuple(header) != expected:
            got = ",".join(header) if header else "an empty file"
            raise DatasetError(
                f"{path}: expected the header {','.join(expected)!r}, found {got!r}. The file was not written "
                "by spips-bench; remove it (or the whole run folder) and rerun."
            )
        rows: dict[str, tuple[float, ...]] = {}
        previous: str | None = None
        for record in reader:
            where = f"{path}:{reader.line_num}"
            if len(record) != len(columns) + 1:
                raise _corrupt(where, f"expected {len(columns) + 1} fields, got {record!r}")
            sample, fields = record[0], record[1:]
            problem = sample_problem(sample)
            if problem is not None:
                raise _corrupt(where, f"sample {sample!r}: {problem}")
            if sample in rows:
                raise _corrupt(where, f"sample {sample!r} appears twice")
            if previous is not None and sample < previous:
                raise _corrupt(where, f"sample {sample!r} is out of order (after {previous!r})")
            try:
                values = tuple(float(f) for f in fields)
            except ValueError:
                raise _corrupt(where, f"not a number in {record!r}") from None
            if [format_value(v) for v in values] != fields:
                raise _corrupt(where, f"{record!r} is not in the stored number form (shortest repr); "
                                            "a number cut short or edited")
            rows[sample] = values
            previous = sample
    except csv.Error as exc:
        raise _corrupt(f"{path}:{reader.line_num}", f"not a valid CSV record ({exc})") from None
    if render_table(columns, rows, path) != text:  # line endings, quoting, blank lines: one form only
        raise _corrupt(path, "not in the form spips-bench writes (line endings, quoting or blank lines)")
    return rows


def read_table(path: Path, columns: tuple[str, ...]) -> dict[str, tuple[float, ...]]:
    """Read a file written by :func:`write_table`; a missing file is an empty table.

    Raises:
        DatasetError: the file is not exactly what :func:`write_table` writes (see :func:`parse_table`).
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    return parse_table(data, path, columns)


class ShardWriter:
    """Accumulates rows for one store file and rewrites it whole on :meth:`flush`.

    The file is read once at creation, so rows stored by an earlier (interrupted) run are kept; a row
    that is already stored is never replaced (a resumed run recomputes whole batches).

    Args:
        path: the store file.
        columns: its value columns.
        store: the run folder it belongs to: reads are verified against, and writes recorded in, the
            digests of its ``run.json``; None for a file on its own.
    """

    def __init__(self, path: Path, columns: tuple[str, ...], store: ScoreStore | None = None) -> None:
        self.path = path
        self.columns = columns
        self.store = store
        self.rows: dict[str, tuple[float, ...]] = (read_table(path, columns) if store is None
                                                   else store.read_file(path, columns))
        self._dirty = False

    @property
    def dirty(self) -> bool:
        return self._dirty

    def add(self, sample: str, values: tuple[float, ...]) -> None:
        if sample not in self.rows:
            check_sample(sample, self.path)
            self.rows[sample] = values
            self._dirty = True

    def flush(self) -> None:
        if self.store is not None:
            self.store.flush([self])
        elif self._dirty:
            write_table(self.path, self.columns, self.rows)
            self._dirty = False

    def _written(self) -> None:
        self._dirty = False


# -- the lock ------------------------------------------------------------------------------------------------

#: (device, inode) of the lock files this process holds. POSIX record locks do not exclude the process
#: that holds them, and closing any descriptor of the file would release them: both are checked here.
_HELD: set[tuple[int, int]] = set()
_HELD_GUARD = threading.Lock()


def _file_key(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _lock_holder(fd: int, recorded: str) -> int | None:
    """The pid of the live process holding the POSIX lock on ``fd`` (None when not known)."""
    if sys.platform.startswith("linux"):
        layout = "hhqqi4x"  # struct flock on Linux: l_type, l_whence, l_start, l_len, l_pid
        probe = struct.pack(layout, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        with contextlib.suppress(OSError):
            l_type, _, _, _, pid = struct.unpack(layout, fcntl.fcntl(fd, fcntl.F_GETLK, probe))
            if l_type != fcntl.F_UNLCK and pid > 0:
                return pid
    if recorded.isdigit() and _alive(int(recorded)):  # elsewhere: the pid the holder wrote, if alive
        return int(recorded)
    return None


def _in_use(root: Path, path: Path, holder: int | None) -> RunConfigError:
    who = f"pid {holder} holds the lock {path}" if holder is not None else f"a process holds the lock {path}"
    return RunConfigError(f"{root} is in use by another spips-bench run ({who}). Wait for it to finish, or "
                          "choose another --out.")


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
        #: Digests of the main-layout files, ``{relative path: entry}``; None until run.json is read.
        self._digests: dict[str, dict[str, Any]] | None = None
        #: The record last written by :meth:`write_run`; flushes rewrite it with the new digests.
        self._record: dict[str, Any] | None = None

    # -- paths -------------------------------------------------------------------------------------

    def _base(self, part: int | None) -> Path:
        return self.root if part is None else self.root / "parts" / f"rank{part}"

    def score_path(self, kind: str | JudgmentKind, category: str, metric: str, *, part: int | None = None,
                   ) -> Path:
        return self._base(part) / "scores" / judgment_kind(kind).name / check_name(category, "category") / (
            check_name(metric, "metric") + ".csv"
        )

    def judgment_path(self, kind: str | JudgmentKind, category: str, *, part: int | None = None) -> Path:
        return self._base(part) / "judgments" / judgment_kind(kind).name / (check_name(category, "category")
                                                                            + ".csv")

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

    def _main_key(self, path: Path) -> str | None:
        """The digest key of a main-layout store file (None for rank parts and other files)."""
        try:
            rel = path.relative_to(self.root)
        except ValueError:
            return None
        return rel.as_posix() if rel.parts and rel.parts[0] in ("scores", "judgments") else None

    # -- digests -----------------------------------------------------------------------------------

    def _known_digests(self) -> dict[str, dict[str, Any]] | None:
        """The recorded digests; None when the folder has no run.json yet (nothing to verify against)."""
        if self._digests is None and self.run_file.exists():
            self.read_run()
        return self._digests

    def _main_files(self) -> list[Path]:
        return sorted(p for name in ("scores", "judgments") if (self.root / name).is_dir()
                      for p in (self.root / name).rglob("*.csv") if p.is_file())

    def read_file(self, path: Path, columns: tuple[str, ...]) -> dict[str, tuple[float, ...]]:
        """Read one store file; a main-layout file must match the digest that run.json records for it.

        Raises:
            DatasetError: naming the file: it is not in the stored form (see :func:`parse_table`), its
                content differs from the recorded digest, or run.json does not record it.
        """
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return {}
        rows = parse_table(data, path, columns)
        key = self._main_key(path)
        digests = self._known_digests() if key is not None else None
        if digests is None or key is None or not self.run_file.exists():
            return rows
        entry = digests.get(key)
        if entry is None:
            raise _corrupt(path, f"{self.run_file} records no such store file")
        sha = sha256_bytes(data)
        if sha not in (entry.get("sha256"), entry.get("replaces", {}).get("sha256")):
            raise _corrupt(path, f"its content does not match the digest {self.run_file} records for it "
                                 f"({entry.get('rows')} rows, SHA-256 {str(entry.get('sha256'))[:16]}...; the "
                                 f"file holds {len(rows)} rows, SHA-256 {sha[:16]}...)")
        return rows

    def flush(self, writers: Iterable[ShardWriter]) -> None:
        """Write every dirty writer's file, in order, recording the new digests in run.json first.

        Raises:
            StoreWriteError: a file (or run.json) cannot be written; the files not yet replaced keep
                their previous version and digest.
        """
        dirty = [w for w in writers if w.dirty]
        if not dirty:
            return
        texts = [render_table(w.columns, w.rows, w.path) for w in dirty]
        self._write_files([(w.path, t) for w, t in zip(dirty, texts, strict=True)],
                          [len(w.rows) for w in dirty])
        for w in dirty:
            w._written()

    def _write_files(self, files: list[tuple[Path, str]], rows: list[int]) -> None:
        """Write store files atomically, announcing their digests in run.json first (when it exists)."""
        if self._record is None and self.run_file.exists():
            self._record = self.read_run()  # a store opened on an existing run folder keeps it current
        if self._digests is None:
            self._digests = {}
        digests = self._digests
        before: dict[str, dict[str, Any] | None] = {}
        for (path, text), n in zip(files, rows, strict=True):
            key = self._main_key(path)
            if key is None:
                continue
            old = digests.get(key)
            before[key] = old
            entry = _digest(text.encode("utf-8"), n)
            if old is not None and old.get("sha256") != entry["sha256"] and path.exists():
                entry["replaces"] = {k: old[k] for k in ("rows", "sha256") if k in old}
            digests[key] = entry
        if before and self._record is not None:
            self.write_run(self._record)
        try:
            for path, text in files:
                atomic_write_text(path, text)
                key = self._main_key(path)
                if key in before:
                    digests[key].pop("replaces", None)  # the new version is in place
                    del before[key]
        finally:
            for key, old in before.items():  # not written: the previous version is the one on disk
                if old is None:
                    digests.pop(key, None)
                else:
                    digests[key] = old

    # -- writing -----------------------------------------------------------------------------------

    def score_writer(self, kind: str | JudgmentKind, category: str, metric: str) -> ShardWriter:
        path = self.score_path(kind, category, metric, part=self._own_part())
        return ShardWriter(path, judgment_kind(kind).score_columns, self)

    def judgment_writer(self, kind: str | JudgmentKind, category: str) -> ShardWriter:
        path = self.judgment_path(kind, category, part=self._own_part())
        return ShardWriter(path, (judgment_kind(kind).judgment_column,), self)

    # -- reading -----------------------------------------------------------------------------------

    def _read_merged(self, relative: Path, columns: tuple[str, ...]) -> dict[str, tuple[float, ...]]:
        merged: dict[str, tuple[float, ...]] = {}
        for path in self._sources(relative):
            for sample, values in self.read_file(path, columns).items():
                merged.setdefault(sample, values)
        return merged

    def read_scores(self, kind: str | JudgmentKind, category: str, metric: str) -> dict[str, tuple[float, ...]]:
        """Scores of one metric on one category, one value per score column of the kind: ``{sample: (d0, d1)}``
        (2AFC) or ``{sample: (d,)}`` (JND)."""
        rel = self.score_path(kind, category, metric).relative_to(self.root)
        return self._read_merged(rel, judgment_kind(kind).score_columns)

    def read_judgments(self, kind: str | JudgmentKind, category: str) -> dict[str, float]:
        """Human judgments of one category, ``{sample: judge}`` (2AFC) or ``{sample: same}`` (JND)."""
        rel = self.judgment_path(kind, category).relative_to(self.root)
        column = judgment_kind(kind).judgment_column
        return {s: v[0] for s, v in self._read_merged(rel, (column,)).items()}

    def entries(self) -> list[tuple[str, str, str]]:
        """Every stored ``(kind, category, metric)``, sorted, rank parts included."""
        found: set[tuple[str, str, str]] = set()
        bases = [self.root]
        if (self.root / "parts").is_dir():
            bases += [p for p in (self.root / "parts").iterdir() if p.name.startswith("rank")]
        for base in bases:
            for kind in KINDS:
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
        files: list[tuple[Path, str]] = []
        rows: list[int] = []
        for rel in sorted(relatives):
            kind = judgment_kind(rel.parts[1])
            columns = kind.score_columns if rel.parts[0] == "scores" else (kind.judgment_column,)
            merged = self._read_merged(rel, columns)
            files.append((self.root / rel, render_table(columns, merged, self.root / rel)))
            rows.append(len(merged))
        self._write_files(files, rows)
        for f in sorted(parts.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            f.unlink() if f.is_file() else f.rmdir()
        parts.rmdir()

    # -- run.json ----------------------------------------------------------------------------------

    def read_run(self) -> dict[str, Any] | None:
        """The run record, or ``None`` for a fresh folder; loads the store digests it records.

        A record written before digests were kept has none: the store files present are adopted as
        they are (their form is still checked on every read).

        Raises:
            RunConfigError: run.json is not UTF-8, not JSON, or not an object.
        """
        try:
            text = self.run_file.read_text(encoding="utf-8")
        except FileNotFoundError:
            self._digests = {}
            return None
        except UnicodeDecodeError as exc:
            raise RunConfigError(f"{self.run_file}: not UTF-8 text ({exc.reason} at byte {exc.start}); remove "
                                 "the run folder and rerun.") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RunConfigError(
                f"{self.run_file}: not valid JSON ({exc}); remove the run folder and rerun.") from exc
        if not isinstance(data, dict):
            raise RunConfigError(f"{self.run_file}: expected a JSON object; remove the run folder and rerun.")
        recorded = data.get(DIGESTS_KEY)
        if isinstance(recorded, dict):
            self._digests = {str(k): dict(v) for k, v in recorded.items() if isinstance(v, dict)}
        else:
            self._digests = {}
            for path in self._main_files():
                data_bytes = path.read_bytes()
                key = self._main_key(path)
                if key is not None:
                    self._digests[key] = _digest(data_bytes, max(data_bytes.count(b"\n") - 1, 0))
        return data

    def write_run(self, record: dict[str, Any]) -> None:
        """Write ``record`` as run.json, with the current digests of the store files under ``"store"``.

        Later flushes of this store rewrite the same record object with their new digests.
        """
        if self._digests is None:
            self._known_digests()
            if self._digests is None:
                self._digests = {}
        record[DIGESTS_KEY] = {k: self._digests[k] for k in sorted(self._digests)}
        self._record = record
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
        self._digests = {}

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold an exclusive POSIX record lock (``lockf``) on the folder; a second run on it is refused.

        The lock belongs to this process alone: DataLoader workers forked from it do not hold it, so the
        moment this process ends, killed or not, the next run may start.

        Raises:
            RunConfigError: another process (or this one) holds the lock; the message names the lock file
                and the live holder's pid.
            StoreWriteError: the folder cannot be created or written.
        """
        path = self.root / LOCK_FILE
        with _HELD_GUARD:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                held = _file_key(path)
                if held is not None and held in _HELD:  # opening it again would release our own lock
                    raise _in_use(self.root, path, os.getpid())
                f = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held open for the whole run
            except OSError as exc:
                raise write_failure(path, exc) from exc
            try:
                try:
                    fcntl.lockf(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                        raise
                    f.seek(0)
                    raise _in_use(self.root, path, _lock_holder(f.fileno(), f.read().strip())) from exc
                st = os.fstat(f.fileno())
                key = (st.st_dev, st.st_ino)
                _HELD.add(key)
            except BaseException:
                f.close()
                raise
        try:
            f.seek(0)
            f.truncate()
            f.write(str(os.getpid()))
            f.flush()
            yield
        finally:
            with _HELD_GUARD:
                _HELD.discard(key)
                f.close()  # closing the descriptor releases the lock
