"""``spips-bench explain REF IMG0 [IMG1]``: draw SPIPS's per-stream quality maps and contributions."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "draw where SPIPS sees differences: per-stream quality maps, contributions and scores (PNG)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", help="the reference image")
    p.add_argument("images", nargs="+", metavar="IMG", help="one or two distorted images (image0 [image1])")
    p.add_argument("--metric", default=None, help="a SPIPS variant (default: spips)")
    p.add_argument("--out", type=Path, required=True, help="the figure to write (PNG)")
    p.add_argument("--checkpoint", default=None, help="trained SPIPS heads (safetensors)")
    p.add_argument("--size", type=int, default=None,
                   help="resize every image to SIZE x SIZE first (BAPPS uses 64); default: keep the size")
    p.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--offline", action="store_true",
                   help="never download weights (also SPIPS_BENCH_OFFLINE=1)")


def run(args: argparse.Namespace) -> int:
    import os

    from spips_bench.data.images import read_image
    from spips_bench.errors import ImageReadError
    from spips_bench.registry import create_metric
    from spips_bench.validation import resolve_device
    from spips_bench.zoo.spips.explain import DEFAULT_METRIC, explain

    if len(args.images) > 2:
        raise ValueError(f"explain takes one or two distorted images, got {len(args.images)}.")
    if args.size is not None and args.size < 1:
        raise ValueError(f"--size {args.size} must be a positive number of pixels.")
    name = args.metric or DEFAULT_METRIC
    _require_spips(name)
    device = resolve_device(args.device)
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
    options = {"checkpoint": args.checkpoint} if args.checkpoint else {}
    metric = create_metric(name, **options).to(device)
    labels = [f"image{i} ({Path(p).name})" for i, p in enumerate(args.images)]
    result = explain(metric, ref.tensor()[None].to(device),
                     [im.tensor()[None].to(device) for im in imgs], labels=labels, out=args.out)
    state = "trained" if result.trained else "untrained (data-free initialisation)"
    print(f"{result.metric} ({state}); lower = more similar")
    for label, score, rows in zip(result.labels, result.scores, result.streams, strict=True):
        parts = ", ".join(f"{r.stream} {r.mean:.4f}" + (f" (x{r.weight:.3f})" if r.weight is not None else "")
                          for r in rows)
        print(f"  {label}: {score:.4f}  [{parts}]")
    print(f"figure: {result.figure}")
    return 0


def _require_spips(name: str) -> None:
    """Refuse a metric that has no SPIPS streams to draw, naming the variants that do (reads the cards and
    imports the metric's class, builds no model)."""
    from spips_bench.registry import REGISTRY, get_spec
    from spips_bench.zoo.spips.model import SPIPS

    spec = get_spec(name)  # an unknown name fails here with "did you mean"
    if issubclass(spec.load_class(), SPIPS):
        return
    target = f"{SPIPS.__module__}:{SPIPS.__qualname__}"
    variants = [s.name for s in REGISTRY.specs() if s.target == target]
    raise ValueError(f"--metric {name}: explain draws the quality maps of SPIPS's streams, and {spec.name} is not "
                     f"a SPIPS variant. Use one of: {', '.join(variants)}.")
