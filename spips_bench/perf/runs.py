"""The ``spips-bench run`` cases of the benchmark: what the shared trunk and the decoded-patch cache save.

:func:`write_run_set` writes a generated set in the BAPPS layout and :func:`run_subprocess` runs
``spips-bench run`` on it as a subprocess. Each case is a set of such runs on the same generated set,
with the same options, threads and batch size, one after another:

1. the plan's ``cache_metric`` (PSNR) with an empty patch cache folder (the first run: it decodes every
   image and writes the cache), then again on the same data (the second run: it reads the cache); then
   with ``--no-cache`` (every image decoded from its file, as every run did before the cache); then the
   first and second run again in another empty folder. Each ratio uses the mean of the two passes;
2. all of the plan's ``shared_trunk`` metrics in one run, then each of them alone, then all of them
   together again (the mean of the two together runs is compared with the sum alone: the two bracket
   the others in time, so a load that rises or falls steadily on a shared machine favours neither side),
   every one of these with the cache that step 1 warmed, so that the comparison is of the trunk passes.

:func:`spips_bench.perf.model.run_case_ratios` turns them into the targets' ratios; the per-image data
time of the cache runs feeds the full-val projection (:func:`spips_bench.perf.model.full_val_projection`).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from spips_bench.perf.common import BenchConfig, bench_plan
from spips_bench.perf.model import data_seconds, mean_run, run_case_ratios


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


#: Side (px) at which BAPPS stores its patches; every run loads them at 64 px (``--load-size``).
BAPPS_STORED_SIDE = 256
#: Triplets encoded as new PNG files; the rest of a larger set are byte copies of them (see below).
_DISTINCT = 250


def write_run_set(root: Path, n: int, *, seed: int = 0, stored: int = 64) -> Path:
    """Write ``n`` 2AFC triplets in the BAPPS layout under ``root/2afc/val/traditional``, as PNG files of
    ``stored`` x ``stored`` px (64: the size every run scores at; :data:`BAPPS_STORED_SIDE`: the size
    BAPPS stores, which a run decodes and resizes to 64 px).

    The patches are made at 64 px (:func:`~spips_bench.perf.common.make_images`) and, for a larger
    ``stored``, upsampled bilinearly to it. At 64 px every triplet is its own image; at a larger side the
    first :data:`_DISTINCT` triplets are encoded and the others are byte copies of them, each its own
    file (decoding, resizing and caching cost the same per file; encoding thousands of large PNG files
    would take the benchmark half a minute). The other val category folders are created empty (the
    dataset check looks for them); judgments are fractions of 5 raters drawn at random. Returns ``root``.
    """
    import shutil

    import numpy as np
    import torch
    from PIL import Image

    from spips_bench.perf.common import make_images

    base = root / "2afc" / "val"
    for cat in ("traditional", "cnn", "superres", "deblur", "color", "frameinterp"):
        (base / cat).mkdir(parents=True, exist_ok=True)
    folder = base / "traditional"
    for part in ("ref", "p0", "p1", "judge"):
        (folder / part).mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    distinct = n if stored == 64 else min(n, _DISTINCT)
    chunk = 256
    for start in range(0, distinct, chunk):
        k = min(chunk, distinct - start)
        imgs = make_images(64, k, seed=seed * 1_000_003 + start)
        for part, t in zip(("ref", "p0", "p1"), imgs, strict=True):
            if stored != 64:
                t = torch.nn.functional.interpolate(t, size=(stored, stored), mode="bilinear",
                                                    align_corners=False).clamp(0, 1)
            arr = (t.permute(0, 2, 3, 1).numpy() * 255.0 + 0.5).astype(np.uint8)
            for i in range(k):
                Image.fromarray(arr[i], "RGB").save(folder / part / f"{start + i:06d}.png", compress_level=1)
    for i in range(distinct, n):
        for part in ("ref", "p0", "p1"):
            shutil.copyfile(folder / part / f"{i % distinct:06d}.png", folder / part / f"{i:06d}.png")
    for i in range(n):
        value = np.array([rng.integers(0, 6) / 5.0], dtype=np.float32)
        np.save(folder / "judge" / f"{i:06d}.npy", value, allow_pickle=False)
    return root


_RSS_WRAPPER = """\
import subprocess, sys
rc = subprocess.call(sys.argv[2:])
try:
    import resource
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
except ImportError:  # no resource module: no peak to report
    peak = -1
with open(sys.argv[1], "w", encoding="ascii") as fh:
    fh.write(str(peak))
