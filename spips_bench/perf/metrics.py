"""The per-metric part of ``spips-bench bench``: zoo metrics and their peers on the same tensors.

Filled into a :class:`~spips_bench.perf.common.BenchResult`:

* section ``zoo``: each metric with its card's options, pairs/s and 2AFC triplets/s;
* section ``peers``: the zoo metric, configured to do the peer's work, against the peer;
* section ``reference``: SSIM and MS-SSIM against the unoptimised float64 references;

then :func:`evaluate_targets` turns the rows (and the system section) into met/missed targets.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Callable
from typing import Any

import torch

from spips_bench.perf.common import (
    BenchConfig,
    BenchResult,
    Row,
    create_for_bench,
    make_images,
    measure,
    profile_table,
)
from spips_bench.perf.peers import (
    Peer,
    classical_peers,
    lpips_peer,
    max_abs_diff,
    naive_ms_ssim,
    naive_ssim,
)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _triplet_fn(metric: Any, batch: dict[str, torch.Tensor]) -> Any:
    from spips_bench.run.runner import score_batch

    return lambda: score_batch("2afc", metric, batch)


def _peers_for(name: str, metric: Any, config: BenchConfig, result: BenchResult) -> list[Peer]:
    """The peers of ``name`` among ``config.peers``; a package that is not installed is reported."""
    try:
        if name in ("psnr", "ssim", "ms-ssim"):
            return classical_peers(name, tuple(p for p in config.peers if p in ("piq", "pyiqa")))
        if name == "lpips" and "lpips" in config.peers:
            return [lpips_peer(metric, config.device)]
        if name == "stlpips" and "pyiqa" in config.peers:
            from spips_bench import weights
            from spips_bench.perf.peers import stlpips_peer

            found = weights.locate("stlpips-alex")
            if found is not None:
                return [stlpips_peer(str(found[1]), config.device)]
    except ImportError as exc:
        result.skipped[f"peers of {name}"] = (f"{exc.name or exc} is not installed; install the reference "
                                              "packages with pip install 'spips-bench[reference,pyiqa]'")
    return []


def measure_metrics(config: BenchConfig, result: BenchResult) -> None:
    """Measure every metric of ``config`` at every size; rows go into ``result``."""
    from spips_bench.perf.common import resolve_metrics
    from spips_bench.registry import get_spec

    dev, reps, bs = config.device, config.repeats, config.batch_size
    names = resolve_metrics(config.metrics)
    for size in sorted(set(config.sizes) | set(config.deep_sizes)):
        ref, p0, p1 = (t.to(dev) for t in make_images(size, bs, seed=size))
        batch = {"ref": ref, "p0": p0, "p1": p1}
        for name in names:
            spec = get_spec(name)
            if size not in (config.deep_sizes if spec.weights else config.sizes):
                continue
            if size < spec.min_size:
                result.skipped[f"{name} @ {size}px"] = f"needs >= {spec.min_size} px"
                continue
            try:
                metric, note = create_for_bench(name)
            except Exception as exc:  # one metric that cannot run must not sink the whole report
                result.skipped[f"{name} @ {size}px"] = f"{type(exc).__name__}: {exc}"
                continue
            metric = metric.to(dev)
            _log(f"bench: {name} @ {size}px")
            pairs = measure(functools.partial(metric, p0, ref), repeats=reps, device=dev)
            trip = measure(_triplet_fn(metric, batch), repeats=reps, device=dev)
            fast = "3 feature passes" if getattr(metric, "has_features", False) else "2 pair calls"
            extra = "; ".join(x for x in (note, f"triplets: {fast}") if x)
            result.rows.append(Row("zoo", name, size, bs, "pairs/s", pairs.rate(bs),
                                   ours_peak_mib=pairs.peak_mib, note=note))
            result.rows.append(Row("zoo", name, size, bs, "triplets/s", trip.rate(bs),
                                   ours_peak_mib=trip.peak_mib, note=extra))
            for peer in _peers_for(name, metric, config, result):
                if size < peer.min_size:
                    result.skipped[f"{peer.name} @ {size}px"] = f"the peer needs >= {peer.min_size} px"
                    continue
                _compare(name, metric, peer, size, batch, config, result)
            if name in ("ssim", "ms-ssim"):
                _reference(name, size, batch, config, result)
            del metric


def _compare(name: str, metric: Any, peer: Peer, size: int, batch: dict[str, torch.Tensor],
             config: BenchConfig, result: BenchResult) -> None:
    dev, reps, bs = config.device, config.repeats, config.batch_size
    ref, p0, p1 = batch["ref"], batch["p0"], batch["p1"]
    ours = metric
    if peer.ours_options:
        ours, _ = create_for_bench(name, **peer.ours_options)
        ours = ours.to(dev)
    opts = ", ".join(f"{k}={v}" for k, v in peer.ours_options.items())
    case = f"{name} [{opts}]" if opts else name
    with torch.inference_mode():
        diff = max(max_abs_diff(ours(p0, ref), peer.fn(p0, ref)),
                   max_abs_diff(ours(p1, ref), peer.fn(p1, ref)))
    units: list[tuple[str, Callable[[], Any], Callable[[], Any]]] = [
        ("pairs/s", lambda: ours(p0, ref), lambda: peer.fn(p0, ref))]
    if getattr(ours, "has_features", False):
        units.append(("triplets/s", _triplet_fn(ours, batch), lambda: (peer.fn(p0, ref), peer.fn(p1, ref))))
    for unit, mine, theirs in units:
        t_ours = measure(mine, repeats=reps, device=dev)
        t_peer = measure(theirs, repeats=reps, device=dev)
        row = Row("peers", case, size, bs, unit, t_ours.rate(bs), peer.name, t_peer.rate(bs), diff,
                  t_ours.peak_mib, t_peer.peak_mib, peer.path)
        result.rows.append(row)
        if row.ratio < 1.0:  # the peer is faster: show where our time goes
            result.profiles[f"{case} {unit} @ {size}px (ours, slower than {peer.name})"] = profile_table(
                mine, device=dev)


def _reference(name: str, size: int, batch: dict[str, torch.Tensor], config: BenchConfig,
               result: BenchResult) -> None:
    from spips_bench.zoo.ssim import ms_ssim_num_scales

    dev, reps, bs = config.device, config.repeats, config.batch_size
    ref, p0 = batch["ref"], batch["p0"]
    # the reference pools MS-SSIM's scales by the published product
    ours, _ = create_for_bench(name, color="rgb", **({} if name == "ssim" else {"combine": "product"}))
    ours = ours.to(dev)
    if name == "ssim":
        naive: Any = naive_ssim
    else:
        scales = ms_ssim_num_scales(size, size)
        if size % 2 ** (scales - 1):
            result.skipped[f"naive ms-ssim @ {size}px"] = "the reference needs sides divisible by 2^(M-1)"
            return
        naive = lambda d, r: naive_ms_ssim(d, r, scales)  # noqa: E731
    with torch.inference_mode():
        diff = max_abs_diff(ours(p0, ref), naive(p0, ref))
    t_ours = measure(lambda: ours(p0, ref), repeats=reps, device=dev)
    # the float64 reference is slow (seconds per call at 256 px): the call above was its warm-up, and one
    # timed call is enough to show the order of magnitude
    t_ref = measure(lambda: naive(p0, ref), repeats=1, device=dev, warmup=False)
    label = "color=rgb" if name == "ssim" else "color=rgb, combine=product"
    result.rows.append(Row("reference", f"{name} [{label}]", size, bs, "pairs/s", t_ours.rate(bs),
                           "naive float64 2-D window", t_ref.rate(bs), diff, t_ours.peak_mib, t_ref.peak_mib,
                           "unoptimised reference: full 11x11 window per moment, float64"))


# -- targets -----------------------------------------------------------------------------------------


def _find(result: BenchResult, section: str, case_prefix: str, size: int, unit: str,
          peer: str = "") -> Row | None:
    for row in result.rows:
        if (row.section == section and row.case.startswith(case_prefix) and row.size == size
                and row.unit == unit and (not peer or row.peer == peer)):
            return row
    return None


def _target(result: BenchResult, target: str, measured: float, threshold: str, met: bool | None,
            detail: str) -> None:
    result.targets.append({"target": target, "measured": measured, "threshold": threshold,
                           "status": "n/a" if met is None or math.isnan(measured) else
                           ("met" if met else "missed"), "detail": detail})


def evaluate_targets(config: BenchConfig, result: BenchResult) -> None:
    """Compare the measurements with the project's performance targets (met / missed / n/a)."""
    big = 256 if 256 in config.sizes else max(config.sizes)
    for name, peer in (("ssim", "piq.ssim"), ("ms-ssim", "piq.multi_scale_ssim")):
        row = _find(result, "peers", name + " ", big, "pairs/s", peer)
        r = row.ratio if row else math.nan
        _target(result, f"{name} {big}px pairs/s vs {peer} (RGB)", r, ">= 3x", r >= 3,
                "ours / peer throughput")
        ref = _find(result, "reference", name + " ", big, "pairs/s")
        d = ref.max_abs_diff if ref else math.nan
        _target(result, f"{name} {big}px values vs naive float64 reference", d, "<= 1e-6", d <= 1e-6,
                "max |ours - reference|")
    small = 64 if 64 in config.sizes else min(config.sizes)
    for name, peer in (("lpips", "lpips.LPIPS"), ("stlpips", "pyiqa stlpips")):
        row = _find(result, "peers", name, small, "triplets/s", peer)
        r = row.ratio if row else math.nan
        d = row.max_abs_diff if row else math.nan
        _target(result, f"{name} {small}px 2AFC triplets/s vs {peer}", r, ">= 1.3x", r >= 1.3,
                "ours / peer throughput")
        _target(result, f"{name} {small}px scores vs {peer}", d, "<= 1e-5", d <= 1e-5, "max |ours - peer|")
    for unit in ("triplets/s", "pairs/s"):
        sp = _find(result, "zoo", "spips-alex-st", small, unit)
        lp = _find(result, "zoo", "stlpips", small, unit)
        t = lp.ours_per_s / sp.ours_per_s if sp and lp else math.nan
        _target(result, f"spips-alex-st {small}px time / stlpips time ({unit[:-2]})", t, "<= 1.5x", t <= 1.5,
                "same shift-tolerant AlexNet trunk")
        if sp and lp and t > 1.5:
            m, _ = create_for_bench("spips-alex-st")
            imgs = dict(zip(("ref", "p0", "p1"), make_images(small, config.batch_size), strict=True))
            imgs = {k: v.to(config.device) for k, v in imgs.items()}
            result.profiles[f"spips-alex-st {unit} @ {small}px (slower than 1.5x stlpips)"] = profile_table(
                _triplet_fn(m.to(config.device), imgs), device=config.device)
    sysm = result.system
    for key, label, threshold, ok in (
        ("conv_fraction", f"backbone convs GFLOP/s / matmul GFLOP/s (alex-st, {small}px)", ">= 0.5",
         lambda v: v >= 0.5),
        ("run_vs_pyiqa", "`run` end to end ST-LPIPS triplets/s vs pyiqa in memory", ">= 1.3x",
         lambda v: v >= 1.3),
        ("run_memory_ratio", "`run` peak RSS at 10N / at N", "<= 1.1x", lambda v: v <= 1.1),
    ):
        v = float(sysm.get(key, math.nan))
        _target(result, label, v, threshold, None if math.isnan(v) else bool(ok(v)),
                str(sysm.get(key + "_detail", "")))
