"""``spips-bench explain``: draw SPIPS's quality maps, alone or beside another variant (the paper's Figs. 3-4).

Two ways to name the images: ``REF IMG0 [IMG1]`` (files), or ``--bapps ROOT --category C --sample ID`` (a
2AFC triplet, whose raters' preference the figure shows). ``--compare NAME`` draws a second SPIPS variant
beside ``--metric``'s on one colour scale per row.
"""

from __future__ import annotations

import argparse
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HELP = "draw where SPIPS sees differences: per-stream quality maps, contributions and scores (PNG)"
_SHOW = 5  # how many sample ids an error lists


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", nargs="?", default=None, help="the reference image (or use --bapps)")
    p.add_argument("images", nargs="*", metavar="IMG", help="one or two distorted images (image0 [image1])")
    p.add_argument("--bapps", type=Path, default=None, metavar="ROOT",
                   help="a BAPPS root (holding 2afc/): draw the triplet --category/--sample with its judgment")
    p.add_argument("--category", default=None, help="with --bapps: the 2AFC category, e.g. cnn")
    p.add_argument("--sample", default=None, metavar="ID",
                   help="with --bapps: the triplet's file stem in the category folders, e.g. 000123")
    p.add_argument("--split", default="val", help="with --bapps: the 2AFC split (default: val)")
    p.add_argument("--metric", default=None, help="a SPIPS variant (default: spips)")
    p.add_argument("--compare", default=None, metavar="NAME",
                   help="a second SPIPS variant drawn beside --metric (e.g. spips-abla1); needs two images")
    p.add_argument("--out", type=Path, required=True, help="the figure to write (PNG)")
    p.add_argument("--checkpoint", action="append", default=None, metavar="[NAME=]PATH",
                   help="trained SPIPS heads (safetensors): NAME=PATH for --metric's or --compare's model "
                        "(repeatable), or a bare PATH for --metric's")
    p.add_argument("--size", type=int, default=None,
                   help="resize every image to SIZE x SIZE first (BAPPS uses 64); default: keep the size of "
                        "image files, 64 with --bapps")
    p.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--offline", action="store_true",
                   help="never download weights (also SPIPS_BENCH_OFFLINE=1)")


@dataclass
class _Images:
    """The images to draw, their labels, and the raters' judgment when they come from BAPPS."""

    ref: Any
    dists: list[Any]
    labels: list[str]
    judge: float | None = None
    where: str = ""
    synthetic: bool = False


def run(args: argparse.Namespace) -> int:
    from spips_bench.validation import resolve_device
    from spips_bench.zoo.spips.explain import DEFAULT_METRIC, explain, explain_compare

    if args.size is not None and args.size < 1:
        raise ValueError(f"--size {args.size} must be a positive number of pixels.")
    name = _require_spips(args.metric or DEFAULT_METRIC)
    names = [name]
    if args.compare is not None:
        other = _require_spips(args.compare, "--compare")
        if other == name:
            raise ValueError(f"--compare {args.compare}: the same variant as --metric {name}; compare another one "
                             "(e.g. an ablation).")
        names.append(other)
    checkpoints = _checkpoints(args.checkpoint, names)
    device = resolve_device(args.device)
    images = _bapps_images(args) if args.bapps is not None else _file_images(args, compare=len(names) > 1)
    metrics = [_create(n, checkpoints.get(n)).to(device) for n in names]
    ref = images.ref.to(device)
    dists = [d.to(device) for d in images.dists]
    if args.bapps is None and len(names) == 1:
        result = explain(metrics[0], ref, dists, labels=images.labels, out=args.out)
        state = "trained" if result.trained else "untrained (data-free initialisation)"
        print(f"{result.metric} ({state}); lower = more similar")
        for label, score, rows in zip(result.labels, result.scores, result.streams, strict=True):
            parts = ", ".join(f"{r.stream} {r.mean:.4f}" + (f" (x{r.weight:.3f})" if r.weight is not None else "")
                              for r in rows)
            print(f"  {label}: {score:.4f}  [{parts}]")
        print(f"figure: {result.figure}")
        return 0
    title = " vs ".join(names) + (f" on {images.where}" if images.where else "")
    judge_label = "Synthetic preference" if images.synthetic else "Human preference"
    compared = explain_compare(list(zip(names, metrics, strict=True)), ref, dists[0], dists[1],
                               judge=images.judge, title=title, out=args.out, judge_label=judge_label)
    print(f"{title}; lower = more similar")
    for m in compared.models:
        state = "trained" if m.trained else "untrained: data-free initialisation"
        print(f"  {m.label} ({state}): image0 {m.scores[0]:.4f}, image1 {m.scores[1]:.4f} -> prefers {m.prefers}")
    if images.judge is not None:
        print(f"  {judge_label.lower()}: {compared.human} (judge {images.judge:.2f}: the fraction of raters who "
              "preferred image1)")
    print(f"figure: {compared.figure}")
    return 0


