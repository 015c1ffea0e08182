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
from spips_bench.perf.model import BAPPS_VAL_JND_PAIRS, BAPPS_VAL_TRIPLETS, data_seconds
from spips_bench.report.grid import markdown_table

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


def projection(result: BenchResult) -> dict[str, Any] | None:
    """The full-BAPPS-val projection of :func:`spips_bench.perf.metrics.full_val` (``None``: no offline
    metric measured)."""
    from spips_bench.perf.metrics import full_val

    return full_val(result)


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
    bw = result.system.get("bandwidth")
    if bw:
        rows.append({"section": "bandwidth", "case": "tensor copy", "unit": "GB/s", "ours": bw["gb_s"],
                     "note": f"{bw['bytes'] // 2**20} MiB float32, read + write counted"})
        for m in bw["metrics"].values():
            rows.append({"section": "bandwidth", "case": m["case"], "size": m["size"], "unit": "fraction",
                         "ours": m["fraction_compulsory"], "peer": "streaming model",
                         "peer_value": m["fraction_streaming"],
                         "note": f"{m['pairs_per_s']:.1f} pairs/s; {m['bytes_compulsory']} B/pair compulsory, "
                                 f"{m['bytes_streaming']} B/pair streaming; {m['scales']} scale(s)"})
    cases = result.system.get("run_cases")
    if cases:
        for label, r in cases["order"]:
            rows.append({"section": "run-case", "case": label, "size": 64, "batch": result.config.batch_size,
                         "unit": "s", "ours": r["seconds"], "peer": "process wall s", "peer_value": r["wall_s"],
                         "note": f"{r['triplets']} triplets; patch_cache_seconds {r['patch_cache_seconds']:.3f}; "
                                 f"data s {data_seconds(r):.3f}"})
    proj = projection(result)
    if proj:
        note = "full BAPPS val on this device" + ("; compute only" if proj["compute_only"] else "")
        for name, secs in proj["per_metric"].items():
            rows.append({"section": "projection", "case": name, "size": proj["size"], "unit": "s", "ours": secs,
                         "note": "compute alone; " + note})
        for group, secs in proj["per_group"].items():
            rows.append({"section": "projection", "case": "+".join(group), "size": proj["size"], "unit": "s",
                         "ours": secs, "note": "compute together (shared trunk); " + note})
        rows.append({"section": "projection", "case": "run --metrics all (offline metrics)", "size": proj["size"],
                     "unit": "s", "ours": proj["after_s"], "peer": "each metric alone, decoding every image",
                     "peer_value": proj["before_s"], "ratio": proj["ratio"],
                     "note": f"shared trunks, warm cache; cold cache {proj['after_cold_s']:.0f} s; " + note})
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
    shared: dict[tuple[str, int], dict[str, Any]] = {}
    for r in result.rows:
        if r.section == "shared":
            shared.setdefault((r.case, r.size), {})[r.unit] = r
    if shared:
        lines += ["### Metrics on one trunk, scored together", "",
                  "Each group of measured metrics with equal trunk keys (same network, same weights), scored "
                  "as `run` scores them (`score_shared`: one trunk pass per image, then each metric's own "
                  "features and comparison); 2AFC triplets/s and JND pairs/s of the whole group.", ""]
        lines += _table(["metrics", "size px", "JND pairs/s", "triplets/s"],
                        [[name.replace("+", ", "), size, _f(u["pairs/s"].ours_per_s), _f(u["triplets/s"].ours_per_s)]
                         for (name, size), u in shared.items() if "pairs/s" in u and "triplets/s" in u])
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
    lines += _bandwidth_md(result)
    lines += _run_cases_md(result)
    lines += _projection_md(result)
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


