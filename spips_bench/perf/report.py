"""Writes the report of ``spips-bench bench``: ``<out>/<device>.md`` for people, ``<out>/<device>.csv``
for machines (one tidy row per measurement; ``unit`` says what ``ours`` and ``peer_value`` hold)."""

from __future__ import annotations

import csv
import math
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from spips_bench.perf.common import BenchResult, bench_plan
from spips_bench.report.grid import markdown_table

#: Full BAPPS val: 2AFC triplets (six categories) and JND pairs (two categories), protocol section 1.
BAPPS_VAL_TRIPLETS = 35_844
BAPPS_VAL_JND_PAIRS = 9_600

CSV_COLUMNS = ("section", "case", "size", "batch", "unit", "ours", "peer", "peer_value", "ratio",
               "max_abs_diff", "ours_peak_mib", "peer_peak_mib", "threshold", "status", "note")


def machine_info(threads: int, load_start: tuple[float, ...] | None = None) -> dict[str, str]:
    """CPU model, cores, threads, load, versions of Python and the packages measured."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info = {"cpu": model, "logical cores": f"{os.cpu_count()} ({usable} usable by this process)",
            "torch threads": str(threads), "python": platform.python_version(),
            "platform": platform.platform()}
    if load_start:
        info["load average (1, 5, 15 min) at the start"] = ", ".join(f"{v:.2f}" for v in load_start)
    if hasattr(os, "getloadavg"):
        info["load average (1, 5, 15 min) at the end"] = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    for pkg in ("spips-bench", "torch", "torchvision", *bench_plan().packages, "numpy"):
        try:
            info[pkg] = version(pkg)
        except PackageNotFoundError:
            info[pkg] = "not installed"
    return info


def _f(v: Any, digits: int = 1) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        if v != 0 and (abs(v) < 10 ** -digits or abs(v) >= 1e7):
            return f"{v:.2e}"
        return f"{v:.{digits}f}"
    return str(v)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    return [*markdown_table(header, rows), ""]


def projection(result: BenchResult) -> list[dict[str, Any]]:
    """Seconds for the full BAPPS val (2AFC + JND) per metric, from the measured 64-px throughput."""
    size = 64 if 64 in result.config.sizes else min(result.config.sizes)
    rates: dict[str, dict[str, float]] = {}
    for row in result.rows:
        if row.section == "zoo" and row.size == size:
            rates.setdefault(row.case, {})[row.unit] = row.ours_per_s
    out = []
    for name, r in rates.items():
        if "triplets/s" in r and "pairs/s" in r:
            secs = BAPPS_VAL_TRIPLETS / r["triplets/s"] + BAPPS_VAL_JND_PAIRS / r["pairs/s"]
            out.append({"metric": name, "size": size, "seconds": secs})
    return out


def csv_rows(result: BenchResult) -> list[dict[str, Any]]:
    """The report as tidy rows with :data:`CSV_COLUMNS`."""
    rows: list[dict[str, Any]] = []
    for r in result.rows:
        rows.append({"section": r.section, "case": r.case, "size": r.size, "batch": r.batch, "unit": r.unit,
                     "ours": r.ours_per_s, "peer": r.peer, "peer_value": r.peer_per_s, "ratio": r.ratio,
                     "max_abs_diff": r.max_abs_diff, "ours_peak_mib": r.ours_peak_mib,
                     "peer_peak_mib": r.peer_peak_mib, "note": r.note})
    bb = result.system.get("backbones")
    if bb:
        for name, t in bb["trunks"].items():
            rows.append({"section": "system", "case": f"{name} trunk convolutions", "unit": "GFLOP/s",
                         "batch": result.config.batch_size, "ours": t["gflops_trunk"],
                         "size": bb.get("size", ""), "peer": f"matmul {bb['matmul_n']}",
                         "peer_value": bb["matmul_gflops"], "ratio": t["gflops_trunk"] / bb["matmul_gflops"],
                         "note": f"{t['gflop_per_call']:.3f} GFLOP per call; conv-only (profiler) "
                                 f"{t['gflops_conv_only']:.1f} GFLOP/s"})
    run = result.system.get("run")
    if run:
        rows.append({"section": "system", "case": f"run end to end ({bench_plan().run_metric})", "size": 64,
                     "batch": result.config.batch_size, "unit": "triplets/s",
                     "ours": run["10N"]["triplets_per_s"],
                     "peer": f"{bench_plan().run_peer} in memory", "peer_value": run["pyiqa_triplets_per_s"],
                     "ratio": result.system["run_vs_pyiqa"], "max_abs_diff": run["max_abs_diff"],
                     "note": f"{run['10N']['triplets']} triplets from PNG"})
        rows.append({"section": "system", "case": "run peak RSS", "size": 64, "unit": "MiB",
                     "ours": run["10N"]["peak_rss_mib"], "peer": f"same at {run['N']['triplets']} triplets",
                     "peer_value": run["N"]["peak_rss_mib"], "ratio": result.system["run_memory_ratio"],
                     "note": f"{run['10N']['triplets']} vs {run['N']['triplets']} triplets"})
    for p in projection(result):
        rows.append({"section": "projection", "case": p["metric"], "size": p["size"], "unit": "s",
                     "ours": p["seconds"], "note": "CPU projection of full BAPPS val, not a GPU measurement"})
    for t in result.targets:
        rows.append({"section": "target", "case": t["target"], "ratio": t["measured"],
                     "threshold": t["threshold"], "status": t["status"], "note": t["detail"]})
    return [{c: ("" if isinstance(r.get(c), float) and math.isnan(r[c]) else r.get(c, ""))
             for c in CSV_COLUMNS} for r in rows]


def write_report(result: BenchResult) -> tuple[Path, Path]:
    """Write ``<out>/<device>.md`` and ``<out>/<device>.csv``; returns both paths."""
    cfg = result.config
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    md_path, csv_path = out / f"{cfg.device}.md", out / f"{cfg.device}.csv"
    tmp = csv_path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(csv_rows(result))
    tmp.replace(csv_path)
    tmp = md_path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(_markdown(result)) + "\n", encoding="utf-8")
    tmp.replace(md_path)
    return md_path, csv_path


def _markdown(result: BenchResult) -> list[str]:
    cfg = result.config
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"# spips-bench performance: {cfg.device}", "",
             f"Regenerate with: `{cfg.command or 'spips-bench bench'}`", "",
             f"Written {when}; the benchmark took {result.seconds:.0f} s. Throughputs are medians of "
             f"{cfg.repeats} timed calls after one warm-up, batch {cfg.batch_size}, in one process; "
             "ratios are ours / peer throughput (above 1: ours is faster). Peak memory is the growth of the "
             "resident set during the warm-up call, sampled every millisecond (CPU; memory the allocator kept "
             "from earlier calls is not counted again, so treat small values as approximate), or of "
             "allocated CUDA memory, in MiB.", ""]
    if cfg.quick:
        lines += ["**Quick smoke run: tiny sizes and one repeat; the numbers are not meaningful.**", ""]
    lines += ["## Machine", ""]
    info = machine_info(cfg.threads, result.system.get("load_start"))
    lines += _table(["item", "value"], [[k, v] for k, v in info.items()])
    lines += ["## Targets", ""]
    lines += _table(["target", "measured", "threshold", "status", "detail"],
                    [[t["target"], _f(t["measured"], 2), t["threshold"], f"**{t['status']}**", t["detail"]]
                     for t in result.targets])
    zoo: dict[tuple[str, int], dict[str, Any]] = {}
    for r in result.rows:
        if r.section == "zoo":
            zoo.setdefault((r.case, r.size), {})[r.unit] = r
    lines += ["## Zoo metrics", "",
              "Card options, as `spips-bench run` uses them; the 2AFC path is the runner's `score_batch` "
              "(three feature passes per triplet where the metric has the fast path).", ""]
    lines += _table(["metric", "size px", "pairs/s", "triplets/s", "peak MiB (pairs)", "note"],
                    [[name, size, _f(u["pairs/s"].ours_per_s), _f(u["triplets/s"].ours_per_s),
                      _f(u["pairs/s"].ours_peak_mib), u["pairs/s"].note or ""]
                     for (name, size), u in zoo.items() if "pairs/s" in u and "triplets/s" in u])
    for section, title, intro in (
        ("peers", "Against reference packages",
         "Same tensors, same weights, same colour path (the `path` column); ours is configured as in "
         "brackets."),
        ("reference", "Against the unoptimised reference",
         "SSIM/MS-SSIM (RGB) against a float64 implementation with a full 2-D window per moment (the "
         "reference is timed once)."),
    ):
        rows = [r for r in result.rows if r.section == section]
        if not rows:
            continue
        lines += [f"## {title}", "", intro, ""]
        lines += _table(["case", "size px", "unit", "ours", "peer", "peer", "ratio", "max abs diff",
                         "ours MiB", "peer MiB", "path"],
                        [[r.case, r.size, r.unit, _f(r.ours_per_s), r.peer, _f(r.peer_per_s),
                          _f(r.ratio, 2), _f(r.max_abs_diff, 3), _f(r.ours_peak_mib), _f(r.peer_peak_mib),
                          r.note] for r in rows])
    lines += _system_md(result)
    proj = projection(result)
    if proj:
        total = sum(p["seconds"] for p in proj)
        lines += ["## Full BAPPS val: CPU projection (not a GPU measurement)", "",
                  f"No GPU was measured here. Projected from this machine's measured {proj[0]['size']}-px "
                  f"throughput ({cfg.threads} threads): {BAPPS_VAL_TRIPLETS:,} 2AFC triplets at the triplet "
                  f"rate plus {BAPPS_VAL_JND_PAIRS:,} JND pairs at the pair rate, compute only (decoding "
                  "runs in parallel in the runner's workers). It is **a CPU projection, not an H100 "
                  "measurement**; rerun `spips-bench bench --device cuda` on a GPU for that.", ""]
        lines += _table(["metric", "projected seconds", "projected hours"],
                        [[p["metric"], _f(p["seconds"], 0), _f(p["seconds"] / 3600, 2)] for p in proj]
                        + [["**all of the above**", _f(total, 0), _f(total / 3600, 2)]])
    if result.profiles:
        lines += ["## Where the other side is faster: profiles", "",
                  "torch.profiler, one call of the slower side, operators by self time.", ""]
        for label, table in result.profiles.items():
            lines += [f"### {label}", "", "```", table.rstrip(), "```", ""]
    if result.skipped:
        lines += ["## Not measured", ""]
        lines += [f"- {k}: {v}" for k, v in result.skipped.items()] + [""]
    return lines


def _system_md(result: BenchResult) -> list[str]:
    lines: list[str] = []
    bb = result.system.get("backbones")
    if bb:
        lines += ["## Backbone efficiency", "",
                  f"{bb['matmul_n']} x {bb['matmul_n']} float32 matmul: "
                  f"**{bb['matmul_gflops']:.1f} GFLOP/s**. Convolution FLOPs "
                  "counted by `FlopCounterMode` (2 per multiply-add), divided by the whole trunk's time "
                  "(conservative: ReLU, pooling and blur are in the time) and by the time inside "
                  "`aten::convolution` (profiler).", ""]
        lines += _table(["trunk", "GFLOP per call", "trunk ms", "GFLOP/s (trunk time)", "GFLOP/s (conv only)",
                         "fraction of matmul"],
                        [[n, _f(t["gflop_per_call"], 3), _f(t["trunk_s"] * 1e3), _f(t["gflops_trunk"]),
                          _f(t["gflops_conv_only"]), _f(t["gflops_trunk"] / bb["matmul_gflops"], 2)]
                         for n, t in bb["trunks"].items()])
    run = result.system.get("run")
    if run:
        lines += ["## `spips-bench run` end to end", "",
                  "ST-LPIPS on generated 64-px PNG triplets in the BAPPS layout, as a subprocess "
                  f"(`spips-bench {run['10N']['command']}` on a set SET of N or 10 N triplets, "
                  f"`OMP_NUM_THREADS={result.config.threads}`); "
                  "throughput from its run.json (scoring, decoding and store writes; model construction "
                  "excluded), peak RSS (`ru_maxrss`) of the run process. pyiqa's ST-LPIPS runs on the same 10 N "
                  "triplets decoded beforehand, timed once before and once after the run "
                  f"({', '.join(f'{v:.1f}' for v in run.get('pyiqa_passes', []))} triplets/s); the faster "
                  "pass counts.", ""]
        lines += _table(["run", "triplets", "seconds", "triplets/s", "peak RSS MiB"],
                        [[k, run[k]["triplets"], _f(run[k]["seconds"], 2), _f(run[k]["triplets_per_s"]),
                          _f(run[k]["peak_rss_mib"], 0)] for k in ("N", "10N")])
        lines += [f"{bench_plan().run_peer} in memory: {_f(run['pyiqa_triplets_per_s'])} triplets/s; ratio "
                  f"{_f(result.system['run_vs_pyiqa'], 2)}; max |score difference| "
                  f"{_f(run['max_abs_diff'], 3)}; peak RSS 10N / N: "
                  f"{_f(result.system['run_memory_ratio'], 3)}.",
                  ""]
    return lines
