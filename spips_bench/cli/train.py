"""``spips-bench train``: fit a SPIPS variant's heads on 2AFC judgments (the LPIPS protocol)."""

from __future__ import annotations

import argparse
from pathlib import Path

from spips_bench.cli._args import csv_list as _csv
from spips_bench.cli.run import _load_size

#: The heads ``--head`` chooses between (see docs/spips.md); without it the variant's own head is used.
HEADS = ("linear", "mlp")

HELP = "train SPIPS heads on BAPPS (or the synthetic demo set) 2AFC judgments; rerun to resume"


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not a non-negative integer")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metric", default=None,
                   help="SPIPS variant to train: spips, spips-vgg, spips-abla1, spips-alex-st, ... "
                   "(default: spips)")
    p.add_argument("--dataset", choices=("bapps", "demo"), default="bapps",
                   help="BAPPS, or the synthetic demo set in BAPPS layout (default: bapps)")
    p.add_argument("--root", default=None,
                   help="dataset root holding 2afc/ (default for bapps: $SPIPS_BENCH_BAPPS or ./datasets/bapps; "
                        "for demo: $SPIPS_BENCH_CACHE/demo-v1)")
    p.add_argument("--split", default="train", help="training split (default: train)")
    p.add_argument("--out", type=Path, required=True,
                   help="output folder (checkpoints, curve.csv, curve.png)")
    p.add_argument("--epochs", type=_non_negative_int, default=5, help="epochs at full learning rate (5)")
    p.add_argument("--decay-epochs", type=_non_negative_int, default=5,
                   help="further epochs with linear learning-rate decay (5)")
    p.add_argument("--batch-size", type=_positive_int, default=50, help="triplets per step (50)")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (1e-4)")
    p.add_argument("--seed", type=int, default=0, help="random seed (0)")
    p.add_argument("--tune", action="store_true", help="also train the backbone (default: frozen)")
    p.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--max-samples", type=_positive_int, default=None,
                   help="train on a fixed random subset of this many triplets")
    p.add_argument("--heldout-max-samples", type=_positive_int, default=None,
                   help="cap on held-out triplets per category")
    p.add_argument("--offline", action="store_true",
                   help="never download weights (also SPIPS_BENCH_OFFLINE=1)")
    p.add_argument("--load-size", type=_load_size, default=64, metavar="64|native",
                   help="resize patches to this many px (BAPPS protocol: 64), or keep their stored size")
    p.add_argument("--categories", type=_csv, default=None, metavar="A,B",
                   help="training categories (default: all of the split present); the held-out 2AFC val "
                        "categories stay all")
    p.add_argument("--head", choices=HEADS, default=None,
                   help="the SPIPS heads: linear (a non-negative 1x1 convolution) or mlp (1x1 convolution, "
                        "ReLU, mean); default: the variant's own")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-cache", action="store_true",
                   help="decode every image from its file and write no decoded-patch cache (default: read the "
                        "patches decoded once into $SPIPS_BENCH_CACHE/patches, shared with run)")


def run(args: argparse.Namespace) -> int:
    from spips_bench.training.lpips_protocol import TrainConfig, train
    from spips_bench.validation import resolve_device

    device = str(resolve_device(args.device))
    cfg = TrainConfig(
        **({} if args.metric is None else {"metric": args.metric}), dataset=args.dataset, root=args.root,
        split=args.split, epochs=args.epochs,
        decay_epochs=args.decay_epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
        tune=args.tune, device=device, max_samples=args.max_samples,
        heldout_max_samples=args.heldout_max_samples, load_size=args.load_size, categories=args.categories,
        progress=not args.no_progress, cache=not args.no_cache,
        metric_options={} if args.head is None else {"head": args.head},
    )
    result = train(cfg, args.out)  # --offline: spips_bench.cli holds settings.offline_mode around this
    first, last = result.records[0], result.records[-1]
    label = " (synthetic judgments)" if args.dataset == "demo" else ""
    print(f"held-out 2AFC{label}: {first.heldout_2afc:.4f} untrained -> {last.heldout_2afc:.4f} after "
          f"epoch {last.epoch} ({result.heldout})")
    print(f"final checkpoint: {result.final_checkpoint}")
    size = "" if cfg.load_size == 64 else f" --load-size {cfg.load_size or 'native'}"
    print(f"evaluate with: spips-bench run --metrics {cfg.metric} --checkpoint "
          f"{cfg.metric}={result.final_checkpoint}{size}")
    return 0