def _bandwidth_md(result: BenchResult) -> list[str]:
    bw = result.system.get("bandwidth")
    if not bw:
        return []
    lines = ["## Memory bandwidth and SSIM", "",
             f"Copy of a {bw['bytes'] // 2**20} MiB float32 tensor into another (`dst.copy_(src)`, median of "
             f"{len(bw['runs_s'])} after one warm-up): {bw['seconds'] * 1e3:.1f} ms, bandwidth = 2 x bytes / "
             f"time (each byte read once and written once) = **{bw['gb_s']:.1f} GB/s**.", "",
             "Bytes per pair of `C = 3` planes of `s x s` float32 pixels (4 bytes), 11-px window, valid size "
             "`s' = s - 10`, per scale of MS-SSIM (side halved each scale):", "",
             "- *compulsory*: the two images read once, `2 C s^2 x 4`; what memory must deliver when the moment "
             "maps stay in the processor's cache (the zoo works through the planes in cache-sized chunks);",
             "- *streaming*: every pass through memory, `C x 4 x 5 (s^2 + 2 s s' + 2 s'^2)` per scale (the five "
             "moment inputs read, the horizontal pass's five `s x s'` maps written and read, the vertical "
             "pass's five `s' x s'` maps written and read), plus `C x 4 x 2 (s^2 + (s/2)^2)` per 2x2 "
             "average between scales.", "",
             "fraction = bytes per pair x pairs/s / bandwidth; the pairs/s are those of the rows against the "
             "unoptimised reference (RGB: the work piq does). A streaming fraction above 1 means the chunks do "
             "stay in cache.", ""]
    lines += _table(["case", "size px", "scales", "pairs/s", "compulsory B/pair", "fraction (compulsory)",
                     "streaming B/pair", "fraction (streaming)"],
                    [[m["case"], m["size"], m["scales"], _f(m["pairs_per_s"]), m["bytes_compulsory"],
                      _f(m["fraction_compulsory"], 3), m["bytes_streaming"], _f(m["fraction_streaming"], 3)]
                     for m in bw["metrics"].values()])
    return lines


def _run_cases_md(result: BenchResult) -> list[str]:
    cases = result.system.get("run_cases")
    if not cases:
        return []
    r = cases["ratios"]
    metric = cases["cache_metric"]
    cold = cases["cache"]["cold"]
    lines = ["## `spips-bench run` cases: shared trunk and decoded-patch cache", "",
             f"`spips-bench {cold['command']}` with `--metrics` as in the table, in the table's order, on one "
             f"set of 10 N triplets ({cold['triplets']} triplets, stored as {cases.get('stored_side', 64)}-px PNG files"
             f"{' as BAPPS stores its patches' if cases.get('stored_side', 64) != 64 else ''}; every run "
             f"resizes them to 64 px), same options, `OMP_NUM_THREADS={result.config.threads}`, "
             "the patch cache in a new folder (`SPIPS_BENCH_CACHE`). *inside* is run.json `duration_s` "
             "(scoring, data, store writes; not the process start, metric construction or report writing); "
             "*wall* is the process from start to exit; *data* is `duration_s` minus the metrics' own "
             "seconds (`metric_seconds`): decoding, building, opening or reading the cache, batching and "
             "store writes; *cache s* is run.json `patch_cache_seconds` (building or opening the cache).", ""]
    rows = [[label, run] for label, run in cases["order"]]
    lines += _table(["run", "inside s", "wall s", "data s", "cache s", "cache state"],
                    [[label, _f(x["seconds"], 3), _f(x["wall_s"], 2), _f(data_seconds(x), 3),
                      _f(x["patch_cache_seconds"], 3), ", ".join(f"{k}: {v}" for k, v in x["patch_cache"].items())
                      or "none"] for label, x in rows])
    alone = sum(x["seconds"] for x in cases["alone"].values())
    lines += [f"- Shared trunk ({', '.join(cases['metrics'])}): together (mean of the two runs) / sum alone = "
              f"{cases['together']['seconds']:.2f} / {alone:.2f} s = **{r['shared-trunk']['ratio']:.3f}x** inside "
              f"the run (the target's measure); {r['shared-trunk']['wall_ratio']:.3f}x in process wall time.",
              f"- Decoding, second run / first run (means of the two passes): data time "
              f"**{r['cache-decode']['ratio']:.3f}x** (the target's "
              f"measure: everything outside the metric, so also reading the cached patches in the second run); "
              f"`patch_cache_seconds` alone {r['cache-decode']['patch_cache_ratio']:.3f}x.",
              f"- {metric} end to end, first run / second run (means): **{r['cache-end-to-end']['ratio']:.2f}x** "
              "in process "
              f"wall time (the target's measure); {r['cache-end-to-end']['inside_ratio']:.2f}x inside the run. "
              f"A run process spends about {cases['process_s']:.2f} s outside `duration_s` whatever the data "
              f"(median of the five {metric} runs above).", ""]
    proj = projection(result)
    if proj and metric in proj["per_metric"]:
        per_image, compute = cases["data_s_per_image"], proj["per_metric"][metric]
        first = cases["process_s"] + proj["images"] * per_image["cold"] + compute
        second = cases["process_s"] + proj["images"] * per_image["warm"] + compute
        lines += [f"On the full BAPPS val ({proj['images']:,} images) the same measurements give {metric} "
                  f"{first:.0f} s on the first run and {second:.0f} s on the second: "
                  f"{first / second:.1f}x (a projection, not a measurement).", ""]
    return lines


