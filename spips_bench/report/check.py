"""Comparing a regenerated run folder with committed results (``spips-bench tables --check``).

What must agree, file by file:

* ``tables.md`` and ``tables.tex``: exactly, character for character. They print every statistic with
  two decimals, so a change that reaches a printed digit is a real change.
* ``summary.csv``: the same rows (kind, category, metric, statistic) and the same ``n``; the numbers
  ``value``, ``ci_low`` and ``ci_high`` within :data:`SUMMARY_TOLERANCE` (``nan`` equals ``nan``).
  Metric scores are float32: another CPU (AVX2 or AVX-512 kernels) or thread count sums in another order
  and moves a score by a few units of its last place (about 1e-7 relative). Every statistic here is a
  correlation, a fraction or a percentile of them, within [-1, 1] and averaged over the samples, so such
  noise mostly moves it by far less (1e-9 was seen between two x86-64 hosts). The Pearson correlation of
  ``d0 - d1`` is the exception: a difference of two nearly equal scores loses most of their digits, and a
  change of 1e-7 in the scores was seen to move it by 1e-5. 1e-4 covers that with a margin and is still
  two decades below the two printed decimals. A rank statistic or a 2AFC decision changes only
  when two scores tie to within that noise; such a flip is reported like any other difference.
* ``run.json``: every field except those that describe the machine or the moment rather than the
  results (:data:`VOLATILE`: times, throughput, local paths, how the run was invoked); the versions of the
  environment (:data:`ENVIRONMENT`) are reported as notes, not differences, since the numbers themselves
  are compared.
"""

from __future__ import annotations

import csv
import difflib
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: ``|committed - regenerated| <= SUMMARY_TOLERANCE * max(1, |committed|)`` for the numbers of summary.csv.
SUMMARY_TOLERANCE = 1e-4
#: The numeric columns of summary.csv compared at :data:`SUMMARY_TOLERANCE`; ``n`` is compared exactly.
SUMMARY_NUMBERS = ("value", "ci_low", "ci_high")
SUMMARY_KEY = ("kind", "category", "metric", "statistic")
#: run.json fields (dotted paths, ``*`` for any key) that are not results: left out of the comparison.
#: ``arguments`` is how a run was invoked; every setting that changes a number is also in ``fingerprint``,
#: ``dataset`` and ``statistics``, which are compared. A skipped metric's ``reason`` and a skipped sample's
#: ``file`` and ``reason`` hold paths of the machine; the metric's ``note`` and the sample's name are compared.
VOLATILE = ("arguments", "started", "finished", "interrupted", "failed", "duration_s", "throughput",
            "metric_seconds", "metric_pairs_per_second", "device_name", "dataset.root", "fingerprint.global.root",
            "metrics.*.reason", "metrics.*.checkpoint", "store",
            # A MOS run's logistic parameters come from an iterative fit whose last digits follow the host's
            # arithmetic; what they give (summary.csv's plcc and rmse) is compared within the tolerance.
            "logistic_fits")
#: run.json fields that name the environment; a change is printed as a note. So is every
#: ``fingerprint.global`` entry named after a package of ``versions``.
ENVIRONMENT = ("versions", "metrics.*.packages", "fingerprint.global.scoring_code_sha256", "fingerprint.data")
#: At most this many differences are listed per file.
MAX_LISTED = 20


@dataclass(frozen=True)
class Difference:
    """One thing that differs: the file, where in it, and the committed and regenerated values."""

    file: str
    where: str
    committed: str
    regenerated: str

    def __str__(self) -> str:
        return f"{self.file}: {self.where}: committed {self.committed}, regenerated {self.regenerated}"


@dataclass
class Comparison:
    """The result of comparing two run folders."""

    differences: list[Difference]
    notes: list[str]
    #: the largest ``|committed - regenerated|`` among the summary numbers, and where it is.
    largest: tuple[float, str] = (0.0, "")

    @property
    def equal(self) -> bool:
        return not self.differences


def numbers_agree(committed: float, regenerated: float, tolerance: float = SUMMARY_TOLERANCE) -> bool:
    """Whether two summary numbers agree: both NaN, equal infinities, or within ``tolerance``."""
    if math.isnan(committed) or math.isnan(regenerated):
        return math.isnan(committed) and math.isnan(regenerated)
    if math.isinf(committed) or math.isinf(regenerated):
        return committed == regenerated
    return abs(committed - regenerated) <= tolerance * max(1.0, abs(committed))


def compare_text(name: str, committed: str, regenerated: str) -> list[Difference]:
    """Lines that differ between two versions of a text file, as ``line N`` differences."""
    a, b = committed.splitlines(), regenerated.splitlines()
    out: list[Difference] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        for k in range(max(i2 - i1, j2 - j1)):
            old = repr(a[i1 + k]) if i1 + k < i2 else "(no line)"
            new = repr(b[j1 + k]) if j1 + k < j2 else "(no line)"
            line = i1 + k + 1 if i1 + k < i2 else j1 + k + 1
            out.append(Difference(name, f"line {line}", old, new))
    return out


