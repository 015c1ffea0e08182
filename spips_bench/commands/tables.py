"""``spips-bench tables``: rebuild summary.csv and the tables of a run folder from its score store alone.

With ``--check DIR`` it verifies committed results instead: the run recorded in ``DIR/run.json`` is
scored again into a temporary folder (or ``--from OUT`` is used as is) and its ``summary.csv`` and
tables must equal ``DIR``'s byte for byte.
"""

from __future__ import annotations

import argparse
import difflib
import sys
import tempfile
from pathlib import Path
from typing import Any

HELP = "rebuild summary.csv, tables.md and tables.tex from a run folder's store (no metric is computed)"

#: Settings of a recorded run that a check reproduces; the rest (out, progress, workers) are local.
_REPLAYED = ("metrics", "split", "categories", "kinds", "batch_size", "amp", "load_size", "strict",
             "bootstrap", "seed", "checkpoint", "offline", "on_error")


def _formats(value: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in ("md", "tex")]
    if bad or not items:
        raise argparse.ArgumentTypeError(f"--format takes md and/or tex, got {value!r}")
    return items


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="source", type=Path, default=None, metavar="OUT",
                   help="run folder written by `spips-bench run` (its --out)")
    p.add_argument("--format", type=_formats, default=["md", "tex"], metavar="md,tex",
                   help="table formats to write (default md,tex)")
    p.add_argument("--compare-paper", action="store_true",
                   help="show the paper's published values beside ours")
    p.add_argument("--intervals", action="store_true", help="show bootstrap intervals in the tables")
    p.add_argument("--check", type=Path, default=None, metavar="DIR",
                   help="re-score the run recorded in DIR/run.json (or use --from) and fail if "
                        "summary.csv or the tables differ from DIR's")


def replay_configs(record: dict[str, Any], out: Path) -> list[Any]:
    """The :class:`~spips_bench.evaluate.RunConfig` s that reproduce a recorded run folder into ``out``.

    A folder can hold several invocations (metrics or categories added later). Each recorded metric
    lists the ``kind/category`` it holds; consecutive metrics holding the same set are replayed together,
    in the recorded order, so the replayed ``run.json`` lists the metrics in the same order.
    """
    from spips_bench.evaluate import RunConfig

    args = record.get("arguments", {})
    kept = {k: args[k] for k in _REPLAYED if k in args}
    if kept.get("checkpoint"):
        kept["checkpoint"] = Path(kept["checkpoint"])
    stats = record.get("statistics", {})
    kept.update({k: stats[k] for k in ("bootstrap", "seed") if k in stats})
    dataset = record.get("dataset", {})
    root = Path(dataset["root"]) if dataset.get("name") == "bapps" else None
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
                                 out=out, workers=0, progress=False))
    return configs


def compare_reports(expected_dir: Path, actual_dir: Path, names: list[str]) -> list[str]:
    """Unified diffs of each named file that differs between the two folders (empty: all equal)."""
    problems: list[str] = []
    for name in names:
        exp, act = expected_dir / name, actual_dir / name
        if not exp.is_file():
            problems.append(f"{exp}: missing from the committed results")
            continue
        a, b = exp.read_text(encoding="utf-8"), act.read_text(encoding="utf-8")
        if a != b:
            diff = difflib.unified_diff(a.splitlines(True), b.splitlines(True), str(exp), str(act), n=1)
            problems.append("".join(list(diff)[:60]))
    return problems


def run(args: argparse.Namespace) -> int:
    from spips_bench.runinfo import REPORT_FILES, write_reports

    options = {"formats": args.format, "compare_paper": args.compare_paper, "intervals": args.intervals}
    if args.check is None:
        if args.source is None:
            raise ValueError("pass --from OUT (a run folder of `spips-bench run`), or --check DIR.")
        written = write_reports(args.source, **options)
        for path in written.values():
            print(f"wrote {path}", file=sys.stderr)
        md = written.get("md")
        if md is not None:
            print(md.read_text(encoding="utf-8"), end="")
        return 0

    from spips_bench.evaluate import run_benchmark
    from spips_bench.store import ScoreStore

    record = ScoreStore(args.check).read_run()
    if record is None:
        raise FileNotFoundError(f"{args.check / 'run.json'} not found; --check needs committed results of "
                                "`spips-bench run`.")
    names = ["summary.csv", *(REPORT_FILES[f] for f in args.format)]
    with tempfile.TemporaryDirectory(prefix="spips-bench-check-") as tmp:
        out = args.source
        if out is None:
            out = Path(tmp) / "run"
            for config in replay_configs(record, out):
                run_benchmark(config)
        write_reports(out, **options)
        problems = compare_reports(args.check, out, names)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        print(f"{args.check}: regenerated results differ from the committed ones (above). Regenerate them "
              f"with the command in {args.check / 'README.md'} and commit the result.", file=sys.stderr)
        return 1
    print(f"{args.check}: {', '.join(names)} regenerated identically.")
    return 0
