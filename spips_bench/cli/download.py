"""``spips-bench download``: fetch BAPPS from its official host, or build the synthetic demo set."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "download and unpack BAPPS (resumable, SHA-256 checked), or generate the synthetic demo set"

def add_arguments(p: argparse.ArgumentParser) -> None:
    from spips_bench.data.download import DEFAULT_URL_BASE, FALLBACK_URL_BASE, SPLIT_CHOICES

    p.add_argument("dataset", choices=("bapps", "demo"),
                   help="bapps: the official archives; demo: a small synthetic BAPPS-format set "
                        "(judgments simulated, not human), generated offline")
    p.add_argument("--split", choices=SPLIT_CHOICES, default="val",
                   help="bapps: val = 2AFC val and JND val (1.3 GB), what `run --split val` reads; "
                        "2afc-val = 2AFC val only (1.1 GB); train = 2AFC train (5.3 GB); jnd = JND val "
                        "(0.2 GB); all = the three archives (default: val)")
    p.add_argument("--root", type=Path, default=None,
                   help="folder that will hold 2afc/ and jnd/ (default for bapps: $SPIPS_BENCH_BAPPS or "
                        "./datasets/bapps; for demo: $SPIPS_BENCH_CACHE/demo-v1 or "
                        "~/.cache/spips-bench/demo-v1)")
    p.add_argument("--url-base", default=DEFAULT_URL_BASE,
                   help=f"folder URL of the archives (default: {DEFAULT_URL_BASE}; older official host: "
                        f"{FALLBACK_URL_BASE})")
    p.add_argument("--sha256", default=None, metavar="HEX",
                   help="expected SHA-256 of the one archive of --split (2afc-val, train or jnd); a "
                        "mismatching file is refused and kept as NAME.rejected (default: the hash recorded at "
                        "the first download)")
    p.add_argument("--keep-archive", action="store_true", help="keep the .tar.gz after extraction")
    p.add_argument("--retries", type=int, default=5,
                   help="retries after a failure that made no progress (default: 5)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    if args.dataset == "demo":
        from spips_bench.data.demo import DEMO_LABEL, ensure_demo
        from spips_bench.data.download import DEFAULT_URL_BASE

        if args.split != "val" or args.sha256 or args.keep_archive or args.url_base != DEFAULT_URL_BASE:
            raise ValueError("--split, --sha256, --keep-archive and --url-base apply to bapps, not to demo.")
        root = ensure_demo(args.root)
        print(f"demo set ({DEMO_LABEL}, not human) ready at {root}")
        return 0

    from spips_bench.data.bapps import default_bapps_root
    from spips_bench.data.download import download_bapps

    root = args.root if args.root is not None else default_bapps_root()
    results = download_bapps(root, split=args.split, url_base=args.url_base, sha256=args.sha256,
                             keep_archive=args.keep_archive, progress=not args.no_progress,
                             retries=args.retries)
    for r in results:
        if not r.downloaded and not r.extracted:
            state = "already present (nothing downloaded or extracted)"
        else:
            state = ("downloaded and " if r.downloaded else "") + f"extracted, sha256 {r.sha256}"
        print(f"{r.archive}: {r.target} {state}")
    return 0
