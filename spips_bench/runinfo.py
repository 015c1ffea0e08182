"""A run's setup (plan, metrics), its record (``run.json``) and the reports derived from its store.

``run.json`` says what produced the scores beside it: versions, arguments, device, dataset, weight and
checkpoint SHA-256, per-metric status, timings. Its ``fingerprint`` holds exactly the settings that
change a stored number; a later run into the same folder must match it (see
:func:`check_fingerprint`). :func:`write_reports` turns the store into ``summary.csv``, ``tables.md``
and ``tables.tex`` without computing any metric, so ``spips-bench tables`` can rebuild them anywhere.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spips_bench.errors import RunConfigError, WeightsUnavailableError
from spips_bench.store import ScoreStore, atomic_write_text
from spips_bench.weights import sha256_file

if TYPE_CHECKING:
    from spips_bench.evaluate import RunConfig

RUN_FORMAT = "spips-bench-run/1"
KINDS = ("2afc", "jnd")
#: The per-metric settings that change its scores; a run folder refuses a metric whose settings differ.
FINGERPRINT_KEYS = ("target", "options", "weights", "checkpoint_sha256", "trained")
#: Report files and the ``--format`` names that select them.
REPORT_FILES = {"md": "tables.md", "tex": "tables.tex"}


def package_versions() -> dict[str, str]:
    """Versions of Python and of the packages whose behaviour can change a score."""
    out = {"python": platform.python_version()}
    for dist in ("spips-bench", "torch", "torchvision", "numpy", "scipy", "piq", "pillow"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


#: Package files whose code can change a stored score (the reports are rebuilt from the store anyway).
SCORING_CODE = ("metric.py", "validation.py", "imageio.py", "weights.py", "data/bapps.py", "zoo")


def scoring_code_sha256() -> str:
    """One SHA-256 over the package's scoring code, so that scores of edited code are never mixed.

    A released version changes with its code; an editable install can change without a new version,
    and this hash notices it.
    """
    root = Path(__file__).parent
    h = hashlib.sha256()
    for entry in SCORING_CODE:
        path = root / entry
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for f in files:
            if f.is_file():
                h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def weight_hashes(names: Sequence[str]) -> dict[str, str]:
    """The SHA-256 every copy of each named weight file must have (files are verified before loading)."""
    if not names:
        return {}
    from spips_bench.weights import WEIGHTS

    return {n: WEIGHTS[n].sha256 if n in WEIGHTS else "unknown" for n in names}


def check_fingerprint(store: ScoreStore, previous: Mapping[str, Any] | None,
                      current: Mapping[str, Any]) -> None:
    """Refuse to mix results of different configurations in one run folder.

    The global settings (dataset, split, load size, device type, AMP, versions) must be equal; so must
    the settings of every metric stored by both runs. Adding metrics or categories is allowed.

    Raises:
        RunConfigError: naming the differing setting, its stored and new value, and the way out.
    """
    if previous is None:
        return
    old_fp = previous.get("fingerprint", {})
    hint = f"Use another --out, or pass --overwrite to discard the results in {store.root}."
    for key, new in current["global"].items():
        old = old_fp.get("global", {}).get(key)
        if old != new:
            raise RunConfigError(
                f"{store.run_file} was written with {key} = {old!r}, this run has {key} = {new!r}; "
                f"scores of different configurations cannot share a run folder. {hint}"
            )
    for name, new in current["metrics"].items():
        old = old_fp.get("metrics", {}).get(name)
        if old is not None and old != new:
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise RunConfigError(
                f"{store.run_file}: metric {name!r} was scored with other settings ({', '.join(diff)}: "
                f"{[old.get(k) for k in diff]!r} then, {[new.get(k) for k in diff]!r} now). {hint}"
            )


# -- run setup: what to score and with which metrics -------------------------------------------------


@dataclass
class ActiveMetric:
    """A metric ready to score: its registry name, the module on its device, and its direction."""

    name: str
    metric: Any
    higher_is_better: bool


def use_offline(config: RunConfig) -> bool:
    """Whether downloads are off for this run; ``--offline`` switches them off for the whole process."""
    if config.offline:
        os.environ["SPIPS_BENCH_OFFLINE"] = "1"  # read by spips_bench.weights before any download
    from spips_bench.weights import is_offline

    return is_offline()


def resolve_plan(config: RunConfig) -> list[tuple[str, str]]:
    """``(kind, category)`` pairs to score, validated against the split."""
    from spips_bench.data.bapps import JND_SPLITS, resolve_categories

    kinds = config.kinds or [k for k in KINDS if k == "2afc" or config.split in JND_SPLITS]
    for k in kinds:
        if k not in KINDS:
            raise ValueError(f"unknown kind {k!r} in --kinds; use 2afc and/or jnd.")
        if k == "jnd" and config.split not in JND_SPLITS:
            raise ValueError(f"BAPPS has JND judgments for {', '.join(JND_SPLITS)} only, not "
                             f"{config.split!r}; drop jnd from --kinds or use --split val.")
    plan: list[tuple[str, str]] = []
    if not config.categories:
        return [(k, c) for k in kinds for c in resolve_categories(k, config.split, None)]
    for k in kinds:
        known = resolve_categories(k, config.split, None)
        plan += [(k, c) for c in config.categories if c in known]
    for c in config.categories:
        if not any(c == pc for _, pc in plan):
            resolve_categories(kinds[0], config.split, [c])  # raises with the valid names and a suggestion
    return plan


def metric_names(requested: list[str]) -> list[str]:
    """Registry names of ``requested`` (aliases resolved, duplicates dropped); ``["all"]``: every metric."""
    from spips_bench.registry import get_spec, list_metrics

    if [n.strip().lower() for n in requested] == ["all"]:
        return list_metrics()
    names: list[str] = []
    for n in requested:
        spec = get_spec(n)  # unknown names fail here with "did you mean"
        if spec.name not in names:
            names.append(spec.name)
    return names


def json_safe(value: Any) -> Any:
    """``value`` as plain JSON types (paths and other objects as strings, keys sorted)."""
    return json.loads(json.dumps(value, default=str, sort_keys=True))


def build_metrics(config: RunConfig, device: Any, offline: bool
                   ) -> tuple[list[ActiveMetric], dict[str, dict[str, Any]], dict[str, Any]]:
    """Create every runnable metric; returns them, their run.json entries and their fingerprints."""
    from spips_bench.registry import accepts_option, create_metric, get_spec

    names = metric_names(config.metrics)
    ckpt_hash = sha256_file(config.checkpoint) if config.checkpoint else None
    active: list[ActiveMetric] = []
    info: dict[str, dict[str, Any]] = {}
    prints: dict[str, Any] = {}
    takers = []
    for name in names:
        spec = get_spec(name)
        entry: dict[str, Any] = {"higher_is_better": spec.higher_is_better, "trained": spec.trained,
                                 "target": spec.target, "options": json_safe(spec.options),
                                 "weights": weight_hashes(spec.weights), "ablation_of": spec.ablation_of}
        options: dict[str, Any] = {}
        if config.checkpoint is not None and accepts_option(spec, "checkpoint"):
            options["checkpoint"] = str(config.checkpoint)
            entry["checkpoint_sha256"] = ckpt_hash
            entry["trained"] = True
            takers.append(name)
        missing = spec.missing_weights()
        reason = f"weight file(s) {', '.join(missing)} not available offline" if missing and offline else None
        metric: Any = None
        if reason is None:
            try:
                metric = create_metric(name, **options)
            except WeightsUnavailableError as exc:
                reason = f"weights unavailable: {exc}"
            except ImportError as exc:  # an optional dependency of this one metric is not installed
                reason = f"needs a package that is not installed ({exc})"
        if reason is not None:
            if config.strict:
                raise WeightsUnavailableError(f"metric {name!r} cannot run: {reason}. Without --strict it "
                                              "would be skipped and footnoted.")
            info[name] = {**entry, "status": "skipped", "reason": reason}
            continue
        metric = metric.to(device).eval()
        entry["trained"] = bool(getattr(metric, "trained", entry["trained"]))
        info[name] = {**entry, "status": "ok" if entry["trained"] else "untrained"}
        prints[name] = {k: entry.get(k) for k in FINGERPRINT_KEYS}
        hib = bool(getattr(metric, "higher_is_better", spec.higher_is_better))
        active.append(ActiveMetric(name, metric, hib))
    if config.checkpoint is not None and not takers:
        raise ValueError(f"--checkpoint {config.checkpoint} given, but none of {', '.join(names)} takes a "
                         "checkpoint; drop --checkpoint or add the metric it belongs to.")
    return active, info, prints


def describe_run(config: RunConfig, dataset: str, root: Path, device_type: str, versions: Mapping[str, str],
                 metric_prints: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The dataset entry of ``run.json`` and the run's configuration fingerprint.

    The fingerprint's ``global`` part holds every setting that changes a stored number: dataset (and demo
    version), split, load size, device type, AMP, and the spips-bench and torch versions.
    """
    info: dict[str, Any] = {"name": dataset, "root": str(root), "split": config.split,
                            "load_size": config.load_size, "synthetic_judgments": dataset == "demo"}
    glob: dict[str, Any] = {"dataset": dataset, "split": config.split, "load_size": config.load_size,
                            "device_type": device_type, "amp": config.amp,
                            "spips-bench": versions["spips-bench"], "torch": versions["torch"],
                            "scoring_code_sha256": scoring_code_sha256()}
    if dataset == "demo":
        from spips_bench.data.demo import DEMO_LABEL, DEMO_VERSION

        info.update(label=DEMO_LABEL, demo_version=DEMO_VERSION)
        glob["demo_version"] = DEMO_VERSION
    return info, {"global": glob, "metrics": dict(metric_prints)}