def _create(name: str, checkpoint: Path | None) -> Any:
    """The metric, untrained-heads warning silenced (the figure and the printout label the state)."""
    from spips_bench.errors import UntrainedHeadsWarning
    from spips_bench.registry import create_metric

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedHeadsWarning)
        return create_metric(name, **({"checkpoint": str(checkpoint)} if checkpoint else {}))


def _checkpoints(values: list[str] | None, names: list[str]) -> dict[str, Path]:
    """``{metric: file}`` from the ``--checkpoint`` values: ``NAME=PATH`` for either drawn model, a bare
    PATH for ``--metric``'s (``names[0]``).

    Raises:
        RunConfigError: a NAME that is neither drawn model, two files for one model, or a missing file.
    """
    from spips_bench.cli.run import checkpoint_arguments
    from spips_bench.errors import RunConfigError
    from spips_bench.registry import get_spec

    bare, named = checkpoint_arguments(values)
    out: dict[str, Path] = {}
    for given, path in named.items():
        metric = get_spec(given).name  # an unknown name fails here with "did you mean"
        if metric not in names:
            raise RunConfigError(f"--checkpoint {given}={path}: {metric} is not drawn here (--metric {names[0]}"
                                 + (f", --compare {names[1]}" if len(names) > 1 else "") + "); name one of them.")
        if metric in out:
            raise RunConfigError(f"--checkpoint {given}={path}: {metric} already has a checkpoint ({out[metric]}).")
        if not path.is_file():
            raise RunConfigError(f"--checkpoint {given}={path}: no such file; pass the checkpoint `spips-bench "
                                 "train` wrote (its final.safetensors).")
        out[metric] = path
    if bare is not None:
        if names[0] in out:
            raise RunConfigError(f"--checkpoint {bare}: --metric {names[0]} already has one ({out[names[0]]}); "
                                 "name the model of each checkpoint as NAME=PATH.")
        out[names[0]] = bare
    return out


def _file_images(args: argparse.Namespace, *, compare: bool) -> _Images:
    """``REF IMG0 [IMG1]`` read from files (all of one size, or resized to ``--size``)."""
    import os

    from spips_bench.data.images import read_image
    from spips_bench.errors import ImageReadError

    if args.category is not None or args.sample is not None:
        raise ValueError("--category and --sample pick a triplet of a BAPPS root; pass --bapps ROOT with them.")
    if args.ref is None or not args.images:
        raise ValueError("explain needs REF IMG0 [IMG1] (image files), or --bapps ROOT --category C --sample ID.")
    if len(args.images) > 2:
        raise ValueError(f"explain takes one or two distorted images, got {len(args.images)}.")
    if compare and len(args.images) != 2:
        raise ValueError(f"--compare draws both models on a triplet: give REF IMG0 IMG1 (got {len(args.images)} "
                         "distorted image), or --bapps ROOT --category C --sample ID.")
    for path in (args.ref, *args.images):
        if os.path.isdir(path):
            raise ImageReadError(f"{path}: is a folder, not an image file; explain takes image files "
                                 "(REF IMG0 [IMG1]).")
    ref = read_image(args.ref, args.size)
    imgs = [read_image(p, args.size) for p in args.images]
    for img in imgs:
        if img.array.shape != ref.array.shape:
            rh, rw = ref.array.shape[:2]
            h, w = img.array.shape[:2]
            raise ImageReadError(f"size mismatch: {args.ref} is {rw}x{rh} but {img.path} is {w}x{h}; "
                                 "pass --size N to resize all images to N x N.")
    labels = [f"image{i} ({Path(p).name})" for i, p in enumerate(args.images)]
    return _Images(ref=ref.tensor()[None], dists=[im.tensor()[None] for im in imgs], labels=labels,
                   where=f"{Path(args.ref).name}, {', '.join(Path(p).name for p in args.images)}")