sys.exit(rc)
"""


def run_subprocess(root: Path, out: Path, config: BenchConfig, *, cache: Path,
                   metrics: tuple[str, ...] | list[str] | None = None, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run ``spips-bench run --metrics METRICS`` (default the plan's
    :attr:`~spips_bench.perf.common.BenchPlan.run_metric`) on ``root``, its patch cache under ``cache``
    (``SPIPS_BENCH_CACHE``), with the options ``extra`` added.

    Returns what its run.json says (``seconds`` = ``duration_s``, throughput, ``metric_seconds``,
    ``patch_cache_seconds``), the process's wall time ``wall_s`` (start to exit: interpreter start,
    imports, metric construction and report writing included) and its peak RSS (``ru_maxrss`` of the
    largest of its processes, DataLoader workers included).

    Raises:
        RuntimeError: the run failed (its stderr is in the message).
    """
    names = list(metrics) if metrics else [bench_plan().run_metric]
    cmd = [sys.executable, "-m", "spips_bench", "run", "--metrics", ",".join(names), "--dataset", "bapps",
           "--root", str(root), "--categories", "traditional", "--kinds", "2afc", "--out", str(out),
           "--device", config.device, "--batch-size", str(config.batch_size), "--workers",
           str(config.run_workers), "--bootstrap", "100", "--offline", "--no-progress", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": str(config.threads), "MKL_NUM_THREADS": str(config.threads),
           "SPIPS_BENCH_OFFLINE": "1", "SPIPS_BENCH_CACHE": str(cache)}
    rss_file = out.parent / f"{out.name}.maxrss"
    # A child forked from this (large) process inherits its peak RSS in ru_maxrss, so the run is started
    # from a small wrapper process that reports the peak of its own children only.
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", _RSS_WRAPPER, str(rss_file), *cmd], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out_bytes, err_bytes = proc.communicate()
    wall = time.perf_counter() - t0
    try:
        maxrss = int(rss_file.read_text(encoding="ascii")) * (1 if sys.platform == "darwin" else 1024)
    except (OSError, ValueError):
        maxrss = -1
    stdout, stderr = out_bytes.decode(errors="replace"), err_bytes.decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed with exit code {proc.returncode}:\n{stderr[-2000:]}"
                           f"{stdout[-500:]}")
    record = json.loads((out / "run.json").read_text(encoding="utf-8"))
    tp = record.get("throughput", {})
    return {"triplets": int(tp.get("items_scored", 0)), "seconds": float(record.get("duration_s", math.nan)),
            "triplets_per_s": float(tp.get("items_per_second") or math.nan),
            "peak_rss_mib": maxrss / 2**20 if maxrss > 0 else math.nan, "wall_s": wall,
            "metric_seconds": {k: float(v) for k, v in record.get("metric_seconds", {}).items()},
            "patch_cache_seconds": float(tp.get("patch_cache_seconds", 0.0)),
            "patch_cache": dict(tp.get("patch_cache", {})),
            "command": " ".join(cmd[3:]).replace(str(out), "OUT").replace(str(root), "SET")}



def run_cases(root: Path, tmp: Path, config: BenchConfig) -> dict[str, Any]:
    """Run the cases on the set at ``root`` (2AFC triplets of :func:`write_run_set`; the benchmark writes
    them at :data:`BAPPS_STORED_SIDE`, as BAPPS stores them), with run folders and the patch cache under
    ``tmp``.

    Returns ``{"cache": {"cold", "warm", "no-cache"}, "alone": {metric: run}, "together": run,
    "order": [(label, run)], "ratios": ..., "data_s_per_image": {"cold", "warm", "decode"}, "process_s"}``
    where each run is what :func:`run_subprocess` returns (``cold``, ``warm``
    and ``together``: the mean of two, :func:`~spips_bench.perf.model.mean_run`) and ``order`` lists every
    run as it ran; ``process_s`` is the median time of the cache metric's runs outside ``duration_s``.

    Raises:
        RuntimeError: a run failed, or the plan names no metric for a case.
    """
    plan = bench_plan()
    if not plan.cache_metric or len(plan.shared_trunk) < 2:
        raise RuntimeError("spips_bench/perf/targets.toml: run_cases needs a cache_metric and at least two "
                           "shared_trunk metrics; reinstall spips-bench.")
    cheap = (plan.cache_metric,)
    order: list[tuple[str, dict[str, Any]]] = []  # every run, in the order it ran

    def run(label: str, folder: str, cache: str, metrics: tuple[str, ...],
            extra: tuple[str, ...] = ()) -> dict[str, Any]:
        _log(f"bench: run case: {label}")
        result = run_subprocess(root, tmp / folder, config, cache=tmp / cache, metrics=metrics, extra=extra)
        order.append((label, result))
        return result

    metric = plan.cache_metric
    cold = [run(f"{metric}, cold cache (first run)", "case-cold-1", "cache-1", cheap)]
    warm = [run(f"{metric}, warm cache (second run)", "case-warm-1", "cache-1", cheap)]
    nocache = run(f"{metric}, --no-cache", "case-no-cache", "cache-1", cheap, ("--no-cache",))
    cold.append(run(f"{metric}, cold cache (first run, pass 2)", "case-cold-2", "cache-2", cheap))
    warm.append(run(f"{metric}, warm cache (second run, pass 2)", "case-warm-2", "cache-2", cheap))
    group = tuple(plan.shared_trunk)
    label = ", ".join(group) + " together"
    together = [run(f"{label} (warm cache)", "case-together-1", "cache-1", group)]
    alone = {name: run(f"{name} alone (warm cache)", f"case-alone-{i}", "cache-1", (name,))
             for i, name in enumerate(group)}
    together.append(run(f"{label} again (warm cache)", "case-together-2", "cache-1", group))
    runs = {"cold": mean_run(cold), "warm": mean_run(warm), "no-cache": nocache}
    images = 3 * int(runs["cold"]["triplets"])  # ref, p0 and p1 of every 2AFC triplet
    per_image = {label: max(data_seconds(r), 0.0) / images if images else float("nan")
                 for label, r in (("cold", runs["cold"]), ("warm", runs["warm"]), ("decode", runs["no-cache"]))}
    overheads = sorted(r["wall_s"] - r["seconds"] for r in [*cold, *warm, nocache])
    both = mean_run(together)
    return {"cache": runs, "alone": alone, "together": both, "order": order,
            "ratios": run_case_ratios(runs["cold"], runs["warm"], list(alone.values()), both),
            "data_s_per_image": per_image, "process_s": overheads[len(overheads) // 2],
            "metrics": list(plan.shared_trunk), "cache_metric": plan.cache_metric}