def start_record(config: RunConfig, *, previous: Mapping[str, Any] | None, versions: Mapping[str, str],
                 fingerprint: Mapping[str, Any], dataset: Mapping[str, Any],
                 metrics: Mapping[str, dict[str, Any]], device: Any, world_size: int, started: str,
                 ) -> dict[str, Any]:
    """The ``run.json`` of a run that starts now, keeping what an earlier run stored in the same folder."""
    import torch

    prev = previous or {}
    old_metrics = {k: v for k, v in prev.get("metrics", {}).items() if k not in metrics}
    metrics = {k: {**v, "scored": prev.get("metrics", {}).get(k, {}).get("scored", [])}
               for k, v in metrics.items()}
    old_prints = prev.get("fingerprint", {}).get("metrics", {})
    return {
        "format": RUN_FORMAT, "status": "running", "versions": dict(versions),
        "arguments": json_safe(asdict(config)),
        "fingerprint": json_safe({"global": fingerprint["global"],
                                  "metrics": {**old_prints, **fingerprint["metrics"]}}),
        "statistics": {"bootstrap": config.bootstrap, "seed": config.seed},
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "world_size": world_size, "dataset": dict(dataset), "metrics": {**old_metrics, **metrics},
        "categories": dict(prev.get("categories", {})), "started": started,
    }