def _bapps_images(args: argparse.Namespace) -> _Images:
    """The 2AFC triplet ``--category``/``--sample`` of ``--bapps`` at ``--size`` (default 64) and its judge.

    Raises:
        DatasetError: no such folder or sample (naming the folder and some ids), or an unusable file.
        ValueError: images given as files too, or --category/--sample missing.
    """
    from spips_bench.data.bapps import TwoAFCDataset, read_judgment
    from spips_bench.data.demo import is_demo_set
    from spips_bench.errors import DatasetError, did_you_mean
    from spips_bench.stats.kinds import TWO_AFC

    if args.ref is not None or args.images:
        raise ValueError("give either image files (REF IMG0 [IMG1]) or --bapps ROOT --category C --sample ID, not "
                         "both.")
    missing = [flag for flag, value in (("--category", args.category), ("--sample", args.sample)) if value is None]
    if missing:
        raise ValueError(f"--bapps {args.bapps} needs {' and '.join(missing)}: the triplet to draw (e.g. "
                         "--category cnn --sample 000123).")
    ds = TwoAFCDataset(args.bapps, args.split, args.category, load_size=args.size or 64, report_problems=True)
    if args.sample not in ds.names:
        shown = ", ".join(ds.names[:_SHOW])
        raise DatasetError(f"{ds.folder}: no triplet {args.sample!r} (the file stem shared by ref/, p0/, p1/, "
                           f"judge/); it holds {len(ds.names)}, e.g. {shown}." + did_you_mean(args.sample, ds.names))
    index = ds.names.index(args.sample)
    item = ds[index]
    if "problem" in item:
        problem = item["problem"]
        raise DatasetError(f"{problem['file']}: {problem['reason']}")
    judge = read_judgment(ds.path(index, TWO_AFC.judgment_column))
    synthetic = is_demo_set(args.bapps)
    where = (f"{'demo set (synthetic judgments)' if synthetic else 'BAPPS'} 2AFC {args.split}/{args.category}/"
             f"{args.sample}")
    return _Images(ref=item["ref"][None], dists=[item["p0"][None], item["p1"][None]], labels=["image0", "image1"],
                   judge=judge, where=where, synthetic=synthetic)


def _require_spips(name: str, flag: str = "--metric") -> str:
    """The registry name of ``name`` if it is a SPIPS variant; otherwise refuse it, naming the variants that
    are (reads the cards and imports the metric's class, builds no model)."""
    from spips_bench.registry import REGISTRY, get_spec
    from spips_bench.zoo.spips.model import SPIPS

    spec = get_spec(name)  # an unknown name fails here with "did you mean"
    if issubclass(spec.load_class(), SPIPS):
        return spec.name
    target = f"{SPIPS.__module__}:{SPIPS.__qualname__}"
    variants = [s.name for s in REGISTRY.specs() if s.target == target]
    raise ValueError(f"{flag} {name}: explain draws the quality maps of SPIPS's streams, and {spec.name} is not "
                     f"a SPIPS variant. Use one of: {', '.join(variants)}.")
