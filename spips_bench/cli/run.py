"""``spips-bench run``: score metrics on BAPPS (or the demo set) and write the store, summary and tables."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from spips_bench.cli._args import csv_list as _csv

HELP = "score metrics on BAPPS 2AFC/JND into a resumable run folder, then write summary.csv and tables"


def _load_size(value: str) -> int | None:
    if value == "native":
        return None
    try:
        size = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--load-size takes a number of pixels or 'native', got {value!r}") from None
    if size < 1:
        raise argparse.ArgumentTypeError(f"--load-size must be at least 1 px, got {size}")
    return size


def _positive(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {n}")
    return n


def checkpoint_arguments(values: list[str] | None) -> tuple[Path | None, dict[str, Path]]:
    """Split the values of a repeated ``--checkpoint`` into the bare file and the ``NAME=PATH`` pairs.

    A value naming an existing file is a bare path even if it holds ``=``; any other value with ``=``
    is ``NAME=PATH``. Names are checked against the run's metrics later
    (:func:`spips_bench.run.config.metric_checkpoints`), where aliases and spellings are resolved.

    Raises:
        RunConfigError: an empty NAME or PATH, a NAME given twice, two bare paths, or a bare path that
            does not exist.
    """
    from spips_bench.errors import RunConfigError

    bare: Path | None = None
    named: dict[str, Path] = {}
    for value in values or []:
        if "=" in value and not Path(value).is_file():
            name, _, path = value.partition("=")
            name = name.strip()
            if not name or not path:
                what = "a metric name before '='" if not name else "a file after '='"
                raise RunConfigError(f"--checkpoint {value}: missing {what}; pass NAME=PATH (a metric of --metrics "
                                     "and the final.safetensors `spips-bench train` wrote for it) or a bare PATH.")
            if name in named:
                raise RunConfigError(f"--checkpoint {value}: {name!r} already has a checkpoint ({named[name]}); "
                                     "give one checkpoint per metric.")
            named[name] = Path(path)
            continue
        if bare is not None:
            raise RunConfigError(f"--checkpoint {value}: a bare checkpoint ({bare}) is given already; name the "
                                 "metric of each further one as NAME=PATH.")
        bare = Path(value)
        if not bare.is_file():
            raise RunConfigError(f"--checkpoint {value}: no such file; pass the checkpoint `spips-bench train` "
                                 "wrote (its final.safetensors), or NAME=PATH for one metric.")
    return bare, named


#: The default of ``--load-size``: the dataset's own (:func:`spips_bench.run.config.dataset_defaults`).
_DATASET_DEFAULT = object()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metrics", type=_csv, required=True, metavar="LIST|all",
                   help="comma-separated metric names (see `spips-bench list`), or 'all'")
    p.add_argument("--split", default=None, metavar="val|train|NAME",
                   help="BAPPS split: val or train (default val); another dataset has splits of its own (default: "
                        "its first, e.g. 'all' for tid2013 and kadid10k, 'train' for pipal)")
    p.add_argument("--dataset", default="auto", metavar="auto|bapps|demo|NAME",
                   help="auto: BAPPS under the root; the demo set (synthetic judgments) only when no root "
                        "is named and ./datasets/bapps holds no BAPPS. NAME: a dataset plugin "
                        "(see `spips-bench list --datasets`)")
    p.add_argument("--root", type=Path, default=None,
                   help="BAPPS root holding 2afc/ and jnd/ (default $SPIPS_BENCH_BAPPS or ./datasets/bapps); "
                        "a root holding no BAPPS is an error; absent categories are named and skipped. For a "
                        "dataset plugin: its root (default ./datasets/<name>)")
    p.add_argument("--categories", type=_csv, default=None, metavar="A,B",
                   help="categories to score (default: all of the split)")
    p.add_argument("--kinds", type=_csv, default=None, metavar="2afc,jnd",
                   help="judgment kinds (default: 2afc and jnd on val, 2afc on train)")
    p.add_argument("--out", type=Path, default=None,
                   help="run folder (default ./runs/<dataset>-<split>-<load size>)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--batch-size", type=_positive, default=50, help="samples per batch (default 50)")
    p.add_argument("--workers", type=_positive, default=2, help="DataLoader worker processes (default 2)")
    p.add_argument("--amp", action="store_true", help="autocast: bfloat16 on CPU, float16 on CUDA")
    p.add_argument("--load-size", type=_load_size, default=_DATASET_DEFAULT, metavar="64|native",
                   help="resize images to this many px, or keep their stored size (default: 64, the BAPPS "
                        "protocol, for BAPPS and the demo set; native for the MOS sets tid2013, kadid10k, pipal)")
    p.add_argument("--strict", action="store_true",
                   help="a metric that cannot run, or a category absent from the root, is an error, not a "
                        "footnote")
    p.add_argument("--bootstrap", type=_positive, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--seed", type=_positive, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--checkpoint", action="append", default=None, metavar="[NAME=]PATH",
                   help="trained parameters: NAME=PATH for metric NAME (repeatable, one per metric), or a bare "
                        "PATH for every metric that takes a checkpoint and has no NAME=PATH")
    p.add_argument("--offline", action="store_true", help="never download weights; skip metrics lacking them")
    p.add_argument("--overwrite", action="store_true",
                   help="discard results of another configuration in --out instead of refusing")
    p.add_argument("--on-error", choices=("fail", "skip"), default="fail",
                   help="a sample whose files cannot be used: fail (default) stops naming the file; skip "
                        "leaves it out of every statistic, lists it in run.json and footnotes the tables")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-cache", action="store_true",
                   help="decode every image from its file and write no decoded-patch cache (default: each "
                        "category is decoded once into $SPIPS_BENCH_CACHE/patches and later runs read it)")


class StopSignal(KeyboardInterrupt):
    """SIGTERM or SIGHUP (``kill``, ``docker stop``, SLURM preemption, a closed terminal) during a run.

    A :class:`KeyboardInterrupt`, so the runner treats it as SIGINT: it stores what is scored, marks
    ``run.json`` ``"interrupted"`` and re-raises; the command then exits with 128 + the signal number.
    """

    def __init__(self, signum: int) -> None:
        self.signame = signal.Signals(signum).name
        super().__init__(f"stopped by {self.signame}")


#: The signals handled like SIGINT (SIGHUP does not exist on every platform).
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


@contextlib.contextmanager
def _stop_signals() -> Iterator[list[signal.Signals]]:
    """Turn the first SIGTERM/SIGHUP into :class:`StopSignal`; later ones are ignored while the run stores
    its scores (a second ``kill`` must not cut the final flush short). Yields the signals caught."""
    caught: list[signal.Signals] = []
    if threading.current_thread() is not threading.main_thread():  # handlers belong to the main thread
        yield caught
        return

    def handler(signum: int, frame: object) -> None:
        caught.append(signal.Signals(signum))
        if len(caught) == 1:
            raise StopSignal(signum)

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield caught
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run(args: argparse.Namespace) -> int:
    from spips_bench.report.build import skip_messages
    from spips_bench.run.config import RunConfig, dataset_defaults
    from spips_bench.run.runner import run_benchmark

    if args.batch_size < 1:
        raise ValueError("--batch-size must be at least 1.")
    checkpoint, checkpoints = checkpoint_arguments(args.checkpoint)
    split, load_size = dataset_defaults(args.dataset)
    config = RunConfig(
        metrics=args.metrics, split=args.split or split, dataset=args.dataset, root=args.root,
        categories=args.categories, kinds=args.kinds, out=args.out, device=args.device,
        batch_size=args.batch_size, workers=args.workers, amp=args.amp,
        load_size=load_size if args.load_size is _DATASET_DEFAULT else args.load_size,
        strict=args.strict, bootstrap=args.bootstrap, seed=args.seed, checkpoint=checkpoint,
        checkpoints=checkpoints, offline=args.offline, overwrite=args.overwrite, progress=not args.no_progress,
        on_error=args.on_error, cache=not args.no_cache,
    )
    with _stop_signals() as caught:
        try:
            result = run_benchmark(config)
        except StopSignal:
            print(f"stopped by {caught[0].name}; everything computed so far is saved, rerun the same command "
                  "to resume.", file=sys.stderr)
            return 128 + int(caught[0])
    if result.reports:  # rank 0 only under torchrun
        rec = result.record
        for line in skip_messages(rec):
            print(line, file=sys.stderr)
        tp = rec.get("throughput", {})
        print(f"scored {tp.get('items_scored', 0)} samples in {rec.get('duration_s')} s "
              f"({tp.get('pairs_per_second')} pair scores/s) into {result.out}")
        nan = sum(e.get("value", "nan") == "nan" for e in rec.get("nonfinite", []))
        if nan:
            print(f"{nan} NaN score(s) stored as nan and left out of the statistics; see run.json",
                  file=sys.stderr)
        if rec.get("skipped"):
            print(f"{len(rec['skipped'])} sample(s) skipped (--on-error skip) and left out of the statistics; "
                  "run.json lists each with its file and reason", file=sys.stderr)
        print((result.reports.get("md") or result.reports["summary"]).read_text(encoding="utf-8"), end="")
    return 0
