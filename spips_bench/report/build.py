"""The reports of a run folder: ``summary.csv``, ``tables.md`` and ``tables.tex`` from its store and record.

:func:`write_reports` turns the store into the reports without computing any metric, so
``spips-bench tables`` can rebuild them anywhere.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from spips_bench.errors import RunConfigError
from spips_bench.io import atomic_write_text
from spips_bench.run.store import ScoreStore

#: Report files and the ``--format`` names that select them.
REPORT_FILES = {"md": "tables.md", "tex": "tables.tex"}


# -- reports -------------------------------------------------------------------------------------------


#: The category of a MOS summary that holds every image of the set (all distortion types).
ALL_CATEGORY = "all"


def _summaries(store: ScoreStore, record: Mapping[str, Any], n_boot: int, seed: int,
               fits: dict[str, dict[str, Any]] | None = None) -> tuple[list[Any], list[str]]:
    """Summary rows of every complete (kind, category, metric) in the store, plus footnotes.

    An infinite score is an ordered value (as in the official LPIPS evaluation) and stays in; a NaN
    score (the metric failed) is left out of every statistic of its metric. A (metric, category)
    without one usable sample gets a footnote instead of rows; the others are reported as usual.

    A scale kind (MOS) also gets the category :data:`ALL_CATEGORY`, over the images of every category of
    the run, when the metric completed each of them; ``fits`` (when given) receives its logistic fits,
    ``{metric: {category: fit}}``.
    """
    import numpy as np

    from spips_bench.stats.kinds import judgment_kind
    from spips_bench.stats.summary import summarize

    metrics: Mapping[str, Any] = record.get("metrics", {})
    expected: Mapping[str, int] = record.get("categories", {})
    skipped = skipped_counts(record)
    rows: list[Any] = []
    notes: list[str] = []
    nan_counts: dict[str, list[str]] = {}
    inf_counts: dict[str, list[str]] = {}
    pooled: dict[tuple[str, str], list[tuple[Any, Any]]] = {}  # (kind, metric) -> usable arrays per category
    order = {name: i for i, name in enumerate(metrics)}
    entries = sorted(store.entries(), key=lambda e: (e[0], e[1], order.get(e[2], len(order)), e[2]))
    for kind, category, metric in entries:
        info = metrics.get(metric)
        if info is None:
            notes.append(f"{metric}: scores found in the store but not in run.json; left out.")
            continue
        judgments = store.read_judgments(kind, category)
        scores = store.read_scores(kind, category, metric)
        n_expected = expected.get(f"{kind}/{category}")
        if n_expected is not None:  # skipped samples (--on-error skip) have no row: they are not owed
            n_expected -= skipped.get(f"{kind}/{category}", 0)
        foreign = sorted(set(scores) - set(judgments))
        if foreign or (n_expected is not None and len(judgments) > n_expected):
            path = (store.score_path(kind, category, metric) if foreign
                    else store.judgment_path(kind, category))
            what = (f"{len(foreign)} score row(s) for samples without a judgment (first: {foreign[0]!r})"
                    if foreign else f"{len(judgments)} judgment rows for {n_expected} samples")
            notes.append(f"{metric} on {kind}/{category}: left out: the store holds {what}, rows no run of "
                         f"this folder wrote; remove {path} and rerun to score it again.")
            continue
        if n_expected is None or len(judgments) != n_expected or set(scores) != set(judgments):
            notes.append(f"{metric} on {kind}/{category}: incomplete ({len(scores)} of "
                         f"{n_expected or len(judgments)} samples scored); rerun to finish it.")
            continue
        samples = sorted(judgments)
        h = np.array([judgments[s] for s in samples], dtype=np.float64)
        d = np.array([scores[s] for s in samples], dtype=np.float64)
        d = d.reshape(len(samples), len(judgment_kind(kind).score_columns))
        failed = np.isnan(d).any(axis=1)
        infinite = np.isinf(d).any(axis=1) & ~failed
        keep = ~failed & np.isfinite(h)
        where = f"{kind}/{category}"
        if failed.any():
            nan_counts.setdefault(metric, []).append(f"{int(failed.sum())} of {len(samples)} in {where}")
        if infinite.any():
            inf_counts.setdefault(metric, []).append(f"{int(infinite.sum())} of {len(samples)} in {where}")
        if not keep.any():
            notes.append(f"{metric} on {where}: no statistics: every one of its {len(samples)} scores is NaN "
                         "(the metric failed on each; listed in run.json).")
            continue
        hib = bool(info["higher_is_better"])
        columns = tuple(d[keep, j] for j in range(d.shape[1]))
        rows += summarize(kind, category, metric, columns, h[keep], higher_is_better=hib, n_boot=n_boot, seed=seed,
                          fits=fits)
        if judgment_kind(kind).is_scale:
            pooled.setdefault((kind, metric), []).append((columns[0], h[keep]))
    for (kind, metric), parts in pooled.items():
        categories = [key.split("/", 1)[1] for key in expected if key.split("/", 1)[0] == kind]
        if len(parts) < 2 or len(parts) != len(categories):
            continue  # one category is its own total; a missing one would make "all" a different set
        hib = bool(metrics[metric]["higher_is_better"])
        d_all = np.concatenate([p[0] for p in parts])
        h_all = np.concatenate([p[1] for p in parts])
        rows += summarize(kind, ALL_CATEGORY, metric, (d_all,), h_all, higher_is_better=hib, n_boot=n_boot,
                          seed=seed, fits=fits)
    for metric, places in nan_counts.items():
        notes.append(f"{metric}: NaN scores excluded from all statistics ({'; '.join(places)} samples; listed in "
                     "run.json).")
    for metric, places in inf_counts.items():
        notes.append(f"{metric}: infinite scores ({'; '.join(places)} samples, e.g. PSNR of identical images) are "
                     "ordered values, as in the official LPIPS evaluation, in every statistic but the PLCC of "
                     "d0 - d1 and of -d, which leave them out (its n says how many remain).")
    return rows, notes


def report_title(record: Mapping[str, Any]) -> str:
    """"BAPPS val", or "Demo set (synthetic judgments)" so that synthetic data is always labelled; a
    dataset plugin's own title (recorded with "(synthetic judgments)" when its judgments are)."""
    ds = record.get("dataset", {})
    if ds.get("title"):
        return str(ds["title"])
    if ds.get("synthetic_judgments"):
        return f"Demo set ({ds.get('label', 'synthetic judgments')})"
    return f"BAPPS {ds.get('split', '?')}"


