"""The SPIPS paper's experiment from one call: data, weights, training, scoring, tables and figures.

:mod:`spips_bench.paper.recipe` reads ``recipe.toml`` (which baselines, which SPIPS variants per backbone,
their display names and paper rows); :func:`spips_bench.paper.pipeline.reproduce` runs the resumable
stages that ``spips-bench reproduce`` exposes.
"""

from __future__ import annotations