# -- reports -------------------------------------------------------------------------------------------


def _summaries(store: ScoreStore, record: Mapping[str, Any], n_boot: int, seed: int,
               ) -> tuple[list[Any], list[str]]:
    """Summary rows of every complete (kind, category, metric) in the store, plus footnotes."""
    import numpy as np

    from spips_bench.store import SCORE_COLUMNS
    from spips_bench.summary import summarize_2afc, summarize_jnd

    metrics: Mapping[str, Any] = record.get("metrics", {})
    expected: Mapping[str, int] = record.get("categories", {})
    skipped = skipped_counts(record)
    rows: list[Any] = []
    notes: list[str] = []
    nonfinite: dict[str, list[str]] = {}
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
        if n_expected is None or len(judgments) != n_expected or set(scores) != set(judgments):
            notes.append(f"{metric} on {kind}/{category}: incomplete ({len(scores)} of "
                         f"{n_expected or len(judgments)} samples scored); rerun to finish it.")
            continue
        samples = sorted(judgments)
        h = np.array([judgments[s] for s in samples], dtype=np.float64)
        d = np.array([scores[s] for s in samples], dtype=np.float64)
        d = d.reshape(len(samples), len(SCORE_COLUMNS[kind]))
        keep = np.isfinite(d).all(axis=1) & np.isfinite(h)
        bad = int((~np.isfinite(d).all(axis=1)).sum())
        if bad:
            nonfinite.setdefault(metric, []).append(f"{bad} of {len(samples)} in {kind}/{category}")
        hib = bool(info["higher_is_better"])
        if kind == "2afc":
            rows += summarize_2afc(category, metric, d[keep, 0], d[keep, 1], h[keep], higher_is_better=hib,
                                   n_boot=n_boot, seed=seed)
        else:
            rows += summarize_jnd(category, metric, d[keep, 0], h[keep], higher_is_better=hib,
                                  n_boot=n_boot, seed=seed)
    for metric, where in nonfinite.items():
        notes.append(f"{metric}: non-finite scores excluded from all statistics ({'; '.join(where)} "
                     "samples; listed in run.json).")
    return rows, notes


