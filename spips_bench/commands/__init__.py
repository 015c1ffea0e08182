"""Subcommands of ``spips-bench``: one module each, discovered by :mod:`spips_bench.cli`."""
