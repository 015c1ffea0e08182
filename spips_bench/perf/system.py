"""The system part of ``spips-bench bench``: how close the backbones come to the machine's peak, and how
``spips-bench run`` behaves end to end.

* GFLOP/s of the backbone convolutions at the BAPPS size (convolution FLOPs counted by
  ``torch.utils.flop_counter.FlopCounterMode``, one multiply-add = 2 FLOPs) against a 2048 x 2048 float32
  matmul measured in the same process;
* ``spips-bench run`` with the plan's ``run_metric`` (ST-LPIPS), as a subprocess, on PNG files in the
  BAPPS layout (a generated set of N triplets and one of 10 N): triplets per second from its ``run.json``
  and peak resident memory from its ``ru_maxrss`` (read by a small wrapper process); against that
  metric's first peer (pyiqa's ST-LPIPS) on the same triplets already decoded in memory;
* the memory bandwidth of a large tensor copy, and the fraction of it that the plan's bandwidth metrics
  (SSIM, MS-SSIM) reach at the large size (:func:`spips_bench.perf.model.ssim_bytes_per_pair`);
* the ``run`` cases of :mod:`spips_bench.perf.runs` (shared trunk, decoded-patch cache) on another set of
  10 N triplets stored as BAPPS stores its patches (256-px PNG files, which every run resizes to 64 px).

Every ``run`` subprocess gets its own patch cache folder (``SPIPS_BENCH_CACHE`` in a temporary folder), so
that a run is cold or warm because the benchmark made it so, never because of an earlier benchmark.
"""

from __future__ import annotations

import functools
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from spips_bench.perf.common import BenchConfig, BenchResult, bench_plan, create_for_bench, measure
from spips_bench.perf.runs import BAPPS_STORED_SIDE, run_cases, run_subprocess, write_run_set


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


# -- memory bandwidth --------------------------------------------------------------------------------


def memory_bandwidth(config: BenchConfig) -> dict[str, Any]:
    """GB/s of a copy between two float32 tensors of 256 MiB (1 GiB on a GPU, 16 MiB in a smoke run) on
    the benchmark's device: the median of ``max(repeats, 5)`` copies after one warm-up (which also touches
    every page), each byte counted once read and once written
    (:func:`spips_bench.perf.model.copy_bandwidth`). Far larger than any processor cache, so it streams
    through memory."""
    from spips_bench.perf.model import copy_bandwidth

    nbytes = (16 if config.quick else 1024 if config.device == "cuda" else 256) * 2**20
    src = torch.rand(nbytes // 4, device=config.device)
    dst = torch.empty_like(src)
    t = measure(lambda: dst.copy_(src), repeats=max(config.repeats, 5), device=config.device)
    return {"bytes": nbytes, "seconds": t.median_s, "runs_s": t.runs_s,
            "gb_s": copy_bandwidth(nbytes, t.median_s)}


def bandwidth_fractions(config: BenchConfig, result: BenchResult, gb_s: float) -> dict[str, Any]:
    """For each bandwidth metric of the plan, its reference row (RGB, the work piq does) at the large
    size: pairs/s, bytes per pair under both models of
    :func:`~spips_bench.perf.model.ssim_bytes_per_pair` and the fraction of ``gb_s`` reached."""
    import inspect

    from spips_bench.perf import peers as bench_peers
    from spips_bench.perf.metrics import find_row
    from spips_bench.perf.model import BYTE_MODELS, bandwidth_fraction, ssim_bytes_per_pair
    from spips_bench.zoo.ssim import ms_ssim_num_scales

    size = 256 if 256 in config.sizes else max(config.sizes)
    out: dict[str, Any] = {}
    for name in bench_plan().bandwidth_metrics:
        row = find_row(result, "reference", name, size, "pairs/s")
        if row is None or name not in bench_plan().references:
            continue
        function, _ = bench_plan().references[name]
        multi = "scales" in inspect.signature(getattr(bench_peers, function)).parameters
        scales = ms_ssim_num_scales(size, size) if multi else 1
        entry: dict[str, Any] = {"case": row.case, "size": size, "scales": scales, "pairs_per_s": row.ours_per_s}
        for model in BYTE_MODELS:
            nbytes = ssim_bytes_per_pair(size, scales=scales, model=model)
            entry[f"bytes_{model}"] = nbytes
            entry[f"fraction_{model}"] = bandwidth_fraction(nbytes, row.ours_per_s, gb_s)
        out[name] = entry
    return out


# -- spips-bench run end to end ----------------------------------------------------------------------


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
        results["N"] = run_subprocess(small, tmp / "runN", config, cache=tmp / "cache-N")
        big = write_run_set(tmp / "set10N", 10 * n, seed=10 * n)
        from spips_bench.perf.peers import PEERS

        label = bench_plan().run_peer
        _log(f"bench: {label} in memory on {10 * n} triplets, then spips-bench run on them, then the peer")
        with_peer = PEERS[label].package in config.peers
        rate_before, peer_scores = pyiqa_in_memory(big, config) if with_peer else (math.nan, {})
        results["10N"] = run_subprocess(big, tmp / "run10N", config, cache=tmp / "cache-10N")
        rate_after, _ = pyiqa_in_memory(big, config) if with_peer else (math.nan, {})
        stored = ScoreStore(tmp / "run10N").read_scores("2afc", "traditional", bench_plan().run_metric)
        diff = max((abs(a - b) for name, pair in peer_scores.items() for a, b in zip(pair, stored[name],
                                                                                      strict=True)),
                   default=math.nan)
        results["pyiqa_triplets_per_s"] = max(rate_before, rate_after) if with_peer else math.nan
        results["pyiqa_passes"] = [rate_before, rate_after] if with_peer else []
        results["max_abs_diff"] = diff
        # the cases measure decoding: on files of the size BAPPS stores, which every run resizes to 64 px
        large = write_run_set(tmp / "set10N-stored", 10 * n, seed=10 * n, stored=BAPPS_STORED_SIDE)
        results["cases"] = run_cases(large, tmp, config)
        results["cases"]["stored_side"] = BAPPS_STORED_SIDE
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
    _log("bench: memory bandwidth (tensor copy)")
    bw = memory_bandwidth(config)
    bw["metrics"] = bandwidth_fractions(config, result, bw["gb_s"])
    result.system["bandwidth"] = bw
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
    result.system["run_cases"] = e2e["cases"]
