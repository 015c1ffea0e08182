"""The system part of ``spips-bench bench``: how close the backbones come to the machine's peak, and how
``spips-bench run`` behaves end to end.

* GFLOP/s of the backbone convolutions at the BAPPS size (convolution FLOPs counted by
  ``torch.utils.flop_counter.FlopCounterMode``, one multiply-add = 2 FLOPs) against a 2048 x 2048 float32
  matmul measured in the same process;
* ``spips-bench run`` with the plan's ``run_metric`` (ST-LPIPS), as a subprocess, on PNG files in the
  BAPPS layout (a generated set of N triplets and one of 10 N): triplets per second from its ``run.json``
  and peak resident memory from its ``ru_maxrss`` (read by a small wrapper process); against that
  metric's first peer (pyiqa's ST-LPIPS) on the same triplets already decoded in memory.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from spips_bench.perf.common import BenchConfig, BenchResult, bench_plan, create_for_bench, measure


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def matmul_gflops(*, repeats: int, device: str, n: int = 2048) -> float:
    """Achieved GFLOP/s of an ``n x n`` float32 matrix product (``2 n^3`` FLOPs)."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device)
    b = torch.randn(n, n, generator=gen).to(device)
    t = measure(lambda: a @ b, repeats=repeats, device=device)
    return 2.0 * n**3 / t.median_s / 1e9


def conv_flops(module: torch.nn.Module, x: torch.Tensor) -> int:
    """FLOPs of the convolutions of one ``module(x)`` call (2 per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        module(x)
    counts = counter.get_flop_counts().get("Global", {})
    return int(sum(v for op, v in counts.items() if "convolution" in str(op)))


def _conv_seconds(module: torch.nn.Module, x: torch.Tensor, device: str, calls: int = 3) -> float:
    """Seconds per call spent inside ``aten::convolution`` (profiler, inclusive time)."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with torch.inference_mode():
        module(x)
        with profile(activities=acts) as prof:
            for _ in range(calls):
                module(x)
            if device == "cuda":
                torch.cuda.synchronize()
    for ev in prof.key_averages():
        if ev.key == "aten::convolution":
            us = ev.device_time_total if device == "cuda" else ev.cpu_time_total
            return float(us) / 1e6 / calls
    return math.nan


def backbone_efficiency(config: BenchConfig, size: int) -> dict[str, Any]:
    """Convolution GFLOP/s of the AlexNet trunks at ``size`` px, batch ``config.batch_size``."""
    from spips_bench.zoo.backbones import build_trunk

    # a smaller product in a smoke run: it only has to work there
    n = 512 if config.quick else 2048
    peak = matmul_gflops(repeats=config.repeats, device=config.device, n=n)
    x = torch.rand(config.batch_size, 3, size, size).to(config.device)
    out: dict[str, Any] = {"matmul_gflops": peak, "matmul_n": n, "trunks": {}}
    for name in ("alex-st", "alex"):
        trunk = build_trunk(name, pretrained=False).to(config.device)
        flops = conv_flops(trunk, x)
        t = measure(functools.partial(trunk, x), repeats=config.repeats, device=config.device)
        conv_s = _conv_seconds(trunk, x, config.device)
        out["trunks"][name] = {"gflop_per_call": flops / 1e9, "trunk_s": t.median_s,
                               "gflops_trunk": flops / t.median_s / 1e9,
                               "gflops_conv_only": flops / conv_s / 1e9 if conv_s > 0 else math.nan}
    return out


# -- spips-bench run end to end ----------------------------------------------------------------------


