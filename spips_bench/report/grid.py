"""Plain tables for the terminal and for Markdown: the one place that lays out rows of cells.

The paper-layout tables of :mod:`spips_bench.report.tables` have their own renderer (Markdown and LaTeX,
with bold best values and footnotes); everything else that prints a grid (``list``, ``weights``, the
benchmark report) goes through these two functions.
"""

from __future__ import annotations

from collections.abc import Sequence


def text_table(header: Sequence[object], rows: Sequence[Sequence[object]]) -> list[str]:
    """Lines of a table aligned in columns for a terminal: the header, a rule of dashes, then the rows."""
    table = [[str(c) for c in header], *([str(c) for c in r] for r in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def markdown_table(header: Sequence[object], rows: Sequence[Sequence[object]]) -> list[str]:
    """Lines of a Markdown (GitHub) table; cells are written as given."""
    out = ["| " + " | ".join(str(c) for c in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return out + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
