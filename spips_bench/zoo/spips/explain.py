"""Where SPIPS sees the difference: per-stream quality maps and contributions (the paper's Figs. 3-4).

:func:`explain` draws one SPIPS variant: for a reference and one or two distorted images, one heat map per
stream, with a colour bar shared across the distorted images, titled with the stream's weight
``lambda``, its mean and its contribution ``lambda * mean`` to the score.

:func:`explain_compare` draws several variants side by side on one triplet (the paper compares the full
model with an ablation): the images ``image0``, ``reference``, ``image1``; per model and image the
*combined map* and one *contribution map* per stream; the scores (``SPIPS0``/``SPIPS1``, ``ablation0``/
``ablation1``) and the human preference when a judgment is given. The maps:

- a stream's map ``F_s`` is :meth:`SPIPS.stream_maps` (``ReLU(Conv(Q))``, deep layers resized to the image
  size); its contribution map is ``w_s * F_s`` and the combined map is ``sum_s w_s * F_s``;
- ``fusion="sum"``: ``w_s = lambda_s`` (eq. 12), so the mean of the combined map is the score, up to the
  bilinear resizing of the deep layers' maps. That resizing changes a non-negative map's mean by at most
  :data:`MAP_MEAN_RTOL` (4 %, the largest deviation of the 2-D bilinear weights from uniform, for the
  30-px layer of ``alex-st`` resized to 64 px; :attr:`ModelMaps.mean_bound` is the bound of the call). On
  18 demo triplets per backbone (``alex``, ``alex-st``, ``vgg``, ``squeeze``, 64 px) the measured difference
  was below 3e-5 of the score. Both the map mean and the bound are in the result;
- ``fusion="mlp"``: the fusion is not additive, so ``w_s = d score / d v_s`` at the image's stream values
  ``v`` (the linearisation of the MLP there; it equals ``lambda_s`` for the sum). The combined map then
  shows where the streams push the score, and its mean is ``sum_s w_s v_s``, not the score.

Colour: :data:`COLORMAP` (``jet``: blue = low difference, through green and yellow to red = high, as the
paper describes its figures). Colour limits are shared *per row*: a row holds one map type (combined, or
one stream) for every model and both images, so the paper's reading "SPIPS1 is blue-green where
ablation1 is yellow" is a comparison on one scale. Limits ``[min(0, row min), row max]``, so nothing is
clipped (``[0, 1]`` when every map of the row is 0); they are returned in :attr:`CompareResult.limits`.
Images and maps are drawn with nearest-neighbour upscaling, a 64-px patch about 3.5x.

matplotlib is imported only when a figure is drawn, with the Agg backend (no display needed).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from spips_bench.io import TEMP_SUFFIX, atomic_path

#: The variant ``spips-bench explain`` draws when no ``--metric`` is given.
DEFAULT_METRIC = "spips"
#: The heat-map colours: blue = low difference, green, yellow, red = high (the paper's Figs. 3-4).
COLORMAP = "jet"
#: Bound on ``|mean(combined map) - score| / score`` under ``fusion="sum"`` (see the module docstring).
MAP_MEAN_RTOL = 0.04
#: The row of the comparison figure that holds the combined maps (the other rows are named by stream).
COMBINED = "combined"


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
    axes[0, 0].imshow(_to_image(ref), interpolation="nearest")
    axes[0, 0].set_title("reference", fontsize=9)
    best = min(range(len(dists)), key=lambda i: ex.scores[i])
    for i, (d, label) in enumerate(zip(dists, labels, strict=True)):
        axes[0, i + 1].imshow(_to_image(d), interpolation="nearest")
        mark = " (closer)" if len(dists) > 1 and i == best else ""
        axes[0, i + 1].set_title(f"{label}: score {ex.scores[i]:.4f}{mark}", fontsize=9)
    # one colour scale per stream, shared by all distorted images, so their maps compare directly
    vmax = {s: max(float(m[s].max()) for m in maps) or 1e-12 for s in streams}
    for i, label in enumerate(labels):
        for j, rep in enumerate(ex.streams[i]):
            ax = axes[i + 1, j]
            im = ax.imshow(maps[i][rep.stream].numpy(), cmap=COLORMAP, vmin=0.0, vmax=vmax[rep.stream],
                           interpolation="nearest")
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


# -- several variants side by side on one triplet (the paper's Figs. 3-4) -----------------------------

@dataclass
class ModelMaps:
    """One model of a comparison figure: its scores and the numbers behind its maps.

    Attributes:
        label: the name shown (``SPIPS0`` / ``SPIPS1`` are ``label`` + the image index).
        metric: the metric's registry name.
        trained: whether a checkpoint was loaded (else the heads are the data-free initialisation).
        fusion: ``"sum"`` or ``"mlp"``.
        streams: the model's streams.
        scores: ``(d0, d1)``, the metric's score of image0 and image1 against the reference.
        weights: per image, ``{stream: w_s}`` as the combined map uses it (module docstring).
        stream_means: ``{stream: (mean of F_s for image0, for image1)}``.
        map_means: the mean of the combined map, per image.
        mean_bound: the relative bound on ``|map mean - score|`` from the resizing of the deep layers'
            maps (``fusion="sum"``; 0 when no map is resized).
        prefers: ``"image0"``, ``"image1"`` (the lower score) or ``"tie"``.
    """

    label: str
    metric: str
    trained: bool
    fusion: str
    streams: tuple[str, ...]
    scores: tuple[float, float]
    weights: tuple[dict[str, float], dict[str, float]]
    stream_means: dict[str, tuple[float, float]]
    map_means: tuple[float, float]
    mean_bound: float
    prefers: str


@dataclass
class CompareResult:
    """What :func:`explain_compare` drew.

    Attributes:
        models: one entry per model, in the order given.
        rows: the map rows of the figure: :data:`COMBINED`, then each stream any model has.
        limits: ``{row: (vmin, vmax)}``, the colour limits shared by every map of the row.
        maps: ``{label: {row: (map of image0, map of image1)}}`` as drawn, ``(H, W)`` float32 on the CPU
            (a stream's row holds its contribution map ``w_s * F_s``; absent streams are left out).
        judge: the fraction of raters who preferred image1 (BAPPS ``judge``), or ``None``.
        human: ``"image0"``, ``"image1"`` or ``"tie"`` from ``judge``; ``None`` without one.
        figure: the PNG written.
        notes: the notes printed under the scores.
        cell_limits: ``{row: [(vmin, vmax) of each map drawn in the row]}``, read back from the figure.
    """

    models: list[ModelMaps]
    rows: list[str]
    limits: dict[str, tuple[float, float]]
    maps: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]]
    judge: float | None
    human: str | None
    figure: Path
    notes: list[str] = field(default_factory=list)
    cell_limits: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    @property
    def scores(self) -> dict[str, tuple[float, float]]:
        """``{label: (d0, d1)}``."""
        return {m.label: m.scores for m in self.models}


def _preference(d0: float, d1: float) -> str:
    """The image a distance prefers (the lower score)."""
    return "image0" if d0 < d1 else "image1" if d1 < d0 else "tie"


def human_preference(judge: float) -> str:
    """``"image1"`` when more than half the raters preferred image1 (BAPPS ``judge`` > 0.5), ``"image0"``
    when fewer, ``"tie"`` at exactly one half."""
    return "image1" if judge > 0.5 else "image0" if judge < 0.5 else "tie"


def _bilinear_weights(n_in: int, n_out: int) -> torch.Tensor:
    """How much each input cell counts in the mean of a bilinear resize from ``n_in`` to ``n_out`` px
    (1 everywhere when the resize keeps every map's mean)."""
    eye = torch.eye(n_in, dtype=torch.float64).view(n_in, 1, 1, n_in)
    up = F.interpolate(eye, size=(1, n_out), mode="bilinear", align_corners=False)
    return up[:, 0, 0, :].sum(dim=1) * n_in / n_out


def _resize_mean_bound(metric: Any, ref: torch.Tensor) -> float:
    """The largest relative change that the bilinear resizing of the deep layers' maps to the image size
    can make to the mean of a map >= 0 (0 without a deep stream)."""
    if not any(s in metric.streams for s in ("perceptual", "semantic")):
        return 0.0
    h, w = int(ref.shape[-2]), int(ref.shape[-1])
    with torch.no_grad():
        sizes = {tuple(int(v) for v in t.shape[-2:]) for t in metric.features(ref).layers}
    bound = 0.0
    for lh, lw in sizes:
        weights = torch.outer(_bilinear_weights(lh, h), _bilinear_weights(lw, w))
        bound = max(bound, float((weights - 1.0).abs().max()))
    return bound


def _stream_weights(metric: Any, values: torch.Tensor | None) -> dict[str, float]:
    """``w_s`` of the combined map: ``lambda`` for the sum fusion, the gradient of the fusion at ``values``
    (the image's stream values, ``(S,)``) for the MLP."""
    if metric.fusion == "sum":
        lambdas = metric.lambdas.detach().float().cpu()
        return {s: float(lambdas[j]) for j, s in enumerate(metric.streams)}
    if values is None:
        raise ValueError("the stream values are needed for the weights of a fusion that is not a sum.")
    v = values.detach().float().reshape(1, -1).to(next(iter(metric.parameters())).device).requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(metric.fuse(v).sum(), v)
    return {s: float(grad[0, j]) for j, s in enumerate(metric.streams)}


def _compare_one(label: str, metric: Any, ref: torch.Tensor, imgs: tuple[torch.Tensor, torch.Tensor],
                 ) -> tuple[ModelMaps, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """Scores, weights and maps of one model on both images."""
    from spips_bench.validation import validate_pair

    metric.eval()
    scores: list[float] = []
    raw: list[dict[str, torch.Tensor]] = []
    values: list[torch.Tensor | None] = []
    for d in imgs:
        validate_pair(d, ref, min_size=metric.min_size)
        with torch.no_grad():
            scores.append(float(metric(d, ref)[0]))
            raw.append({k: v[0].float().cpu() for k, v in metric.stream_maps(d, ref).items()})
            # the stream values only matter where the fusion is not a fixed weighted sum
            values.append(None if metric.fusion == "sum" else
                          metric.stream_values(metric.features(d), metric.features(ref))[0].float().cpu())
    weights = (_stream_weights(metric, values[0]), _stream_weights(metric, values[1]))
    maps: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    contrib = [{s: weights[i][s] * raw[i][s] for s in metric.streams} for i in range(2)]
    combined = tuple(torch.stack(list(contrib[i].values()), 0).sum(0) for i in range(2))
    maps[COMBINED] = (combined[0], combined[1])
    for s in metric.streams:
        maps[s] = (contrib[0][s], contrib[1][s])
    info = ModelMaps(
        label=label, metric=str(metric.name), trained=bool(metric.trained), fusion=str(metric.fusion),
        streams=tuple(metric.streams), scores=(scores[0], scores[1]), weights=weights,
        stream_means={s: (float(raw[0][s].mean()), float(raw[1][s].mean())) for s in metric.streams},
        map_means=(float(combined[0].mean()), float(combined[1].mean())),
        mean_bound=_resize_mean_bound(metric, ref), prefers=_preference(scores[0], scores[1]),
    )
    return info, maps


def explain_compare(models: Sequence[tuple[str, Any]], ref: torch.Tensor, img0: torch.Tensor, img1: torch.Tensor,
                    *, judge: float | None, title: str, out: str | os.PathLike[str],
                    judge_label: str = "Human preference") -> CompareResult:
    """Draw SPIPS variants side by side on one triplet (the paper's Figs. 3-4) and return what was drawn.

    Row 1: ``image0``, ``reference``, ``image1`` and the scores, each model's preferred image and the
    human preference. Then one row of combined maps and one row per stream (contribution maps
    ``w_s * F_s``), with two columns per model (image0, image1) and one colour scale per row; the module
    docstring defines the maps, the weights and the limits. An untrained model is labelled so.

    Args:
        models: ``(label, metric)`` pairs, e.g. ``[("SPIPS", full), ("ablation", abla1)]``; labels distinct.
        ref, img0, img1: ``(1, 3, H, W)`` images in [0, 1] on the models' device.
        judge: the fraction of raters who preferred image1 (BAPPS 2AFC ``judge``), or ``None``.
        title: the figure's title.
        out: the PNG to write.
        judge_label: how the judgment is named in the figure (e.g. ``"Synthetic preference"`` for the demo
            set, whose judgments are not human).

    Raises:
        TypeError: a model that is not a SPIPS metric.
        ValueError: no model, repeated labels, a judge outside [0, 1], or images of the wrong shape or range.
    """
    from spips_bench.zoo.spips.model import SPIPS, STREAMS

    if not models:
        raise ValueError("explain_compare needs at least one (label, metric) pair.")
    labels = [str(label) for label, _ in models]
    if len(set(labels)) != len(labels):
        raise ValueError(f"explain_compare: the labels {labels} repeat; give each model its own label.")
    for label, metric in models:
        if not isinstance(metric, SPIPS):
            raise TypeError(f"explain_compare draws SPIPS stream maps; {label!r} is a {type(metric).__name__}. "
                            "Use SPIPS variants (spips, spips-abla1, spips-alex-st, ...).")
    if judge is not None and not (math.isfinite(judge) and 0.0 <= judge <= 1.0):
        raise ValueError(f"judge={judge!r} must be the fraction of raters who preferred image1, in [0, 1].")
    infos: list[ModelMaps] = []
    maps: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}
    for label, metric in models:
        info, model_maps = _compare_one(str(label), metric, ref, (img0, img1))
        infos.append(info)
        maps[info.label] = model_maps
    streams = [s for s in STREAMS if any(s in m.streams for m in infos)]
    rows = [COMBINED, *streams]
    limits: dict[str, tuple[float, float]] = {}
    for row in rows:
        cells = [t for m in maps.values() if row in m for t in m[row]]
        lo, hi = min(0.0, min(float(t.min()) for t in cells)), max(float(t.max()) for t in cells)
        limits[row] = (lo, hi) if hi > lo else (lo, lo + 1.0)
    notes: list[str] = []
    if any(m.fusion == "mlp" for m in infos):
        notes.append("MLP fusion: w_s = d score / d v_s at the image's stream values v; the combined map's mean "
                     "is sum_s w_s v_s, not the score")
    bounds = [m.mean_bound for m in infos if m.fusion == "sum" and m.mean_bound > 0]
    if bounds:
        notes.append(f"combined-map mean = score within {max(bounds):.1%} (bilinear resizing of the deep layers' "
                     "maps)")
    result = CompareResult(models=infos, rows=rows, limits=limits, maps=maps, judge=judge,
                           human=None if judge is None else human_preference(judge), figure=Path(out),
                           notes=notes)
    _draw_compare(result, ref, img0, img1, title, judge_label)
    return result


def score_name(label: str, image: int) -> str:
    """The paper's name of a model's score of one image: ``SPIPS0``, ``ablation1``; ``spips-abla1[0]`` when
    the label ends in a digit."""
    return f"{label}[{image}]" if label[-1:].isdigit() else f"{label}{image}"


def _judge_text(judge: float, label: str) -> str:
    """``Human preference: image0 < image1 (judge 0.80: 80% of raters preferred image1)``, the paper's
    notation (``<``: image1 is the better one)."""
    human = human_preference(judge)
    relation = {"image1": "image0 < image1", "image0": "image0 > image1", "tie": "image0 = image1"}[human]
    share = judge if human != "image0" else 1.0 - judge
    who = "image1" if human != "image0" else "image0"
    return f"{label}: {relation} (judge {judge:.2f}: {share:.0%} of raters preferred {who})"


def _draw_compare(result: CompareResult, ref: torch.Tensor, img0: torch.Tensor, img1: torch.Tensor,
                  title: str, judge_label: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = result.models
    n_cols = max(4, 2 * len(models))
    n_rows = 1 + len(result.rows)
    cell = 2.3
    width, height = cell * n_cols + 1.3, cell * 1.2 * n_rows + 0.8
    fig = plt.figure(figsize=(width, height))
    grid = fig.add_gridspec(n_rows, n_cols + 1, width_ratios=[1.0] * n_cols + [0.07], left=0.45 / width,
                            right=1 - 0.55 / width, bottom=0.1 / height, top=1 - 0.85 / height, wspace=0.12,
                            hspace=0.32)
    for j, (img, name) in enumerate(((img0, "image0"), (ref, "reference"), (img1, "image1"))):
        ax = fig.add_subplot(grid[0, j])
        ax.imshow(_to_image(img), interpolation="nearest")
        ax.set_title(name, fontsize=10)
        ax.axis("off")
    text = fig.add_subplot(grid[0, 3:n_cols])
    text.axis("off")
    lines = ["lower score = more similar"]
    for m in models:
        lines.append(f"{m.label} ({m.metric}{'' if m.trained else ', untrained: data-free heads'}) prefers "
                     f"{m.prefers}")
    lines.append(_judge_text(result.judge, judge_label) if result.judge is not None else f"{judge_label}: not given")
    lines.append("colour: blue = low difference, red = high; one scale per row")
    lines += result.notes
    text.text(0.0, 1.0, "\n".join(_wrap(line, 40 * (n_cols - 3)) for line in lines), fontsize=8, va="top",
              ha="left", transform=text.transAxes)
    for r, row in enumerate(result.rows, start=1):
        lo, hi = result.limits[row]
        mappable = None
        for k, m in enumerate(models):
            for i in range(2):
                ax = fig.add_subplot(grid[r, 2 * k + i])
                ax.set_xticks([])
                ax.set_yticks([])
                if row not in result.maps[m.label]:
                    ax.axis("off")
                    ax.text(0.5, 0.5, f"{m.label}: no {row}\nstream", ha="center", va="center", fontsize=9,
                            transform=ax.transAxes)
                    continue
                mappable = ax.imshow(result.maps[m.label][row][i].numpy(), cmap=COLORMAP, vmin=lo, vmax=hi,
                                     interpolation="nearest")
                clim = mappable.get_clim()
                result.cell_limits.setdefault(row, []).append((float(clim[0]), float(clim[1])))
                if row == COMBINED:
                    ax.set_title(f"{score_name(m.label, i)} = {m.scores[i]:.4f}\nmap mean {m.map_means[i]:.4f}",
                                 fontsize=8)
                else:
                    w, mean = m.weights[i][row], m.stream_means[row][i]
                    ax.set_title(f"{score_name(m.label, i)}: {w:.3f} x {mean:.4f}\n= {w * mean:.4f}", fontsize=8)
                if 2 * k + i == 0:
                    ax.set_ylabel(row if row == COMBINED else f"{row} (w x F)", fontsize=9)
        if mappable is not None:
            fig.colorbar(mappable, cax=fig.add_subplot(grid[r, n_cols]))
    fig.suptitle(_wrap(title, int(11 * width)), fontsize=11, y=1 - 0.15 / height, va="top")
    out = result.figure
    try:
        with atomic_path(out, suffix=TEMP_SUFFIX + (out.suffix or ".png"), error=None) as tmp:
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)


def _wrap(line: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(line, width=max(width, 30), subsequent_indent="  ")) or line