def write_run_set(root: Path, n: int, *, seed: int = 0) -> Path:
    """Write ``n`` 64-px 2AFC triplets in the BAPPS layout under ``root/2afc/val/traditional``.

    The other val category folders are created empty (the dataset check looks for them); judgments are
    fractions of 5 raters drawn at random. Returns ``root``.
    """
    import numpy as np
    from PIL import Image

    from spips_bench.perf.common import make_images

    base = root / "2afc" / "val"
    for cat in ("traditional", "cnn", "superres", "deblur", "color", "frameinterp"):
        (base / cat).mkdir(parents=True, exist_ok=True)
    folder = base / "traditional"
    for part in ("ref", "p0", "p1", "judge"):
        (folder / part).mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    chunk = 256
    for start in range(0, n, chunk):
        k = min(chunk, n - start)
        imgs = make_images(64, k, seed=seed * 1_000_003 + start)
        for part, t in zip(("ref", "p0", "p1"), imgs, strict=True):
            arr = (t.permute(0, 2, 3, 1).numpy() * 255.0 + 0.5).astype(np.uint8)
            for i in range(k):
                Image.fromarray(arr[i], "RGB").save(folder / part / f"{start + i:06d}.png", compress_level=1)
        for i in range(k):
            value = np.array([rng.integers(0, 6) / 5.0], dtype=np.float32)
            np.save(folder / "judge" / f"{start + i:06d}.npy", value, allow_pickle=False)
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


def run_subprocess(root: Path, out: Path, config: BenchConfig) -> dict[str, Any]:
    """Run ``spips-bench run --metrics RUN_METRIC`` (:attr:`~spips_bench.perf.common.BenchPlan.run_metric`)
    on ``root``; throughput and peak RSS of that process (``ru_maxrss`` of the largest of its processes,
    DataLoader workers included)."""
    cmd = [sys.executable, "-m", "spips_bench", "run", "--metrics", bench_plan().run_metric, "--dataset", "bapps",
           "--root", str(root), "--categories", "traditional", "--kinds", "2afc", "--out", str(out),
           "--device", config.device, "--batch-size", str(config.batch_size), "--workers",
           str(config.run_workers), "--bootstrap", "100", "--offline", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": str(config.threads), "MKL_NUM_THREADS": str(config.threads),
           "SPIPS_BENCH_OFFLINE": "1"}
    rss_file = out.parent / f"{out.name}.maxrss"
    # A child forked from this (large) process inherits its peak RSS in ru_maxrss, so the run is started
    # from a small wrapper process that reports the peak of its own children only.
    proc = subprocess.Popen([sys.executable, "-c", _RSS_WRAPPER, str(rss_file), *cmd], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out_bytes, err_bytes = proc.communicate()
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
            "peak_rss_mib": maxrss / 2**20 if maxrss > 0 else math.nan,
            "command": " ".join(cmd[3:]).replace(str(out), "OUT").replace(str(root), "SET")}


def pyiqa_in_memory(root: Path, config: BenchConfig) -> tuple[float, dict[str, tuple[float, float]]]:
    """Triplets/s of the run metric's peer (pyiqa's ST-LPIPS) on the triplets of ``root``, decoded
    beforehand; and its scores.

    Raises:
        WeightsUnavailableError: the checkpoint both sides read is not installed.
    """
    from spips_bench.data.bapps import TwoAFCDataset, collate
    from spips_bench.perf.peers import make_peer

    ours, _ = create_for_bench(bench_plan().run_metric)
    peer = make_peer(bench_plan().run_peer, ours, config.device)
    del ours
    ds = TwoAFCDataset(root, "val", "traditional", 64)
    bs = config.batch_size
    batches = [collate([ds[i] for i in range(s, min(s + bs, len(ds)))]) for s in range(0, len(ds), bs)]
    batches = [{k: (v.to(config.device) if isinstance(v, torch.Tensor) else v) for k, v in b.items()}
               for b in batches]
    scores: dict[str, tuple[float, float]] = {}
    with torch.inference_mode():
        peer.fn(batches[0]["p0"], batches[0]["ref"])  # warm-up: first-call allocations and kernel choice
        sync = torch.cuda.synchronize if config.device == "cuda" else (lambda: None)
        sync()
        t0 = time.perf_counter()
        for b in batches:
            d0, d1 = peer.fn(b["p0"], b["ref"]), peer.fn(b["p1"], b["ref"])
            for name, a, c in zip(b["name"], d0.tolist(), d1.tolist(), strict=True):
                scores[name] = (a, c)
        sync()
        seconds = time.perf_counter() - t0
    return len(ds) / seconds, scores