def _projection_md(result: BenchResult) -> list[str]:
    proj = projection(result)
    if not proj:
        return []
    cfg = result.config
    cases: dict[str, Any] = result.system.get("run_cases") or {}
    per_image = cases.get("data_s_per_image")
    lines = [f"## Full BAPPS val: projection on this machine ({cfg.device})", "",
             f"From this benchmark's own measurements at {proj['size']} px, {cfg.threads} threads: "
             f"{BAPPS_VAL_TRIPLETS:,} 2AFC triplets at the triplet rate plus {BAPPS_VAL_JND_PAIRS:,} JND pairs at "
             f"the pair rate per metric (section *Zoo metrics*), for every metric whose weights are here "
             f"(offline); {proj['images']:,} images of data time."]
    if per_image:
        lines += [f"Data time per image from the `{cases['cache_metric']}` runs above (data s / "
                  f"{3 * cases['cache']['cold']['triplets']} images): {per_image['decode'] * 1e3:.3f} ms decoding "
                  f"every file (`--no-cache`), {per_image['cold'] * 1e3:.3f} ms on a cold cache, "
                  f"{per_image['warm'] * 1e3:.3f} ms on a warm one; {cases['process_s']:.2f} s per run process. "
                  "Workers 0: data and compute add up (with DataLoader workers they overlap)."]
    else:
        lines += ["**The `run` cases were not measured (`--no-system`): compute only, no data time.**"]
    lines += ["", "- *before*: each metric in its own `run`, decoding every image (sum of: compute alone + "
              "images x decode time + one process each);",
              "- *after*: one `run --metrics all`: metrics on one trunk scored together (section *Metrics on one "
              "trunk*), the others alone, data at the warm-cache time, one process;",
              "- *one run, no sharing*: one `run --metrics all` without shared trunks or patch cache (compute "
              "alone + every image decoded once + one process): what the trunk sharing alone saves.", ""]
    lines += _table(["metric(s)", "compute s", "hours"],
                    [[m, _f(sec, 0), _f(sec / 3600, 2)] for m, sec in proj["per_metric"].items()]
                    + [[f"{', '.join(g)} together", _f(sec, 0), _f(sec / 3600, 2)]
                       for g, sec in proj["per_group"].items()])
    lines += _table(["figure", "seconds", "hours"],
                    [["before: every metric alone, decode every run", _f(proj["before_s"], 0),
                      _f(proj["before_s"] / 3600, 2)],
                     ["**after: one `run --metrics all`, warm cache**", _f(proj["after_s"], 0),
                      _f(proj["after_s"] / 3600, 2)],
                     ["after, on a cold cache (first run ever)", _f(proj["after_cold_s"], 0),
                      _f(proj["after_cold_s"] / 3600, 2)],
                     ["**after / before**", _f(proj["ratio"], 3), ""],
                     ["one run, no sharing, no cache", _f(proj["one_run_s"], 0), _f(proj["one_run_s"] / 3600, 2)],
                     ["after / one run, no sharing", _f(proj["one_run_ratio"], 3), ""]])
    if proj["left_out"]:
        lines += [f"Left out (weights absent here, measured with random trunks): {', '.join(proj['left_out'])}.",
                  ""]
    lines += ["`spips-bench bench --device cuda` on a GPU machine writes the same projection for that GPU "
              "(cuda.md)." if cfg.device == "cpu" else "", ""]
    return lines
