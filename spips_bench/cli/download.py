"""``spips-bench download``: fetch BAPPS or KADID-10k from their official hosts, print the steps to get
TID2013 and PIPAL (no open archive spips-bench can unpack), or build a synthetic demo set."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = ("download and unpack BAPPS or KADID-10k (resumable, SHA-256 checked), show how to get TID2013 and PIPAL, "
        "or generate a synthetic demo set")
#: The MOS datasets this command knows: kadid10k is downloaded, tid2013 and pipal get their steps printed.
MOS_DATASETS = ("kadid10k", "tid2013", "pipal")

def add_arguments(p: argparse.ArgumentParser) -> None:
    from spips_bench.data.download import DEFAULT_URL_BASE, FALLBACK_URL_BASE, SPLIT_CHOICES

    p.add_argument("dataset", choices=("bapps", "demo", *MOS_DATASETS, "mos-demo"),
                   help="bapps: the official archives; demo: a small synthetic BAPPS-format set "
                        "(judgments simulated, not human), generated offline; kadid10k: its official zip "
                        "(needs --sha256, see docs/datasets.md); tid2013, pipal: print the steps to get them; "
                        "mos-demo: a small synthetic KADID-10k-layout set (scores simulated), generated offline")
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
                   help="expected SHA-256 of the one archive of --split (2afc-val, train or jnd), or of "
                        "kadid10k.zip; a mismatching file is refused and kept as NAME.rejected (default: the hash "
                        "recorded at the first download; kadid10k: required until one is recorded)")
    p.add_argument("--url", default=None,
                   help="kadid10k: another URL of the same kadid10k.zip (default: the card's official URL)")
    p.add_argument("--keep-archive", action="store_true", help="keep the archive after extraction")
    p.add_argument("--retries", type=int, default=5,
                   help="retries after a failure that made no progress (default: 5)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    if args.dataset in (*MOS_DATASETS, "mos-demo"):
        return _run_mos(args)
    if args.url is not None:
        raise ValueError("--url applies to kadid10k; for bapps pass --url-base.")
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


def _run_mos(args: argparse.Namespace) -> int:
    """``download kadid10k | tid2013 | pipal | mos-demo``."""
    from spips_bench.data.download import DEFAULT_URL_BASE
    from spips_bench.data.registry import get_dataset

    if args.split != "val" or args.url_base != DEFAULT_URL_BASE:
        raise ValueError(f"--split and --url-base apply to bapps, not to {args.dataset}.")
    dataset = get_dataset(args.dataset)
    if args.dataset == "mos-demo":
        from spips_bench.data.mos_demo import MOS_DEMO_LABEL, ensure_mos_demo

        if args.sha256 or args.keep_archive or args.url:
            raise ValueError("--sha256, --keep-archive and --url apply to kadid10k, not to mos-demo.")
        print(f"MOS demo set ({MOS_DEMO_LABEL}, not human) ready at {ensure_mos_demo(args.root)}")
        return 0
    if args.dataset != "kadid10k":
        from spips_bench.errors import DownloadError

        root = args.root if args.root is not None else dataset.default_root()
        print(f"{dataset.title} is not on an open URL that spips-bench can download and unpack; to get it into {root}:")
        for i, step in enumerate(getattr(dataset, "steps", ()), start=1):
            print(f"  {i}. {step}")
        raise DownloadError(f"{dataset.title} must be downloaded by hand: follow the steps above, then run "
                            f"`spips-bench run --dataset {dataset.name} --root {root}`.")
    from spips_bench.data.download import download_zip_dataset, zip_dataset

    root = args.root if args.root is not None else dataset.default_root()
    r = download_zip_dataset(root, zip_dataset(dataset.name), url=args.url, sha256=args.sha256,
                             keep_archive=args.keep_archive, progress=not args.no_progress, retries=args.retries)
    state = ("already present (nothing downloaded or extracted)" if not r.extracted
             else ("downloaded and " if r.downloaded else "") + f"extracted, sha256 {r.sha256}")
    print(f"{r.archive}: {r.target} {state}")
    return 0
