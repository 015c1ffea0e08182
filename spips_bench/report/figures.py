"""The figures of a run folder: triplets where two metrics disagree and the raters side with one of them.

:func:`pick_triplets` reads a run's store (no metric is computed) and finds the 2AFC triplets on which
two metrics prefer different images while the raters clearly prefer one image;
:func:`draw_disagreements` draws each picked triplet with
:func:`spips_bench.zoo.spips.explain.explain_compare`, building the two models as the run built them
(registry options and the checkpoint recorded in ``run.json``). The metric names come from the caller.

The rule (deterministic):

- a triplet qualifies when both metrics have finite scores that are not tied, they prefer different
  images, and the raters' ``judge`` (the fraction who preferred p1) is at least ``min_clarity`` away from
  one half (0.3: at least 4 of 5 BAPPS val raters agree);
- a metric's preference is the image with the lower distance (the higher score for a metric whose
  higher is better), and its *margin* is ``|d0 - d1| / (|d0| + |d1|)``, how decisively it prefers;
- qualifying triplets are ranked by the raters' clarity ``|judge - 0.5|``, then by the smaller of the two
  metrics' margins (both decisive, in opposite directions), largest first, then by category and sample
  name; the picks take the best triplet of each category first (categories in the order of their best
  triplets), then the second of each, and so on, until ``count``.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spips_bench.errors import DatasetError, RunConfigError, WeightsIntegrityError
from spips_bench.report.build import open_run
from spips_bench.run.store import ScoreStore
from spips_bench.stats.kinds import TWO_AFC

#: Default distance of the raters' judgment from one half (0.3: 4 of 5 raters or more agree).
MIN_CLARITY = 0.3
_EPS = 1e-9  # judgments are fractions such as 0.2, whose distance from 0.5 is 0.3 up to rounding


@dataclass
class Triplet:
    """One 2AFC triplet on which two metrics disagree and the raters side with one of them.

    Attributes:
        kind: the judgment kind (``"2afc"``).
        category: its category, e.g. ``cnn``.
        sample: the file stem shared by ``ref``, ``p0``, ``p1`` and ``judge``.
        judge: the fraction of raters who preferred p1.
        paths: the ``(ref, p0, p1)`` image files.
        scores: ``{metric: (d0, d1)}`` as stored by the run.
        sides_with: the metric whose preference the raters share.
        margin: the smaller of the two metrics' margins (see the module docstring).
        synthetic: whether the judgments are synthetic (the demo set).
    """

    kind: str
    category: str
    sample: str
    judge: float
    paths: tuple[Path, Path, Path]
    scores: dict[str, tuple[float, float]]
    sides_with: str
    margin: float
    synthetic: bool = False


def _check_metrics(store: ScoreStore, record: Mapping[str, Any], names: Sequence[str]) -> None:
    known = list(record.get("metrics", {}))
    for name in names:
        if name not in known:
            raise RunConfigError(f"{store.run_file}: the run has no metric {name!r} (it has {', '.join(known)}); "
                                 "score it into this folder first, or pass a metric of the run.")
    if len(set(names)) != len(names):
        raise ValueError(f"pick two different metrics to compare, got {list(names)}.")


def _prefers_p1(d0: float, d1: float, higher_is_better: bool) -> bool:
    return d1 > d0 if higher_is_better else d1 < d0


def _margin(d0: float, d1: float) -> float:
    total = abs(d0) + abs(d1)
    return abs(d0 - d1) / total if total > 0 else 0.0


def _image_file(folder: Path, sample: str, run_file: Path) -> Path:
    from spips_bench.data.bapps import IMAGE_SUFFIXES

    found = sorted(p for p in folder.glob(f"{sample}.*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise DatasetError(f"{folder / sample}.png: not found; {run_file} records this data root, but the image is "
                           "not there any more. Pass root= pointing at the data the run scored.")
    return found[0]


def pick_triplets(run: str | os.PathLike[str], full: str, other: str, *, count: int = 2,
                  min_clarity: float = MIN_CLARITY, side: str | None = None,
                  root: str | os.PathLike[str] | None = None) -> list[Triplet]:
    """The 2AFC triplets of run folder ``run`` where ``full`` and ``other`` disagree and the raters side
    clearly with one of them, picked and ordered by the rule of the module docstring.

    Args:
        run: a run folder that scored both metrics on 2AFC categories.
        full, other: the two metrics (names as in its ``run.json``).
        count: how many triplets at most.
        min_clarity: the least ``|judge - 0.5|`` that counts as the raters siding with one image.
        side: keep only triplets where the raters side with this metric (``full`` or ``other``);
            ``None``: either.
        root: the data root, when the images are no longer where ``run.json`` records them.

    Returns:
        Up to ``count`` triplets (fewer, or none, when fewer qualify).

    Raises:
        RunConfigError: ``run`` is not a run folder, or lacks one of the metrics.
        DatasetError: an image of a picked triplet is not under the data root.
        ValueError: ``count`` below 1, ``min_clarity`` outside [0, 0.5], or ``side`` not one of the two.
    """
    if count < 1:
        raise ValueError(f"count={count} must be at least 1.")
    if not 0.0 <= min_clarity <= 0.5:
        raise ValueError(f"min_clarity={min_clarity} must be in [0, 0.5] (the distance of a judgment from 1/2).")
    if side is not None and side not in (full, other):
        raise ValueError(f"side={side!r} must be one of the two metrics compared ({full}, {other}) or None.")
    store, record = open_run(run)
    _check_metrics(store, record, (full, other))
    metrics = record["metrics"]
    hib = {name: bool(metrics[name].get("higher_is_better", False)) for name in (full, other)}
    dataset = record.get("dataset", {})
    data_root = Path(root) if root is not None else Path(str(dataset.get("root", ".")))
    split = str(dataset.get("split", "val"))
    kind = TWO_AFC.name
    candidates: list[tuple[tuple[float, float, str, str], Triplet]] = []
    categories = sorted({c for k, c, m in store.entries() if k == kind and m == full}
                        & {c for k, c, m in store.entries() if k == kind and m == other})
    for category in categories:
        judgments = store.read_judgments(kind, category)
        a, b = store.read_scores(kind, category, full), store.read_scores(kind, category, other)
        for sample in sorted(set(a) & set(b) & set(judgments)):
            judge = judgments[sample]
            (a0, a1), (b0, b1) = a[sample], b[sample]
            if not all(math.isfinite(v) for v in (judge, a0, a1, b0, b1)) or a0 == a1 or b0 == b1:
                continue
            full_p1, other_p1 = _prefers_p1(a0, a1, hib[full]), _prefers_p1(b0, b1, hib[other])
            clarity = abs(judge - 0.5)
            if full_p1 == other_p1 or clarity + _EPS < min_clarity:
                continue
            winner = full if full_p1 == (judge > 0.5) else other
            if side is not None and winner != side:
                continue
            margin = min(_margin(a0, a1), _margin(b0, b1))
            triplet = Triplet(kind=kind, category=category, sample=sample, judge=judge, paths=(Path(), Path(), Path()),
                              scores={full: (a0, a1), other: (b0, b1)}, sides_with=winner, margin=margin,
                              synthetic=bool(dataset.get("synthetic_judgments", False)))
            candidates.append(((-round(clarity, 9), -margin, category, sample), triplet))
    candidates.sort(key=lambda c: c[0])
    seen: dict[str, int] = {}
    ranked: list[tuple[int, int, Triplet]] = []
    for position, (_, triplet) in enumerate(candidates):
        seen[triplet.category] = seen.get(triplet.category, 0) + 1
        ranked.append((seen[triplet.category], position, triplet))
    picked = [t for _, _, t in sorted(ranked, key=lambda r: (r[0], r[1]))[:count]]
    for t in picked:
        folder = data_root / kind / split / t.category
        ref, p0, p1 = (_image_file(folder / part, t.sample, store.run_file) for part in TWO_AFC.image_parts)
        t.paths = (ref, p0, p1)
    return picked


def run_metric(run: str | os.PathLike[str], name: str, *, device: Any = "cpu",
               checkpoint: str | os.PathLike[str] | None = None) -> Any:
    """Metric ``name`` built as the run folder ``run`` built it: the registry's options and the checkpoint
    its ``run.json`` entry records (checked against the recorded SHA-256), on ``device``, in eval mode.

    Args:
        checkpoint: use this file instead of the recorded path (it must have the recorded SHA-256).

    Raises:
        RunConfigError: the run lacks the metric, or skipped it.
        WeightsIntegrityError: the recorded checkpoint is missing or its SHA-256 differs from the record.
    """
    from spips_bench.errors import UntrainedHeadsWarning
    from spips_bench.io import sha256_file
    from spips_bench.registry import create_metric

    store, record = open_run(run)
    _check_metrics(store, record, (name,))
    entry = record["metrics"][name]
    if entry.get("status") == "skipped":
        raise RunConfigError(f"{store.run_file}: metric {name!r} was not run ({entry.get('note') or 'skipped'}), so "
                             "it has no scores to explain.")
    options: dict[str, Any] = {}
    expected = entry.get("checkpoint_sha256")
    if expected:
        recorded = entry.get("checkpoint") or record.get("arguments", {}).get("checkpoint")
        path = Path(checkpoint) if checkpoint is not None else Path(str(recorded)) if recorded else None
        if path is None or not path.is_file():
            raise WeightsIntegrityError(
                f"{store.run_file}: metric {name!r} was scored with checkpoint {recorded} (sha256 {expected[:12]}), "
                "which is not there; pass its file (CLI: --checkpoint NAME=PATH).")
        actual = sha256_file(path)
        if actual != expected:
            raise WeightsIntegrityError(
                f"{path}: sha256 {actual[:12]}, but {store.run_file} records {expected[:12]} for metric {name!r}: "
                "not the checkpoint the run scored with; pass the file it used.")
        options["checkpoint"] = str(path)
    with warnings.catch_warnings():  # the figure labels untrained models itself
        warnings.simplefilter("ignore", UntrainedHeadsWarning)
        metric = create_metric(name, **options)
    return metric.to(device).eval()


def figure_name(full: str, other: str, triplet: Triplet) -> str:
    """``<full>-vs-<other>-<category>-<sample>.png``."""
    return f"{full}-vs-{other}-{triplet.category}-{triplet.sample}.png"


def draw_disagreements(run: str | os.PathLike[str], full_metric: str, other_metric: str,
                       out_dir: str | os.PathLike[str], *, count: int = 2, device: Any = "cpu",
                       labels: tuple[str, str] | None = None, min_clarity: float = MIN_CLARITY,
                       side: str | None = None, root: str | os.PathLike[str] | None = None,
                       checkpoints: Mapping[str, str | os.PathLike[str]] | None = None) -> list[Path]:
    """Draw each triplet :func:`pick_triplets` picks as one comparison figure (the paper's Figs. 3-4).

    The models are built by :func:`run_metric`, the images read at the run's load size. A figure on the
    demo set names its judgments synthetic.

    Args:
        run: the run folder.
        full_metric, other_metric: the two metrics (``full_metric`` first in the figure).
        out_dir: where the PNGs go (created), named by :func:`figure_name`.
        count, min_clarity, side, root: as for :func:`pick_triplets`.
        device: where the models run.
        labels: the names shown for the two models (default: their metric names).
        checkpoints: ``{metric: file}`` for checkpoints no longer at the recorded path.

    Returns:
        The figures written, in the order of the picks; empty when no triplet qualifies.

    Raises:
        RunConfigError, DatasetError, WeightsIntegrityError: as :func:`pick_triplets` and :func:`run_metric`.
        ValueError: labels that are not two distinct names.
    """
    from spips_bench.data.images import read_image
    from spips_bench.zoo.spips.explain import explain_compare

    shown = labels or (full_metric, other_metric)
    if len(shown) != 2 or shown[0] == shown[1]:
        raise ValueError(f"labels={labels!r}: give two distinct names, one per metric.")
    triplets = pick_triplets(run, full_metric, other_metric, count=count, min_clarity=min_clarity, side=side,
                             root=root)
    if not triplets:
        return []
    _, record = open_run(run)
    load_size = record.get("dataset", {}).get("load_size")
    given = dict(checkpoints or {})
    models = [(label, run_metric(run, name, device=device, checkpoint=given.get(name)))
              for label, name in zip(shown, (full_metric, other_metric), strict=True)]
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for t in triplets:
        ref, p0, p1 = (read_image(p, load_size).tensor()[None].to(device) for p in t.paths)
        synthetic = " (demo set: synthetic judgments, not human)" if t.synthetic else ""
        title = (f"{shown[0]} vs {shown[1]} on 2AFC {t.category}/{t.sample}{synthetic}; the raters side with "
                 f"{shown[(full_metric, other_metric).index(t.sides_with)]}")
        out = folder / figure_name(full_metric, other_metric, t)
        explain_compare(models, ref, p0, p1, judge=t.judge, title=title, out=out,
                        judge_label="Synthetic preference" if t.synthetic else "Human preference")
        written.append(out)
    return written
