"""The per-metric part of ``spips-bench bench``: zoo metrics and their peers on the same tensors.

Filled into a :class:`~spips_bench.perf.common.BenchResult`:

* section ``zoo``: each metric with its card's options, pairs/s and 2AFC triplets/s;
* section ``peers``: the zoo metric, configured to do the peer's work, against the peer;
* section ``reference``: metrics against their unoptimised float64 references;
* section ``shared``: each group of measured metrics on one trunk (equal
  :meth:`~spips_bench.metric.Metric.trunk_key`, two or more metrics) scored together as ``run`` scores
  them (:func:`spips_bench.run.runner.score_shared`), 2AFC triplets/s and JND pairs/s, at the
  projection's size;

then :func:`evaluate_targets` turns the rows (and the system section) into met/missed targets. Which
metric has which peers, references and targets is data (:func:`spips_bench.perf.common.bench_plan`).
"""

from __future__ import annotations

import functools
import inspect
import math
import sys
from collections.abc import Callable
from typing import Any

import torch

from spips_bench.perf import peers as bench_peers
from spips_bench.perf.common import (
    BenchConfig,
    BenchResult,
    Row,
    Target,
    bench_plan,
    create_for_bench,
    make_images,
    measure,
    profile_table,
)
from spips_bench.perf.peers import PEERS, Peer, make_peer, max_abs_diff


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _triplet_fn(metric: Any, batch: dict[str, torch.Tensor]) -> Any:
    from spips_bench.run.runner import score_batch

    return lambda: score_batch("2afc", metric, batch)


def _peers_for(name: str, metric: Any, config: BenchConfig, result: BenchResult) -> list[Peer]:
    """The peers of ``name`` whose package is among ``config.peers``; one that cannot be built (package not
    installed, weights absent) is reported in ``result.skipped``."""
    from spips_bench.errors import WeightsUnavailableError

    out: list[Peer] = []
    for label in bench_plan().peers.get(name, ()):
        if PEERS[label].package not in config.peers:
            continue
        try:
            out.append(make_peer(label, metric, config.device))
        except ImportError as exc:
            result.skipped[f"peers of {name}"] = (f"{exc.name or exc} is not installed; install the reference "
                                                  "packages with pip install 'spips-bench[reference,pyiqa]'")
        except WeightsUnavailableError as exc:
            result.skipped[f"{label} peer of {name}"] = str(exc)
    return out


def measure_metrics(config: BenchConfig, result: BenchResult) -> None:
    """Measure every metric of ``config`` at every size; rows go into ``result``."""
    from spips_bench.perf.common import resolve_metrics
    from spips_bench.registry import get_spec

    dev, reps, bs = config.device, config.repeats, config.batch_size
    names = resolve_metrics(config.metrics)
    trunks: dict[Any, list[str]] = {}  # trunk key -> the metrics on it, at the projection's size
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
            if name in bench_plan().references:
                _reference(name, size, batch, config, result)
            key_of = getattr(metric, "trunk_key", None)
            if size == projection_size(config) and callable(key_of) and getattr(metric, "has_features", False):
                key = key_of()
                if key is not None:
                    trunks.setdefault(key, []).append(name)
            del metric
    for group in trunks.values():
        if len(group) > 1:
            _shared(group, config, result)


def projection_size(config: BenchConfig) -> int:
    """The image side of the full-val projection: 64 px (the BAPPS size) when measured, else the smallest."""
    return 64 if 64 in config.sizes else min(config.sizes)


