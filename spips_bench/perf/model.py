"""The arithmetic of the benchmark's derived figures, apart from any measuring (so tests can check it).

* :func:`ssim_bytes_per_pair`: the bytes SSIM or MS-SSIM filtering moves per image pair, under two
  models; with a measured throughput and the measured memory bandwidth it gives the fraction of the
  bandwidth reached (:func:`bandwidth_fraction`).
* :func:`run_case_ratios`: the ratios of the ``spips-bench run`` cases (shared trunk, patch cache) from
  what each run's ``run.json`` and its process wall time say.
* :func:`full_val_projection`: the time of the full BAPPS val through a set of metrics, each metric alone
  decoding every image (as before the shared trunks and the patch cache) against one ``run --metrics``
  of all of them (shared trunks, warm cache).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

#: Full BAPPS val: 2AFC triplets (six categories) and JND pairs (two categories), protocol section 1.
BAPPS_VAL_TRIPLETS = 35_844
BAPPS_VAL_JND_PAIRS = 9_600
#: The images those hold: three per 2AFC triplet (ref, p0, p1), two per JND pair (p0, p1).
BAPPS_VAL_IMAGES = 3 * BAPPS_VAL_TRIPLETS + 2 * BAPPS_VAL_JND_PAIRS

#: The five local moments of SSIM: means of x and y, means of x², y² and xy.
SSIM_MOMENTS = 5

#: The byte models of :func:`ssim_bytes_per_pair`.
BYTE_MODELS = ("compulsory", "streaming")


def ssim_bytes_per_pair(side: int, *, channels: int = 3, kernel_size: int = 11, scales: int = 1,
                        itemsize: int = 4, model: str = "compulsory") -> int:
    """Bytes that SSIM (``scales=1``) or MS-SSIM of one pair of ``side x side`` images moves to or from
    memory in the filtering, per model:

    * ``"compulsory"``: the two images read once (``2 C side² itemsize``); everything else (the moment
      maps, the coarser scales) can stay in the processor's cache, which is what working through the
      planes in cache-sized chunks aims at. The least any implementation must move.
    * ``"streaming"``: every pass through memory, as a chain of separate full-size operations does it:
      per scale of side ``s`` (valid output ``s' = s - k + 1``), the five moment inputs read (``5 s²``),
      the horizontal pass writing five ``s x s'`` maps that the vertical pass reads, the vertical pass
      writing five ``s' x s'`` maps that the SSIM formula reads; between scales both images read and
      written at half the side (the 2x2 average). Forming the products and the formula's temporaries
      are not counted.

    Scale ``j`` (from 0) has side ``ceil(side / 2^j)``, as :func:`spips_bench.zoo.ssim.ms_ssim_maps`.

    Raises:
        ValueError: an unknown model, or a side smaller than the window at some scale.
    """
    if model not in BYTE_MODELS:
        raise ValueError(f"model must be one of {', '.join(BYTE_MODELS)}, got {model!r}.")
    if model == "compulsory":
        if side < kernel_size:
            raise ValueError(f"side {side} px is smaller than the {kernel_size}-px window.")
        return 2 * channels * side * side * itemsize
    elements = 0
    s = side
    for j in range(scales):
        valid = s - kernel_size + 1
        if valid < 1:
            raise ValueError(f"scale {j + 1} of {scales}: side {s} px is smaller than the {kernel_size}-px "
                             "window; use fewer scales.")
        elements += SSIM_MOMENTS * (s * s + 2 * s * valid + 2 * valid * valid)
        if j < scales - 1:
            half = -(-s // 2)
            elements += 2 * (s * s + half * half)
            s = half
    return channels * elements * itemsize


def copy_bandwidth(nbytes: int, seconds: float) -> float:
    """GB/s (1e9 bytes) of a copy of ``nbytes`` in ``seconds``: every byte read once and written once."""
    return 2.0 * nbytes / seconds / 1e9 if seconds > 0 else math.nan


def bandwidth_fraction(bytes_per_pair: int, pairs_per_s: float, bandwidth_gb_s: float) -> float:
    """Fraction of ``bandwidth_gb_s`` that ``pairs_per_s`` pairs of ``bytes_per_pair`` bytes reach."""
    if not bandwidth_gb_s > 0:
        return math.nan
    return bytes_per_pair * pairs_per_s / 1e9 / bandwidth_gb_s


# -- `spips-bench run` cases -------------------------------------------------------------------------


def data_seconds(run: Mapping[str, Any]) -> float:
    """Seconds of a run spent outside its metrics' compute: ``duration_s`` minus the metrics' own seconds
    (``metric_seconds``). That is reading the patches (decoding them, building or opening the patch
    cache, reading it), batching and store writes: everything a cache can save."""
    return float(run["seconds"]) - sum(float(v) for v in run.get("metric_seconds", {}).values())


def mean_run(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The mean of runs of the same command: ``seconds``, ``wall_s``, ``patch_cache_seconds`` and each
    entry of ``metric_seconds`` averaged; the other fields are those of the first run.

    Raises:
        ValueError: no run.
    """
    if not runs:
        raise ValueError("mean_run needs at least one run.")
    n = len(runs)
    out = dict(runs[0])
    for key in ("seconds", "wall_s", "patch_cache_seconds"):
        out[key] = sum(float(r[key]) for r in runs) / n
    names = dict.fromkeys(k for r in runs for k in r.get("metric_seconds", {}))
    out["metric_seconds"] = {k: sum(float(r.get("metric_seconds", {}).get(k, 0.0)) for r in runs) / n
                             for k in names}
    return out


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.nan


def run_case_ratios(cold: Mapping[str, Any], warm: Mapping[str, Any], alone: Sequence[Mapping[str, Any]],
                    together: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """The ratios of the ``run`` cases; each run is a dict with ``seconds`` (run.json ``duration_s``),
    ``wall_s`` (the process, start to exit), ``metric_seconds`` and ``patch_cache_seconds``.

    Returns ``{case: {"ratio": the target's value, ...the other measures}}`` for

    * ``shared-trunk``: the metrics together / the sum of each alone, time inside the run (``ratio``) and
      process wall time (``wall_ratio``);
    * ``cache-decode``: second run / first run, :func:`data_seconds` (``ratio``) and the run.json's
      ``patch_cache_seconds`` (``patch_cache_ratio``: building the cache against opening it);
    * ``cache-end-to-end``: first run / second run (a speed-up), process wall (``ratio``) and time inside
      the run (``inside_ratio``).
    """
    return {
        "shared-trunk": {"ratio": _ratio(float(together["seconds"]), sum(float(r["seconds"]) for r in alone)),
                         "wall_ratio": _ratio(float(together["wall_s"]), sum(float(r["wall_s"]) for r in alone))},
        "cache-decode": {"ratio": _ratio(data_seconds(warm), data_seconds(cold)),
                         "patch_cache_ratio": _ratio(float(warm["patch_cache_seconds"]),
                                                     float(cold["patch_cache_seconds"]))},
        "cache-end-to-end": {"ratio": _ratio(float(cold["wall_s"]), float(warm["wall_s"])),
                             "inside_ratio": _ratio(float(cold["seconds"]), float(warm["seconds"]))},
    }


# -- the full BAPPS val ------------------------------------------------------------------------------


def full_val_projection(alone: Mapping[str, tuple[float, float]],
                        shared: Mapping[tuple[str, ...], tuple[float, float]], *,
                        decode_s_per_image: float, warm_s_per_image: float, cold_s_per_image: float,
                        process_s: float, triplets: int = BAPPS_VAL_TRIPLETS,
                        jnd_pairs: int = BAPPS_VAL_JND_PAIRS) -> dict[str, Any]:
    """Seconds of the full BAPPS val (``triplets`` 2AFC triplets and ``jnd_pairs`` JND pairs).

    Args:
        alone: metric -> (2AFC triplets/s, pairs/s) of the metric alone.
        shared: a group of metrics of ``alone`` on one trunk -> (triplets/s, pairs/s) of the group scored
            together (one trunk pass per image); a metric in no group runs alone in both figures.
        decode_s_per_image: data seconds per image when every image is decoded from its file
            (``--no-cache``), as each run did before the patch cache.
        warm_s_per_image, cold_s_per_image: the same with the patch cache warm, and with it cold (the
            first run decodes and writes it).
        process_s: seconds of a run process outside its run (start, imports, report writing).

    Returns:
        ``before_s`` (every metric alone, each decoding every image, each its own process),
        ``after_s`` (one run of all of them: shared trunks, warm cache, one process), ``after_cold_s``
        (the same run on a cold cache), ``ratio`` = after / before, ``one_run_s`` (one run of all of
        them without shared trunks or patch cache: compute alone, every image decoded once, one process) and
        ``one_run_ratio`` = after / one_run, ``images``, ``per_metric`` (compute seconds alone) and
        ``per_group`` (compute seconds of each group together).

    Raises:
        ValueError: a group names a metric absent from ``alone`` or lies in two groups, or a rate is not
            positive.
    """
    images = 3 * triplets + 2 * jnd_pairs

    def compute(rates: tuple[float, float], what: str) -> float:
        if not (rates[0] > 0 and rates[1] > 0):
            raise ValueError(f"{what}: triplets/s and pairs/s must be positive, got {rates!r}.")
        return triplets / rates[0] + jnd_pairs / rates[1]

    per_metric = {m: compute(r, m) for m, r in alone.items()}
    grouped: set[str] = set()
    per_group: dict[tuple[str, ...], float] = {}
    for group, rates in shared.items():
        missing = [m for m in group if m not in alone]
        twice = [m for m in group if m in grouped]
        if missing or twice:
            raise ValueError(f"group {'+'.join(group)}: {missing or twice} not among the metrics alone, or in "
                             "two groups; each group lists metrics of `alone` once.")
        grouped.update(group)
        per_group[tuple(group)] = compute(rates, "+".join(group))
    after_compute = sum(per_group.values()) + sum(s for m, s in per_metric.items() if m not in grouped)
    before = sum(per_metric.values()) + len(per_metric) * (images * decode_s_per_image + process_s)
    after = after_compute + images * warm_s_per_image + process_s
    after_cold = after_compute + images * cold_s_per_image + process_s
    one_run = sum(per_metric.values()) + images * decode_s_per_image + process_s
    return {"before_s": before, "after_s": after, "after_cold_s": after_cold,
            "ratio": _ratio(after, before), "one_run_s": one_run, "one_run_ratio": _ratio(after, one_run),
            "images": images, "per_metric": per_metric, "per_group": per_group,
            "compute_before_s": sum(per_metric.values()), "compute_after_s": after_compute}