def skipped_counts(record: Mapping[str, Any]) -> dict[str, int]:
    """Samples skipped under ``--on-error skip``, counted per ``"kind/category"``."""
    counts: dict[str, int] = {}
    for entry in record.get("skipped", []):
        key = f"{entry.get('kind')}/{entry.get('category')}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def skipped_metrics(record: Mapping[str, Any]) -> dict[str, list[str]]:
    """The metrics a run could not create, grouped by their short reason (``note``), in run order.

    A record written before notes existed groups its skipped metrics under one generic note.
    """
    groups: dict[str, list[str]] = {}
    for name, info in record.get("metrics", {}).items():
        if info.get("status") == "skipped":
            groups.setdefault(info.get("note") or "reason recorded in run.json", []).append(name)
    return groups


def skip_messages(record: Mapping[str, Any]) -> list[str]:
    """The lines that tell the user which metrics were not run: one per group with its fix, then each
    distinct detailed reason once (the same details are in ``run.json``)."""
    metrics: Mapping[str, Any] = record.get("metrics", {})
    lines: list[str] = []
    for note, names in skipped_metrics(record).items():
        lines.append(f"not run: {', '.join(names)}: {note}")
        details: dict[str, list[str]] = {}
        for name in names:
            reason = str(metrics[name].get("reason") or "")
            if reason and not reason.startswith(note):
                details.setdefault(reason, []).append(name)
        lines += [f"  details ({', '.join(who)}): {reason}" for reason, who in details.items()]
    return lines


def metric_footnotes(record: Mapping[str, Any]) -> list[str]:
    """Footnotes for skipped metrics and samples and the image size of the run (the tables mark
    untrained metrics themselves)."""
    notes: list[str] = []
    ds = record.get("dataset", {})
    size = ds.get("load_size")
    what = "Images" if any(str(k).startswith("mos/") for k in record.get("categories", {})) else "Patches"
    notes.append(f"{what} loaded at {size}x{size} px (PIL bilinear)." if size else
                 f"{what} loaded at their stored size (no resizing).")
    for note, names in skipped_metrics(record).items():
        notes.append(f"Not run: {', '.join(names)} ({note}; details in run.json).")
    trained = [f"{name} with {Path(info['checkpoint']).name + ' ' if info.get('checkpoint') else ''}(SHA-256 "
               f"{str(info['checkpoint_sha256'])[:12]})" for name, info in record.get("metrics", {}).items()
               if info.get("checkpoint_sha256") and info.get("status") != "skipped"]
    if trained:
        notes.append(f"Scored with trained checkpoints: {', '.join(trained)}; run.json names each file and its "
                     "full SHA-256.")
    counts = skipped_counts(record)
    if counts:
        where = ", ".join(f"{n} in {key}" for key, n in counts.items())
        # No "--" here: LaTeX would typeset the flag's dashes as one en dash.
        notes.append(f"{sum(counts.values())} sample(s) skipped (on-error policy: skip): {where}. They are "
                     "left out of every statistic; run.json lists each with its file and the reason.")
    return notes


