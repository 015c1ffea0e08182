"""``spips-bench score REF DIST``: score one pair of image files with one or more metrics."""

from __future__ import annotations

import argparse
import json
import math
import sys

HELP = "score one pair of image files (PNG/JPEG/BMP, any size) with one or more metrics"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", help="the reference image")
    p.add_argument("dist", help="the distorted image")
    p.add_argument("--metrics", default="psnr,ssim", help="comma-separated metric names (default: psnr,ssim)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object with every score (strict JSON: a non-finite score is null, "
                        "and \"nonfinite\" gives its value: \"+inf\", \"-inf\" or \"nan\")")
    p.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--checkpoint", default=None, help="trained heads for a learned metric (SPIPS)")
    p.add_argument("--offline", action="store_true", help="never download weights (also SPIPS_BENCH_OFFLINE=1)")


def run(args: argparse.Namespace) -> int:
    import os
    import warnings

    import torch

    from spips_bench.data.images import read_image
    from spips_bench.errors import ImageReadError, UntrainedHeadsWarning
    from spips_bench.registry import accepts_option, create_metric, get_spec
    from spips_bench.validation import resolve_device

    names = [m.strip() for m in args.metrics.split(",") if m.strip()]
    if not names:
        raise ValueError("--metrics is empty; name at least one metric (see `spips-bench list`).")
    specs = [get_spec(n) for n in names]  # unknown names fail here, before any image is read
    device = resolve_device(args.device)
    for role, path in (("REF", args.ref), ("DIST", args.dist)):
        if os.path.isdir(path):
            raise ImageReadError(f"{path}: is a folder, not an image file; score takes two image files ({role} "
                                 "is one of them). To score a folder of BAPPS samples, use `spips-bench run "
                                 "--root DIR`.")

    ref_img, dist_img = read_image(args.ref), read_image(args.dist)
    if ref_img.array.shape != dist_img.array.shape:
        rh, rw = ref_img.array.shape[:2]
        dh, dw = dist_img.array.shape[:2]
        raise ImageReadError(
            f"size mismatch: {args.ref} is {rw}x{rh} but {args.dist} is {dw}x{dh}; "
            "full-reference metrics need images of the same size."
        )
    conversions = {str(img.path): img.conversion for img in (ref_img, dist_img) if img.conversion}
    for path, conv in conversions.items():
        print(f"note: {path} converted {conv}", file=sys.stderr)

    ref = ref_img.tensor().unsqueeze(0).to(device)
    dist = dist_img.tensor().unsqueeze(0).to(device)
    scores: dict[str, float] = {}
    info: dict[str, dict[str, object]] = {}
    for spec in specs:
        options = {}
        if args.checkpoint:
            if not accepts_option(spec, "checkpoint"):
                raise ValueError(f"--checkpoint was given but metric {spec.name!r} has no trained heads to load.")
            options["checkpoint"] = args.checkpoint
        with warnings.catch_warnings():  # the output marks untrained metrics itself
            warnings.simplefilter("ignore", UntrainedHeadsWarning)
            metric = create_metric(spec.name, **options).to(device).eval()
        with torch.inference_mode():
            value = float(metric(dist, ref).double().item())
        scores[spec.name] = value
        info[spec.name] = {"higher_is_better": spec.higher_is_better,
                           "trained": bool(getattr(metric, "trained", True))}

    if args.json:
        out = {"ref": args.ref, "dist": args.dist, "scores": {k: _json_float(v) for k, v in scores.items()},
               "nonfinite": {k: _nonfinite_name(v) for k, v in scores.items() if not math.isfinite(v)},
               "metrics": info, "conversions": conversions}
        print(json.dumps(out, indent=2, allow_nan=False))
    else:
        width = max(len(n) for n in scores)
        for name, value in scores.items():
            better = "higher" if info[name]["higher_is_better"] else "lower"
            note = "" if info[name]["trained"] else "  (untrained)"
            print(f"{name.ljust(width)}  {value:.6f}  ({better} is better){note}")
    return 0


def _json_float(v: float) -> float | None:
    """A score as a JSON number; JSON has no inf/nan (PSNR of identical images is +inf): null instead."""
    return v if math.isfinite(v) else None


def _nonfinite_name(v: float) -> str:
    """What a null score stands for: ``"+inf"``, ``"-inf"`` or ``"nan"``."""
    return "nan" if math.isnan(v) else ("+inf" if v > 0 else "-inf")