def run_end_to_end(config: BenchConfig) -> dict[str, Any]:
    """``run`` at N and 10 N triplets against pyiqa in memory at 10 N; see the module docstring.

    pyiqa is timed right before and right after the 10 N run and its faster pass is kept, so that a
    change of load on a shared machine cannot favour ``run``.
    """
    from spips_bench.run.store import ScoreStore

    n = config.run_samples
    tmp = Path(tempfile.mkdtemp(prefix="spips-bench-bench-"))
    try:
        results: dict[str, Any] = {}
        small = write_run_set(tmp / "setN", n, seed=n)
        _log(f"bench: spips-bench run on {n} triplets")
        results["N"] = run_subprocess(small, tmp / "runN", config)
        big = write_run_set(tmp / "set10N", 10 * n, seed=10 * n)
        from spips_bench.perf.peers import PEERS

        label = bench_plan().run_peer
        _log(f"bench: {label} in memory on {10 * n} triplets, then spips-bench run on them, then the peer")
        with_peer = PEERS[label].package in config.peers
        rate_before, peer_scores = pyiqa_in_memory(big, config) if with_peer else (math.nan, {})
        results["10N"] = run_subprocess(big, tmp / "run10N", config)
        rate_after, _ = pyiqa_in_memory(big, config) if with_peer else (math.nan, {})
        stored = ScoreStore(tmp / "run10N").read_scores("2afc", "traditional", bench_plan().run_metric)
        diff = max((abs(a - b) for name, pair in peer_scores.items() for a, b in zip(pair, stored[name],
                                                                                      strict=True)),
                   default=math.nan)
        results["pyiqa_triplets_per_s"] = max(rate_before, rate_after) if with_peer else math.nan
        results["pyiqa_passes"] = [rate_before, rate_after] if with_peer else []
        results["max_abs_diff"] = diff
        return results
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def measure_system(config: BenchConfig, result: BenchResult) -> None:
    """Fill ``result.system`` (and its target inputs)."""
    small = 64 if 64 in config.sizes else min(config.sizes)
    _log(f"bench: backbone GFLOP/s at {small}px")
    eff = backbone_efficiency(config, small)
    eff["size"] = small
    result.system["backbones"] = eff
    st = eff["trunks"]["alex-st"]
    result.system["conv_fraction"] = st["gflops_trunk"] / eff["matmul_gflops"]
    result.system["conv_fraction_detail"] = (
        f"{st['gflops_trunk']:.1f} GFLOP/s (conv FLOPs / whole trunk time) vs {eff['matmul_n']}^2 matmul "
        f"{eff['matmul_gflops']:.1f} GFLOP/s; conv-only (profiler) {st['gflops_conv_only']:.1f} GFLOP/s")
    try:
        e2e = run_end_to_end(config)
    except (RuntimeError, OSError, ImportError) as exc:
        result.skipped["run end to end"] = f"{type(exc).__name__}: {exc}"
        return
    result.system["run"] = e2e
    big, small_run = e2e["10N"], e2e["N"]
    result.system["run_vs_pyiqa"] = big["triplets_per_s"] / e2e["pyiqa_triplets_per_s"]
    result.system["run_vs_pyiqa_detail"] = (
        f"run {big['triplets_per_s']:.1f} triplets/s from PNG ({big['triplets']} triplets) vs pyiqa "
        f"{e2e['pyiqa_triplets_per_s']:.1f} in memory; max |score difference| {e2e['max_abs_diff']:.2e}")
    result.system["run_memory_ratio"] = big["peak_rss_mib"] / small_run["peak_rss_mib"]
    result.system["run_memory_ratio_detail"] = (
        f"{small_run['peak_rss_mib']:.0f} MiB at {small_run['triplets']} triplets, "
        f"{big['peak_rss_mib']:.0f} MiB at {big['triplets']}")