def _shared(group: list[str], config: BenchConfig, result: BenchResult) -> None:
    """Rows of section ``shared``: ``group`` (metrics with one trunk key) scored together, one trunk pass
    per image, 2AFC triplets/s and JND pairs/s."""
    from spips_bench.run.runner import score_shared, trunk_groups

    dev, reps, bs, size = config.device, config.repeats, config.batch_size, projection_size(config)
    metrics = [create_for_bench(name)[0].to(dev) for name in group]
    if len(trunk_groups(metrics)) != 1:  # fresh instances, e.g. random trunks, need not share
        result.skipped[f"shared trunk {'+'.join(group)}"] = "new instances of these metrics do not share a trunk"
        return
    ref, p0, p1 = (t.to(dev) for t in make_images(size, bs, seed=size))
    _log(f"bench: {'+'.join(group)} together @ {size}px")
    batch = {"ref": ref, "p0": p0, "p1": p1}
    trip = measure(lambda: score_shared("2afc", metrics, batch), repeats=reps, device=dev)
    jnd = measure(lambda: score_shared("jnd", metrics, {"p0": p0, "p1": p1}), repeats=reps, device=dev)
    note = f"{len(group)} metrics, one trunk pass per image"
    case = "+".join(group)
    result.rows.append(Row("shared", case, size, bs, "triplets/s", trip.rate(bs), ours_peak_mib=trip.peak_mib,
                           note=note))
    result.rows.append(Row("shared", case, size, bs, "pairs/s", jnd.rate(bs), ours_peak_mib=jnd.peak_mib,
                           note=note + " (JND pairs)"))


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
    function, options = bench_plan().references[name]
    ours, _ = create_for_bench(name, **options)
    ours = ours.to(dev)
    reference = getattr(bench_peers, function)
    if "scales" in inspect.signature(reference).parameters:  # a multi-scale reference: the zoo's scale count
        scales = ms_ssim_num_scales(size, size)
        if size % 2 ** (scales - 1):
            result.skipped[f"naive {name} @ {size}px"] = "the reference needs sides divisible by 2^(M-1)"
            return
        naive: Any = functools.partial(reference, scales=scales)
    else:
        naive = reference
    with torch.inference_mode():
        diff = max_abs_diff(ours(p0, ref), naive(p0, ref))
    t_ours = measure(lambda: ours(p0, ref), repeats=reps, device=dev)
    # the float64 reference is slow (seconds per call at 256 px): the call above was its warm-up, and one
    # timed call is enough to show the order of magnitude
    t_ref = measure(lambda: naive(p0, ref), repeats=1, device=dev, warmup=False)
    label = ", ".join(f"{k}={v}" for k, v in options.items())
    result.rows.append(Row("reference", f"{name} [{label}]", size, bs, "pairs/s", t_ours.rate(bs),
                           "naive float64 2-D window", t_ref.rate(bs), diff, t_ours.peak_mib, t_ref.peak_mib,
                           "unoptimised reference: full 11x11 window per moment, float64"))


# -- targets -----------------------------------------------------------------------------------------


def find_row(result: BenchResult, section: str, metric: str, size: int, unit: str, peer: str = "") -> Row | None:
    """The first row of ``metric`` (its case is the name, or the name and ``[options]``)."""
    for row in result.rows:
        if (row.section == section and (row.case == metric or row.case.startswith(metric + " ["))
                and row.size == size and row.unit == unit and (not peer or row.peer == peer)):
            return row
    return None


def _target(result: BenchResult, target: str, measured: float, threshold: str, met: bool | None,
            detail: str) -> None:
    result.targets.append({"target": target, "measured": measured, "threshold": threshold,
                           "status": "n/a" if met is None or math.isnan(measured) else
                           ("met" if met else "missed"), "detail": detail})


def _measured(t: Target, size: int, result: BenchResult) -> tuple[float, str]:
    """The value a target compares with its threshold, and its detail line."""
    if t.check in ("peer-ratio", "peer-diff"):
        row = find_row(result, "peers", t.metric, size, t.unit, t.peer)
        if row is None:
            return math.nan, t.detail
        return (row.ratio if t.check == "peer-ratio" else row.max_abs_diff), t.detail
    if t.check == "reference-diff":
        row = find_row(result, "reference", t.metric, size, t.unit)
        return (row.max_abs_diff if row else math.nan), t.detail
    if t.check == "time-ratio":
        ours, base = find_row(result, "zoo", t.metric, size, t.unit), find_row(result, "zoo", t.baseline, size, t.unit)
        return (base.ours_per_s / ours.ours_per_s if ours and base else math.nan), t.detail
    if t.check == "run-case":
        case = result.system.get("run_cases", {}).get("ratios", {}).get(t.key)
        if case is None:
            return math.nan, t.detail
        return float(case["ratio"]), run_case_detail(t.key, result.system["run_cases"])
    if t.check == "projection":
        proj = full_val(result)
        if proj is None:
            return math.nan, t.detail
        return float(proj["ratio"]), (f"{proj['after_s'] / 3600:.2f} h / {proj['before_s'] / 3600:.2f} h for "
                                      f"{len(proj['per_metric'])} offline metrics"
                                      + ("; compute only (no `run` cases measured)" if proj["compute_only"]
                                         else ""))
    return float(result.system.get(t.key, math.nan)), str(result.system.get(t.key + "_detail", ""))


