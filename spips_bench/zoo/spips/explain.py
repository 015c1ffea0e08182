"""Where SPIPS sees the difference: per-stream quality maps and contributions (the paper's Figs. 3-4).

For a reference and one or two distorted images, the figure shows the images, then for each distorted
image one heat map per stream (traditional, perceptual, semantic; blue = similar, yellow = different),
each with a colour bar shared across the distorted images so that they compare, titled with the stream's
weight ``lambda``, its mean and its contribution ``lambda * mean`` to the score. matplotlib is imported
only here, with the Agg backend (no display needed).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from spips_bench.io import TEMP_SUFFIX, atomic_path

#: The variant ``spips-bench explain`` draws when no ``--metric`` is given.
DEFAULT_METRIC = "spips"


@dataclass
class StreamReport:
    """One stream of one distorted image: the mean of its map and its share of the score."""

    stream: str
    mean: float
    weight: float | None  # lambda; None under MLP fusion, where streams do not add up
    contribution: float | None


@dataclass
class Explanation:
    """Numbers shown in the figure, per distorted image (lower scores = more similar)."""

    labels: list[str]
    scores: list[float]
    streams: list[list[StreamReport]]
    metric: str
    trained: bool
    figure: Path | None = None
    notes: list[str] = field(default_factory=list)


def explain(metric: Any, ref: torch.Tensor, dists: list[torch.Tensor], *, labels: list[str] | None = None,
            out: str | os.PathLike[str] | None = None, title: str | None = None) -> Explanation:
    """Compute each stream's map for every distorted image and (if ``out``) draw the figure.

    Args:
        metric: a SPIPS metric (any variant).
        ref: ``(1, 3, H, W)`` reference in [0, 1].
        dists: one or more ``(1, 3, H, W)`` distorted images in [0, 1].
        labels: names shown for the distorted images (default ``image0``, ``image1``, ...).
        out: PNG path for the figure; ``None`` computes the numbers only.
        title: figure title (default: the metric's name and training state).

    Raises:
        TypeError: ``metric`` is not a SPIPS metric.
        ValueError: images of the wrong shape or range.
    """
    from spips_bench.validation import validate_pair
    from spips_bench.zoo.spips.model import SPIPS

    if not isinstance(metric, SPIPS):
        raise TypeError(f"explain() draws SPIPS stream maps; got {type(metric).__name__}. "
                        "Use a SPIPS variant (spips, spips-abla1, spips-alex-st, ...).")
    if not dists:
        raise ValueError("give at least one distorted image to explain.")
    labels = labels or [f"image{i}" for i in range(len(dists))]
    if len(labels) != len(dists):
        raise ValueError(f"{len(labels)} labels for {len(dists)} distorted images.")
    metric.eval()
    maps: list[dict[str, torch.Tensor]] = []
    reports: list[list[StreamReport]] = []
    scores: list[float] = []
    lambdas = metric.lambdas.detach().cpu() if metric.fusion == "sum" else None
    with torch.no_grad():
        for d in dists:
            validate_pair(d, ref, min_size=metric.min_size)
            m = metric.stream_maps(d, ref)
            values = metric.stream_values(metric.features(d), metric.features(ref))[0].cpu()
            scores.append(float(metric(d, ref)[0]))
            maps.append({k: v[0].float().cpu() for k, v in m.items()})
            rows = []
            for j, s in enumerate(metric.streams):
                w = float(lambdas[j]) if lambdas is not None else None
                rows.append(StreamReport(s, float(values[j]), w, None if w is None else w * float(values[j])))
            reports.append(rows)
    status = "trained" if metric.trained else "untrained (data-free initialisation)"
    result = Explanation(labels=labels, scores=scores, streams=reports, metric=metric.name,
                         trained=bool(metric.trained))
    if metric.fusion == "mlp":
        result.notes.append("MLP fusion: the streams' contributions are not additive; means shown.")
    if out is not None:
        result.figure = _draw(Path(out), ref, dists, labels, maps, result,
                              title or f"{metric.name} - {status}")
    return result


def _to_image(x: torch.Tensor) -> Any:
    return x[0].detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy()


def _draw(out: Path, ref: torch.Tensor, dists: list[torch.Tensor], labels: list[str],
          maps: list[dict[str, torch.Tensor]], ex: Explanation, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    streams = [r.stream for r in ex.streams[0]]
    n_cols = max(len(streams), len(dists) + 1)
    n_rows = 1 + len(dists)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.0 * n_cols, 2.9 * n_rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    axes[0, 0].imshow(_to_image(ref))
    axes[0, 0].set_title("reference", fontsize=9)
    best = min(range(len(dists)), key=lambda i: ex.scores[i])
    for i, (d, label) in enumerate(zip(dists, labels, strict=True)):
        axes[0, i + 1].imshow(_to_image(d))
        mark = " (closer)" if len(dists) > 1 and i == best else ""
        axes[0, i + 1].set_title(f"{label}: score {ex.scores[i]:.4f}{mark}", fontsize=9)
    # one colour scale per stream, shared by all distorted images, so their maps compare directly
    vmax = {s: max(float(m[s].max()) for m in maps) or 1e-12 for s in streams}
    for i, label in enumerate(labels):
        for j, rep in enumerate(ex.streams[i]):
            ax = axes[i + 1, j]
            im = ax.imshow(maps[i][rep.stream].numpy(), cmap="viridis", vmin=0.0, vmax=vmax[rep.stream])
            if rep.weight is None:
                detail = f"mean {rep.mean:.4f}"
            else:
                detail = f"lambda {rep.weight:.3f} x mean {rep.mean:.4f}\n= {rep.contribution:.4f}"
            ax.set_title(f"{label} / {rep.stream}\n{detail}", fontsize=8)
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.suptitle(title + ("\n" + " ".join(ex.notes) if ex.notes else ""), fontsize=10)
    fig.tight_layout()
    try:
        with atomic_path(out, suffix=TEMP_SUFFIX + (out.suffix or ".png"), error=None) as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)
    return out
