"""``spips-bench reproduce``: the SPIPS paper from one command (data, weights, training, scoring, reports)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = ("reproduce the SPIPS paper: data, weights, train the full model and both ablations, score them with "
        "the baselines, write Tables II-VIII, Figs. 3-4 and report.md (resumable)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", type=Path, default=None,
                   help="BAPPS root holding (or receiving) 2afc/ and jnd/ (default: $SPIPS_BENCH_BAPPS or "
                        "./datasets/bapps); with --dataset demo, where the demo set lives (default: the cache)")
    p.add_argument("--out", type=Path, required=True,
                   help="output folder; rerunning into it does only what is missing or whose inputs changed")
    p.add_argument("--dataset", choices=("bapps", "demo"), default="bapps",
                   help="bapps (default) or demo: the synthetic set, judgments simulated, not human (a few "
                        "minutes on a CPU, offline; its numbers test the software, not the paper)")
    p.add_argument("--backbone", default="alex",
                   help="SPIPS trunk: alex (default), vgg, squeeze, alex-st, vgg-st (offline: alex-st or vgg-st, "
                        "whose trunks ship in the stlpips-pytorch wheel)")
    p.add_argument("--device", default="auto", help="auto (a GPU when one is visible), cpu, cuda or cuda:N")
    p.add_argument("--epochs", type=int, default=None,
                   help="training epochs at the full learning rate (default: the LPIPS protocol's 5 + 5 decay "
                        "epochs; --epochs alone means no decay epochs)")
    p.add_argument("--decay-epochs", type=int, default=None, help="epochs of linear learning-rate decay")
    p.add_argument("--offline", action="store_true",
                   help="download nothing: missing data or a missing trunk of a trained model is an error "
                        "before any work; a baseline without its weights is left out with a notice")
    p.add_argument("--max-samples", type=int, default=None,
                   help="use only the first N samples of every category (a quick trial, not the paper)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of the run's intervals")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from spips_bench.paper.pipeline import reproduce

    result = reproduce(args.root, args.out, dataset=args.dataset, backbone=args.backbone, device=args.device,
                       epochs=args.epochs, decay_epochs=args.decay_epochs, offline=args.offline,
                       max_samples=args.max_samples, progress=not args.no_progress, bootstrap=args.bootstrap)
    done, skipped = result.done(), result.skipped()
    label = " (synthetic judgments: not comparable with the paper)" if result.synthetic else ""
    print(f"reproduce: {len(done)} stage(s) done, {len(skipped)} skipped (current) in {result.seconds:.1f} s"
          f"{label}", file=sys.stderr)
    for name, path in result.checkpoints.items():
        print(f"  trained {name}: {path}", file=sys.stderr)
    print(f"report: {result.report}")
    return 0