def report_title(record: Mapping[str, Any]) -> str:
    """"BAPPS val", or "Demo set (synthetic judgments)" so that synthetic data is always labelled."""
    ds = record.get("dataset", {})
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


def metric_footnotes(record: Mapping[str, Any]) -> list[str]:
    """Footnotes for skipped metrics and samples and the image size of the run (the tables mark
    untrained metrics themselves)."""
    notes: list[str] = []
    ds = record.get("dataset", {})
    size = ds.get("load_size")
    notes.append(f"Patches loaded at {size}x{size} px (PIL bilinear)." if size else
                 "Patches loaded at their stored size (no resizing).")
    for name, info in record.get("metrics", {}).items():
        if info.get("status") == "skipped":
            notes.append(f"{name}: skipped ({info.get('reason', 'no reason recorded')}).")
    counts = skipped_counts(record)
    if counts:
        where = ", ".join(f"{n} in {key}" for key, n in counts.items())
        # No "--" here: LaTeX would typeset the flag's dashes as one en dash.
        notes.append(f"{sum(counts.values())} sample(s) skipped (on-error policy: skip): {where}. They are "
                     "left out of every statistic; run.json lists each with its file and the reason.")
    return notes


def write_reports(out: str | os.PathLike[str], *, formats: Sequence[str] = ("md", "tex"),
                  compare_paper: bool = False, intervals: bool = False) -> dict[str, Path]:
    """Write ``summary.csv`` and the tables of the run folder ``out`` from its store alone.

    The bootstrap size and seed are those recorded in ``run.json``, so a rebuild gives byte-identical
    files. No metric is created and no image is read.

    Args:
        out: a run folder written by ``spips-bench run``.
        formats: any of ``"md"``, ``"tex"``.
        compare_paper: add the paper's published values beside ours where the tables know them.
        intervals: show bootstrap intervals in the tables.

    Returns:
        The paths written, keyed ``"summary"``, ``"md"``, ``"tex"``.

    Raises:
        RunConfigError: ``out`` has no ``run.json``.
        ValueError: an unknown format.
    """
    from spips_bench.summary import write_summary_csv
    from spips_bench.tables import MetricInfo, render_tables

    unknown = [f for f in formats if f not in REPORT_FILES]
    if unknown:
        raise ValueError(f"unknown table format(s) {unknown}; choose from {', '.join(REPORT_FILES)}.")
    store = ScoreStore(out)
    record = store.read_run()
    if record is None:
        raise RunConfigError(f"{store.run_file} not found: {store.root} is not a run folder of "
                             "`spips-bench run`. Point --from at the --out of a run.")
    stats = record.get("statistics", {})
    rows, notes = _summaries(store, record, int(stats.get("bootstrap", 1000)), int(stats.get("seed", 0)))
    written: dict[str, Path] = {"summary": store.root / "summary.csv"}
    write_summary_csv(written["summary"], rows)
    present = {r.metric for r in rows}
    infos = [MetricInfo(name, bool(info["higher_is_better"]), trained=bool(info.get("trained", True)),
                        ablation_of=info.get("ablation_of"))
             for name, info in record.get("metrics", {}).items() if name in present]
    footnotes = [*metric_footnotes(record), *notes]
    for fmt in formats:
        text = render_tables(rows, infos, fmt=fmt, title=report_title(record), footnotes=footnotes,
                             compare_paper=compare_paper, intervals=intervals)
        written[fmt] = store.root / REPORT_FILES[fmt]
        atomic_write_text(written[fmt], text if text.endswith("\n") else text + "\n")
    return written


def nonfinite_samples(store: ScoreStore) -> list[dict[str, str]]:
    """Every stored non-finite score as ``{kind, category, metric, sample, column}``, sorted."""
    from spips_bench.store import SCORE_COLUMNS

    out: list[dict[str, str]] = []
    for kind, category, metric in store.entries():
        for sample, values in sorted(store.read_scores(kind, category, metric).items()):
            for column, v in zip(SCORE_COLUMNS[kind], values, strict=True):
                if not math.isfinite(v):
                    out.append({"kind": kind, "category": category, "metric": metric, "sample": sample,
                                "column": column})
    return out