def _summary_rows(text: str, name: str) -> dict[tuple[str, ...], dict[str, str]]:
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in (*SUMMARY_KEY, *SUMMARY_NUMBERS, "n") if c not in (reader.fieldnames or ())]
    if missing:
        raise ValueError(f"{name}: no column(s) {', '.join(missing)}; is it a summary.csv of spips-bench?")
    return {tuple(row[c] for c in SUMMARY_KEY): row for row in reader}


def compare_summary(name: str, committed: str, regenerated: str) -> tuple[list[Difference], tuple[float, str]]:
    """Rows and numbers of two summary.csv texts; returns the differences and the largest number gap."""
    old, new = _summary_rows(committed, name), _summary_rows(regenerated, name)
    out: list[Difference] = []
    largest: tuple[float, str] = (0.0, "")
    for key in [*old, *(k for k in new if k not in old)]:
        where = ",".join(key)
        if key not in new or key not in old:
            out.append(Difference(name, where, "a row" if key in old else "(no row)",
                                  "a row" if key in new else "(no row)"))
            continue
        for col in SUMMARY_NUMBERS:
            ta, tb = old[key][col], new[key][col]
            if ta == tb:
                continue
            try:
                a, b = float(ta), float(tb)
            except ValueError:  # not a number on one side
                out.append(Difference(name, f"{where} {col}", ta, tb))
                continue
            if not numbers_agree(a, b):
                out.append(Difference(name, f"{where} {col}", ta, tb))
            elif math.isfinite(a) and abs(a - b) > largest[0]:
                largest = (abs(a - b), f"{where} {col}")
        if old[key]["n"] != new[key]["n"]:
            out.append(Difference(name, f"{where} n", old[key]["n"], new[key]["n"]))
    return out, largest


def _matches(path: str, pattern: str) -> bool:
    parts, pats = path.split("."), pattern.split(".")
    return len(parts) >= len(pats) and all(p == q or q == "*" for p, q in zip(parts, pats, strict=False))


def _flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, Mapping) and value:
        for k, v in value.items():
            yield from _flatten(v, f"{prefix}.{k}" if prefix else str(k))
    else:
        yield prefix, value


def _results_view(record: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a run.json that the comparison reads (skipped samples by name only)."""
    view = dict(record)
    view["skipped"] = [{k: e.get(k) for k in ("kind", "category", "sample")} for e in record.get("skipped", [])]
    return view


def compare_run_records(name: str, committed: Mapping[str, Any], regenerated: Mapping[str, Any],
                        ) -> tuple[list[Difference], list[str]]:
    """The result fields of two run.json records; returns the differences and notes on the environment."""
    old = dict(_flatten(_results_view(committed)))
    new = dict(_flatten(_results_view(regenerated)))
    packages = {*committed.get("versions", {}), *regenerated.get("versions", {})}
    environment = (*ENVIRONMENT, *(f"fingerprint.global.{p}" for p in packages))
    out: list[Difference] = []
    notes: list[str] = []
    for path in [*old, *(p for p in new if p not in old)]:
        if any(_matches(path, v) for v in VOLATILE):
            continue
        a, b = old.get(path, "(absent)"), new.get(path, "(absent)")
        if a == b:
            continue
        shown = (json.dumps(a, sort_keys=True) if a != "(absent)" else a,
                 json.dumps(b, sort_keys=True) if b != "(absent)" else b)
        if any(_matches(path, e) for e in environment):
            notes.append(f"{name}: {path}: committed {shown[0]}, here {shown[1]} (environment; not compared)")
        else:
            out.append(Difference(name, path, *shown))
    return out, notes


def compare_run_folders(committed_dir: Path, regenerated_dir: Path, reports: list[str]) -> Comparison:
    """Compare ``run.json``, ``summary.csv`` and the named report files of two run folders.

    Raises:
        ValueError: a summary.csv without the expected columns.
    """
    differences: list[Difference] = []
    notes: list[str] = []
    largest: tuple[float, str] = (0.0, "")
    for name in ("run.json", "summary.csv", *reports):
        exp, act = committed_dir / name, regenerated_dir / name
        if not exp.is_file():
            differences.append(Difference(name, "file", f"(missing from {committed_dir})", "a file"))
            continue
        a, b = exp.read_text(encoding="utf-8"), act.read_text(encoding="utf-8")
        if name == "run.json":
            diffs, more = compare_run_records(name, json.loads(a), json.loads(b))
            notes += more
        elif name == "summary.csv":
            diffs, largest = compare_summary(name, a, b)
        else:
            diffs = compare_text(name, a, b)
        if len(diffs) > MAX_LISTED:
            diffs = [*diffs[:MAX_LISTED],
                     Difference(name, f"and {len(diffs) - MAX_LISTED} more", "...", "...")]
        differences += diffs
    return Comparison(differences, notes, largest)
