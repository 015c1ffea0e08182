"""Throughput and memory of the zoo's metrics, and of reference packages on the same inputs.

:func:`run_bench` measures, in one process with ``torch.set_num_threads(threads)``:

* pairs per second of every requested metric at every requested size (``metric(dist, ref)``), and
  triplets per second of the 2AFC path the runner uses (:func:`spips_bench.run.runner.score_batch`,
  three feature passes per triplet for metrics with the fast path);
* the same for the reference packages of :mod:`spips_bench.perf.peers`, on the same tensors, with the
  same weights, and the largest difference of the scores;
* the system measurements of :mod:`spips_bench.perf.system` (backbone convolution GFLOP/s against a
  matmul, the memory bandwidth of a tensor copy and the share of it SSIM and MS-SSIM reach, end-to-end
  ``spips-bench run`` throughput and peak memory, and the ``run`` cases of :mod:`spips_bench.perf.runs`:
  shared trunk, decoded-patch cache);
* the full-BAPPS-val projection of every offline metric (:func:`spips_bench.perf.metrics.full_val`);

and :mod:`spips_bench.perf.report` writes ``<out>/<device>.md`` and ``<out>/<device>.csv``. Each time
is the median of ``repeats`` calls after one warm-up call. Peak memory, read during the warm-up call, is
the largest resident-set growth over the call (CPU; sampled every millisecond from ``/proc/self/statm``,
so memory the allocator kept from earlier calls is not counted again) or the peak of
``torch.cuda.max_memory_allocated`` above the allocation before the call (CUDA), in MiB.
"""

from __future__ import annotations

import os
import time

import torch

from spips_bench.perf import metrics as bench_metrics
from spips_bench.perf import report as bench_report
from spips_bench.perf.common import BenchConfig, BenchResult


def run_bench(config: BenchConfig) -> BenchResult:
    """Run every measurement of ``config`` and write the report; returns what was measured."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        result = BenchResult(config)
        if hasattr(os, "getloadavg"):  # a busy machine makes every number slower: say how busy it was
            result.system["load_start"] = os.getloadavg()
        t0 = time.perf_counter()
        bench_metrics.measure_metrics(config, result)
        if config.system:
            from spips_bench.perf import system as bench_system

            bench_system.measure_system(config, result)
        bench_metrics.evaluate_targets(config, result)
        result.seconds = time.perf_counter() - t0
        bench_report.write_report(result)
    finally:
        torch.set_num_threads(previous_threads)
    return result