def absent_footnotes(record: Mapping[str, Any]) -> list[str]:
    """The footnote naming the categories of the plan that the data lacked, so that a table made from
    part of BAPPS says which rows it cannot have."""
    absent = record.get("dataset", {}).get("absent", [])
    if not absent:
        return []
    # No "--" here: LaTeX would typeset the flag's dashes as one en dash.
    return [f"Not scored, absent from the data: {', '.join(absent)}. The download command (spips-bench "
            "download bapps) fetches them; a rerun into this folder then adds them."]


def category_titles(record: Mapping[str, Any], categories: Sequence[str]) -> dict[str, str]:
    """Column headers of the run's categories where its dataset names them (a MOS set's distortion types,
    ``"01 additive Gaussian noise"``); empty for a dataset that does not, or that is no longer installed."""
    from spips_bench.data.registry import get_dataset

    try:
        dataset = get_dataset(str(record.get("dataset", {}).get("name", "")))
    except ValueError:
        return {}
    title = getattr(dataset, "category_title", None)
    if title is None:
        return {}
    return {c: str(title(c)) for c in categories}


def open_run(folder: str | os.PathLike[str]) -> tuple[ScoreStore, dict[str, Any]]:
    """The score store of a run folder and its ``run.json``.

    Raises:
        RunConfigError: ``folder`` has no ``run.json``.
    """
    store = ScoreStore(folder)
    record = store.read_run()
    if record is None:
        raise RunConfigError(f"{store.run_file} not found: {store.root} is not a run folder of "
                             "`spips-bench run`; pass the --out of a run.")
    return store, record


def write_reports(out: str | os.PathLike[str], *, formats: Sequence[str] = ("md", "tex"),
                  intervals: bool = False) -> dict[str, Path]:
    """Write ``summary.csv`` and the tables of the run folder ``out`` from its store alone.

    The bootstrap size and seed are those recorded in ``run.json``, so a rebuild gives byte-identical
    files. No metric is created and no image is read. The comparison with the paper's values is written
    elsewhere, by :func:`spips_bench.report.paper.write_paper_tables`.

    Args:
        out: a run folder written by ``spips-bench run``.
        formats: any of ``"md"``, ``"tex"``.
        intervals: show bootstrap intervals in the tables.

    Returns:
        The paths written, keyed ``"summary"``, ``"md"``, ``"tex"``.

    Raises:
        RunConfigError: ``out`` has no ``run.json``.
        ValueError: an unknown format.
    """
    from spips_bench.report.tables import MetricInfo, render_tables
    from spips_bench.stats.summary import write_summary_csv

    unknown = [f for f in formats if f not in REPORT_FILES]
    if unknown:
        raise ValueError(f"unknown table format(s) {unknown}; choose from {', '.join(REPORT_FILES)}.")
    store, record = open_run(out)
    stats = record.get("statistics", {})
    fits: dict[str, dict[str, Any]] = {}
    rows, notes = _summaries(store, record, int(stats.get("bootstrap", 1000)), int(stats.get("seed", 0)), fits)
    if fits or "logistic_fits" in record:  # the fits behind each MOS plcc and rmse, for whoever checks them
        fitted = {"parameters": "f(q) = b1 * (1/2 - 1 / (1 + exp(b2 * (q - b3)))) + b4 * q + b5, q = the "
                                "metric's score, negated for a distance (higher = better quality)",
                  "fits": fits}
        if record.get("logistic_fits") != fitted:
            record = {**record, "logistic_fits": fitted}
            store.write_run(record)
    written: dict[str, Path] = {"summary": store.root / "summary.csv"}
    write_summary_csv(written["summary"], rows)
    present = {r.metric for r in rows}
    infos = [MetricInfo(name, bool(info["higher_is_better"]), trained=bool(info.get("trained", True)),
                        ablation_of=info.get("ablation_of"))
             for name, info in record.get("metrics", {}).items() if name in present]
    footnotes = [*metric_footnotes(record), *absent_footnotes(record), *notes]
    titles = category_titles(record, sorted({r.category for r in rows}))
    for fmt in formats:
        text = render_tables(rows, infos, fmt=fmt, title=report_title(record), footnotes=footnotes,
                             intervals=intervals, category_titles=titles)
        written[fmt] = store.root / REPORT_FILES[fmt]
        atomic_write_text(written[fmt], text if text.endswith("\n") else text + "\n")
    return written
