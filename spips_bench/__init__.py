"""spips-bench: a metric zoo and a BAPPS benchmark harness for full-reference image quality.

Importing the package is light: it loads no torch model, no weights and no optional dependency.
Metrics are imported when they are created::

    >>> import spips_bench
    >>> metric = spips_bench.create_metric("psnr")   # doctest: +SKIP
    >>> metric(dist, ref)                              # (N,) tensor  # doctest: +SKIP
"""

from __future__ import annotations

from spips_bench.registry import MetricSpec, create_metric, get_spec, list_metrics, register_metric

__version__ = "0.1.0"

__all__ = ["MetricSpec", "__version__", "create_metric", "get_spec", "list_metrics", "register_metric"]