def run_case_detail(key: str, cases: dict[str, Any]) -> str:
    """The detail line of a ``run-case`` target: the measured seconds behind its ratio, and its other measure."""
    from spips_bench.perf.model import data_seconds

    r = cases["ratios"][key]
    cold, warm = cases["cache"]["cold"], cases["cache"]["warm"]
    if key == "shared-trunk":
        alone = sum(x["seconds"] for x in cases["alone"].values())
        return (f"{cases['together']['seconds']:.2f} s together vs {alone:.2f} s alone, inside the run; process "
                f"wall {r['wall_ratio']:.2f}x")
    if key == "cache-decode":
        return (f"data time (duration_s - metric seconds) {data_seconds(warm):.3f} s vs {data_seconds(cold):.3f} s; "
                f"patch_cache_seconds {warm['patch_cache_seconds']:.3f} vs {cold['patch_cache_seconds']:.3f} s "
                f"= {r['patch_cache_ratio']:.3f}x")
    return (f"{cases['cache_metric']}: {cold['wall_s']:.2f} s vs {warm['wall_s']:.2f} s process wall; inside the "
            f"run (duration_s) {cold['seconds']:.2f} vs {warm['seconds']:.2f} s = {r['inside_ratio']:.2f}x")


def full_val(result: BenchResult) -> dict[str, Any] | None:
    """The full-BAPPS-val projection (:func:`spips_bench.perf.model.full_val_projection`) of the measured
    metrics whose weights are all on this machine (offline), at :func:`projection_size`, with the data
    times of the ``run`` cases (``compute_only`` when they were not measured); ``None`` without such a
    metric."""
    from spips_bench.perf.model import full_val_projection
    from spips_bench.registry import get_spec

    size = projection_size(result.config)
    rates: dict[str, dict[str, float]] = {}
    shared: dict[str, dict[str, float]] = {}
    for row in result.rows:
        if row.size == size and row.section in ("zoo", "shared"):
            (rates if row.section == "zoo" else shared).setdefault(row.case, {})[row.unit] = row.ours_per_s
    alone = {m: (r["triplets/s"], r["pairs/s"]) for m, r in rates.items()
             if "triplets/s" in r and "pairs/s" in r and not get_spec(m).missing_weights()}
    if not alone:
        return None
    groups = {tuple(case.split("+")): (r["triplets/s"], r["pairs/s"]) for case, r in shared.items()
              if "triplets/s" in r and "pairs/s" in r and all(m in alone for m in case.split("+"))}
    cases = result.system.get("run_cases")
    per_image = cases["data_s_per_image"] if cases else {"decode": 0.0, "warm": 0.0, "cold": 0.0}
    out = full_val_projection(alone, groups, decode_s_per_image=per_image["decode"],
                              warm_s_per_image=per_image["warm"], cold_s_per_image=per_image["cold"],
                              process_s=cases["process_s"] if cases else 0.0)
    out.update(size=size, compute_only=cases is None, left_out=sorted(set(rates) - set(alone)))
    return out


def evaluate_targets(config: BenchConfig, result: BenchResult) -> None:
    """Compare the measurements with the targets of :func:`~spips_bench.perf.common.bench_plan` (met /
    missed / n/a); a missed time ratio adds a profile of the slower metric."""
    big = 256 if 256 in config.sizes else max(config.sizes)
    small = 64 if 64 in config.sizes else min(config.sizes)
    for t in bench_plan().targets:
        size = big if t.size == "large" else small
        value, detail = _measured(t, size, result)
        label = t.label.format(metric=t.metric, peer=t.peer, baseline=t.baseline, size=size,
                               unit=t.unit.removesuffix("/s"))
        met = None if math.isnan(value) else t.met(value)
        _target(result, label, value, t.threshold, met, detail)
        if t.check == "time-ratio" and met is False:
            m, _ = create_for_bench(t.metric)
            imgs = dict(zip(("ref", "p0", "p1"), make_images(small, config.batch_size), strict=True))
            imgs = {k: v.to(config.device) for k, v in imgs.items()}
            result.profiles[f"{t.metric} {t.unit} @ {small}px (slower than {t.threshold.split()[1]} "
                            f"{t.baseline})"] = profile_table(_triplet_fn(m.to(config.device), imgs),
                                                              device=config.device)
