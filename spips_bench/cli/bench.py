"""``spips-bench bench``: throughput and memory of the zoo against reference packages; writes a report."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spips_bench.perf.common import BenchConfig

from spips_bench.cli._args import csv_list as _csv

HELP = "measure pairs/s, 2AFC triplets/s and memory of metrics against piq/pyiqa/lpips; write a report"


def _sizes(value: str) -> list[int]:
    try:
        sizes = [int(v) for v in _csv(value)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sizes takes pixel sides like 64,256, got {value!r}") from None
    if any(s < 8 for s in sizes):
        raise argparse.ArgumentTypeError(f"--sizes: every side must be at least 8 px, got {value!r}")
    return sizes


def _peers(value: str) -> list[str]:
    return [] if value.strip() == "none" else _csv(value)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metrics", type=_csv, default=["default"], metavar="A,B|default|all",
                   help="metrics to measure (default: one of each family plus SPIPS; 'all': every built-in)")
    p.add_argument("--sizes", type=_sizes, default=None, metavar="64,256",
                   help="image sides in px of metrics without a CNN trunk (default 64,256; --quick: 48)")
    p.add_argument("--deep-sizes", type=_sizes, default=None, metavar="64",
                   help="image sides in px of metrics with a CNN trunk (default 64, the BAPPS size; "
                        "--quick: 48)")
    p.add_argument("--batch-size", type=int, default=None, help="pairs or triplets per call (default 16)")
    p.add_argument("--device", default="cpu", help="auto, cpu or cuda (default cpu); names the report file")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--repeats", type=int, default=None, help="timed calls per measurement (default 3)")
    p.add_argument("--peers", type=_peers, default=None, metavar="piq,pyiqa,lpips|none",
                   help="reference packages to compare with (default all three)")
    p.add_argument("--out", type=Path, default=Path("results/bench"),
                   help="report folder; writes <device>.md and <device>.csv (default results/bench)")
    p.add_argument("--run-samples", type=int, default=None,
                   help="triplets N of the `run` end-to-end sets, N and 10 N (default 100; --quick: 1)")
    p.add_argument("--run-workers", type=int, default=0, help="DataLoader workers of those runs (default 0)")
    p.add_argument("--no-system", action="store_true",
                   help="skip the GFLOP/s and `run` end-to-end measurements")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 48 px, batch 2, 1 repeat, tiny `run` sets; numbers not meaningful")


def canonical_command(config: BenchConfig) -> str:
    """The full command line that reproduces ``config`` (every option spelled out)."""
    c = config
    parts = ["spips-bench", "bench", "--metrics", ",".join(c.metrics), "--sizes",
             ",".join(map(str, c.sizes)), "--deep-sizes", ",".join(map(str, c.deep_sizes)),
             "--batch-size", str(c.batch_size),
             "--device", c.device, "--threads", str(c.threads), "--repeats", str(c.repeats),
             "--peers", ",".join(c.peers) or "none", "--out", str(c.out),
             "--run-samples", str(c.run_samples), "--run-workers", str(c.run_workers)]
    if not c.system:
        parts.append("--no-system")
    if c.quick:
        parts.append("--quick")
    return " ".join(shlex.quote(p) for p in parts)


def run(args: argparse.Namespace) -> int:
    from spips_bench.errors import DeviceError
    from spips_bench.perf.bench import run_bench
    from spips_bench.perf.common import BenchConfig
    from spips_bench.validation import resolve_device

    device = resolve_device(args.device)
    if device.index not in (None, 0):
        raise DeviceError(f"--device {args.device}: bench measures the first GPU only; use --device cuda.")
    quick = bool(args.quick)
    config = BenchConfig(
        metrics=args.metrics, sizes=args.sizes or ([48] if quick else [64, 256]),
        deep_sizes=args.deep_sizes or ([48] if quick else [64]),
        batch_size=args.batch_size or (2 if quick else 16), device=device.type, threads=args.threads,
        repeats=args.repeats or (1 if quick else 3), out=args.out, quick=quick,
        **({} if args.peers is None else {"peers": args.peers}),
        run_samples=args.run_samples or (1 if quick else 100), run_workers=args.run_workers,
        system=not args.no_system,
    )
    config.command = canonical_command(config)
    result = run_bench(config)
    md = Path(config.out) / f"{config.device}.md"
    print(f"wrote {md} and {md.with_suffix('.csv')} in {result.seconds:.0f} s")
    for t in result.targets:
        print(f"  {t['status']:>6}  {t['target']}: {t['measured']:.4g} ({t['threshold']})")
    return 0
