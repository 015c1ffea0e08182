"""``spips-bench tables``: rebuild summary.csv and the tables of a run folder from its score store alone.

With ``--check DIR`` it verifies committed results instead: the run recorded in ``DIR/run.json`` is
scored again into a temporary folder (or ``--from OUT`` is used as is), telling on stderr what it scores,
and compared with ``DIR`` as :mod:`spips_bench.report.check` says: the tables exactly, the numbers of
``summary.csv`` within :data:`~spips_bench.report.check.SUMMARY_TOLERANCE`, ``run.json`` in every result field.

With ``--out DIR`` it writes the paper's Tables II-VIII of the run into ``DIR`` instead
(:func:`spips_bench.report.paper.write_paper_tables`), and with ``--compare-paper`` the published values
and the differences beside them, in tables of their own; the run folder is only read. ``--compare-paper``
needs ``--out``, and refuses a run on synthetic judgments unless ``--allow-synthetic``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from spips_bench.report.check import SUMMARY_TOLERANCE

HELP = ("rebuild summary.csv, tables.md and tables.tex from a run folder's store (no metric is computed); with "
        "--out, the paper's Tables II-VIII (--compare-paper: beside the published values)")

#: Settings of a recorded run that a check reproduces; the rest (out, progress, workers) are local.
#: The checkpoints are not among them: each metric's entry names its own file and SHA-256 (several
#: invocations into one folder may each have passed another), see :func:`recorded_checkpoints`.
_REPLAYED = ("metrics", "split", "categories", "kinds", "batch_size", "amp", "load_size", "strict",
             "bootstrap", "seed", "offline", "on_error")


def _formats(value: str) -> list[str]:
    from spips_bench.report.build import REPORT_FILES

    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in REPORT_FILES]
    if bad or not items:
        raise argparse.ArgumentTypeError(f"--format takes {' and/or '.join(REPORT_FILES)}, got {value!r}")
    return items


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="source", type=Path, default=None, metavar="OUT",
                   help="run folder written by `spips-bench run` (its --out)")
    p.add_argument("--format", type=_formats, default=None, metavar="md,tex",
                   help="table formats to write (default md,tex)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="write the paper's Tables II-VIII of --from OUT (display names, the paper's row order, "
                        "significance marks) into DIR as paper-tables.md/.tex; OUT is only read")
    p.add_argument("--compare-paper", action="store_true",
                   help="with --out: add the paper's published values and ours minus the paper, each in a table "
                        "of its own")
    p.add_argument("--allow-synthetic", action="store_true",
                   help="let --compare-paper compare a run on synthetic judgments (the demo set) with the paper, "
                        "every table under a warning banner")
    p.add_argument("--mos", type=Path, nargs="+", default=None, metavar="RUN",
                   help="with --out DIR: the SRCC, PLCC and KRCC of these run folders on MOS datasets (tid2013, "
                        "kadid10k, pipal, mos-demo), metrics x datasets, into DIR as mos-tables.md/.tex")
    p.add_argument("--intervals", action="store_true", help="show bootstrap intervals in the tables")
    p.add_argument("--check", type=Path, default=None, metavar="DIR",
                   help="re-score the run recorded in DIR/run.json (or use --from) and fail if the results "
                        "differ from DIR's: the tables exactly, summary.csv numbers by more than "
                        f"{SUMMARY_TOLERANCE:g} (times max(1, |value|)), run.json in any field but times, paths "
                        "and versions")


def recorded_checkpoints(record: dict[str, Any]) -> dict[str, Path]:
    """The checkpoint each recorded metric was scored with, checked against its recorded SHA-256.

    A metric's entry holds its file (``checkpoint``) and ``checkpoint_sha256``; an entry written before
    per-metric checkpoints holds the hash only, and its file is the run's ``--checkpoint`` argument.

    Raises:
        RunConfigError: a checkpoint file that is no longer there, or whose SHA-256 changed since.
    """
    from spips_bench.errors import RunConfigError
    from spips_bench.io import sha256_file

    bare = record.get("arguments", {}).get("checkpoint")
    found: dict[str, Path] = {}
    for name, info in record.get("metrics", {}).items():
        sha = info.get("checkpoint_sha256")
        if not sha:
            continue
        where = info.get("checkpoint") or bare
        if not where:
            raise RunConfigError(f"run.json: metric {name!r} was scored with a checkpoint (SHA-256 {sha[:12]}) "
                                 "whose file it does not name; rerun the recorded command instead.")
        path = Path(where)
        now = sha256_file(path) if path.is_file() else None
        if now != sha:
            state = "is not there" if now is None else f"now has SHA-256 {now[:12]}"
            raise RunConfigError(f"{path}: metric {name!r} was scored with this checkpoint (SHA-256 {sha[:12]}), "
                                 f"and it {state}; the recorded scores cannot be regenerated from it. Put the "
                                 "checkpoint they were scored with back there, or score the new one into a "
                                 "new run folder.")
        found[name] = path
    return found


def replay_configs(record: dict[str, Any], out: Path) -> list[Any]:
    """The :class:`~spips_bench.run.config.RunConfig` s that reproduce a recorded run folder into ``out``.

    A folder can hold several invocations (metrics or categories added later). Each recorded metric
    lists the ``kind/category`` it holds; consecutive metrics holding the same set are replayed together,
    in the recorded order, so the replayed ``run.json`` lists the metrics in the same order. Each metric
    gets the checkpoint it was scored with (:func:`recorded_checkpoints`).

    Raises:
        RunConfigError: a checkpoint that changed or is gone (before anything is scored).
    """
    from spips_bench.run.config import RunConfig

    args = record.get("arguments", {})
    kept = {k: args[k] for k in _REPLAYED if k in args}
    checkpoints = recorded_checkpoints(record)
    stats = record.get("statistics", {})
    kept.update({k: stats[k] for k in ("bootstrap", "seed") if k in stats})
    dataset = record.get("dataset", {})
    # BAPPS is read where it was; another dataset there too when that folder is here (a generated set, whose
    # recorded folder is another machine's cache, is generated again where it belongs on this one).
    recorded = Path(dataset["root"]) if dataset.get("root") else None
    root = recorded if dataset.get("name") == "bapps" or (
        dataset.get("name") != "demo" and recorded is not None and recorded.is_dir()) else None
    device = record.get("fingerprint", {}).get("global", {}).get("device_type", "cpu")
    groups: list[tuple[tuple[str, ...], list[str]]] = []
    skipped: list[str] = []  # no scores: replayed with the first group, where they are skipped again
    for name, info in record.get("metrics", {}).items():
        scored = tuple(info.get("scored", ()))
        if not scored:
            skipped.append(name)
        elif groups and groups[-1][0] == scored:
            groups[-1][1].append(name)
        else:
            groups.append((scored, [name]))
    if not groups:
        groups.append((tuple(record.get("categories", {})), []))
    groups[0][1].extend(skipped)
    configs = []
    for scored, names in groups:
        pairs = [key.split("/", 1) for key in scored]
        kept.update(metrics=names, kinds=list(dict.fromkeys(k for k, _ in pairs)) or None,
                    categories=list(dict.fromkeys(c for _, c in pairs)) or None)
        configs.append(RunConfig(**kept, dataset=dataset.get("name", "demo"), root=root, device=device,
                                 out=out, workers=0, progress=False,
                                 checkpoints={n: checkpoints[n] for n in names if n in checkpoints}))
    return configs


def _say(message: str) -> None:
    print(f"check: {message}", file=sys.stderr, flush=True)


def _planned(config: Any, record: dict[str, Any]) -> list[str]:
    """The recorded ``kind/category`` keys that ``config`` scores."""
    kinds = config.kinds or ["2afc", "jnd"]
    return [k for k in record.get("categories", {}) if k.split("/", 1)[0] in kinds
            and (not config.categories or k.split("/", 1)[1] in config.categories)]


def _describe(config: Any, record: dict[str, Any]) -> str:
    keys = _planned(config, record)
    samples = sum(int(record["categories"][k]) for k in keys)
    names = config.metrics
    shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
    return f"{len(names)} metric(s) ({shown}) on {len(keys)} categories, {samples} samples"


def _replay(record: dict[str, Any], out: Path) -> None:
    """Score the recorded run again into ``out``, telling on stderr what it does."""
    from dataclasses import replace

    from spips_bench.run.runner import run_benchmark

    configs = replay_configs(record, out)
    categories = record.get("categories", {})
    for i, config in enumerate(configs, start=1):
        _say(f"regenerating part {i} of {len(configs)}: {_describe(config, record)}")
        started = time.perf_counter()
        pending = set(_planned(config, record))

        def progress(kind: str, category: str, batches: int, size: int = config.batch_size,
                     pending: set[str] = pending, boot: int = config.bootstrap) -> None:
            key = f"{kind}/{category}"
            total = int(categories.get(key, 0))
            _say(f"  {key}: {min(batches * size, total) if total else batches * size} of "
                 f"{total or '?'} samples scored")
            if total and batches * size >= total:
                pending.discard(key)
                if not pending:
                    _say(f"  computing the statistics ({boot} bootstrap resamples each) and the tables")

        # One flush per batch, so that progress shows; the store's contents do not depend on it.
        run_benchmark(replace(config, flush_every=1), hook=progress)
        _say(f"part {i} scored and summarised in {time.perf_counter() - started:.0f} s")


def run(args: argparse.Namespace) -> int:
    from spips_bench.report.build import REPORT_FILES, write_reports

    formats = list(REPORT_FILES) if args.format is None else args.format  # default: every format
    options = {"formats": formats, "intervals": args.intervals}
    if args.mos is not None:
        return _mos_overview(args, formats)
    paper = args.out is not None or args.compare_paper or args.allow_synthetic
    if args.check is not None and paper:
        raise ValueError("--check compares the plain tables of a run folder; --out, --compare-paper and "
                         "--allow-synthetic go with --from OUT alone.")
    if args.check is None and paper:
        return _paper_tables(args, formats)
    if args.check is None:
        if args.source is None:
            raise ValueError("pass --from OUT (a run folder of `spips-bench run`), or --check DIR.")
        return _show_written(write_reports(args.source, **options))

    from spips_bench.report.check import compare_run_folders
    from spips_bench.run.store import ScoreStore

    record = ScoreStore(args.check).read_run()
    if record is None:
        raise FileNotFoundError(f"{args.check / 'run.json'} not found; --check needs committed results of "
                                "`spips-bench run`.")
    reports = [REPORT_FILES[f] for f in formats]
    with tempfile.TemporaryDirectory(prefix="spips-bench-check-") as tmp:
        out = args.source
        if out is None:
            out = Path(tmp) / "run"
            _replay(record, out)
        defaults = {"formats": list(REPORT_FILES), "intervals": False}
        if args.source is not None or options != defaults:  # a replay wrote the default reports already
            _say(f"rebuilding summary.csv and {', '.join(reports)} from {out}")
            write_reports(out, **options)
        _say(f"comparing with {args.check}")
        result = compare_run_folders(args.check, out, reports)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    if not result.equal:
        for difference in result.differences:
            print(difference, file=sys.stderr)
        print(f"{args.check}: regenerated results differ from the committed ones (above; summary.csv numbers "
              f"are compared within {SUMMARY_TOLERANCE:g}, the tables exactly). Regenerate them with the "
              f"command in {args.check / 'README.md'} and commit the result.", file=sys.stderr)
        return 1
    gap, where = result.largest
    detail = f"largest difference {gap:.2g} at {where}" if gap else "no difference"
    print(f"{args.check}: {', '.join(reports)} identical; summary.csv within {SUMMARY_TOLERANCE:g} ({detail}); "
          "run.json equal apart from times and paths.")
    return 0


def _paper_tables(args: argparse.Namespace, formats: list[str]) -> int:
    """``tables --from OUT --out DIR [--compare-paper [--allow-synthetic]]``: the paper's tables into DIR."""
    from spips_bench.report.paper import write_paper_tables

    if args.source is None:
        raise ValueError("--out writes the paper's tables of a run folder: pass --from OUT (a run folder of "
                         "`spips-bench run`) as well.")
    if args.out is None:
        what = "--compare-paper" if args.compare_paper else "--allow-synthetic"
        raise ValueError(f"{what} writes the paper's tables beside ours into a folder of their own and never "
                         f"rewrites the run's tables: pass --out DIR as well (e.g. --out {args.source / 'paper'}).")
    if args.allow_synthetic and not args.compare_paper:
        raise ValueError("--allow-synthetic only lets --compare-paper compare synthetic judgments with the "
                         "paper; pass --compare-paper too, or leave it out.")
    if args.intervals:
        raise ValueError("--intervals is for the plain tables (`tables --from OUT`); the paper's tables hold one "
                         "number per cell, and paper-significance.csv holds the paired intervals.")
    written = write_paper_tables(args.source, args.out, formats=formats, compare_paper=args.compare_paper,
                                 allow_synthetic=args.allow_synthetic)
    return _show_written(written)


def _mos_overview(args: argparse.Namespace, formats: list[str]) -> int:
    """``tables --mos RUN... --out DIR``: metrics x datasets tables of MOS runs into DIR."""
    from spips_bench.report.mos import write_overview

    others = [flag for flag, on in (("--from", args.source is not None), ("--check", args.check is not None),
                                    ("--compare-paper", args.compare_paper),
                                    ("--allow-synthetic", args.allow_synthetic)) if on]
    if others:
        raise ValueError(f"--mos reads run folders of its own; leave out {', '.join(others)}.")
    if args.out is None:
        raise ValueError("--mos writes mos-tables.md/.tex into a folder: pass --out DIR as well.")
    return _show_written(write_overview(args.mos, args.out, formats=formats, intervals=args.intervals))


def _show_written(written: dict[str, Path]) -> int:
    """Name each file written on stderr and print the Markdown one, if any; the command's exit status."""
    for path in written.values():
        print(f"wrote {path}", file=sys.stderr)
    md = written.get("md")
    if md is not None:
        print(md.read_text(encoding="utf-8"), end="")
    return 0
