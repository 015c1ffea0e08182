"""The metric contract shared by every metric of the zoo.

A metric is a ``torch.nn.Module`` called as ``metric(dist, ref)`` on two float tensors ``(N, 3, H, W)``
in [0, 1] (RGB), returning a ``(N,)`` tensor: one score per pair, never reduced. The class attributes
below are the metadata that the runner, the tables and ``spips-bench list`` read; nothing downstream
looks at a metric's name to decide what to do.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from spips_bench.validation import validate_pair


class Metric(torch.nn.Module):
    """Base class of all metrics.

    Subclasses implement :meth:`score` (no validation needed there) and, when a metric can reuse work
    across the pairs of a 2AFC triplet, :meth:`features` and :meth:`compare`.

    Attributes:
        name: the registry name.
        higher_is_better: ``True`` for similarities (PSNR, SSIM), ``False`` for distances (LPIPS, SPIPS).
        min_size: the smallest height/width in pixels the metric accepts.
        symmetric: ``metric(a, b) == metric(b, a)`` for all inputs.
        weights: names of the weight files (see :mod:`spips_bench.weights`) the metric loads.
        trained: ``False`` for a learned metric running without trained parameters; reported in tables.
        citation: the reference, as a short string with a DOI or arXiv id.
    """

    name: ClassVar[str] = ""
    higher_is_better: ClassVar[bool] = False
    min_size: ClassVar[int] = 1
    symmetric: ClassVar[bool] = True
    weights: tuple[str, ...] = ()
    trained: bool = True
    citation: ClassVar[str] = ""

    def forward(self, dist: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """Score ``dist`` against ``ref``; both ``(N, 3, H, W)`` in [0, 1]. Returns ``(N,)``."""
        validate_pair(dist, ref, min_size=self.min_size)
        return self.score(dist, ref)

    def score(self, dist: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """Compute the scores of validated inputs. Subclasses override this."""
        raise NotImplementedError(f"{type(self).__name__} does not implement score()")

    # -- optional fast path for 2AFC triplets: three backbone passes instead of four ---------------

    @property
    def has_features(self) -> bool:
        """Whether :meth:`features`/:meth:`compare` are implemented (the triplet fast path)."""
        return type(self).features is not Metric.features

    def features(self, x: torch.Tensor) -> Any:
        """Per-image features of a validated batch, reusable by :meth:`compare`."""
        raise NotImplementedError(f"{type(self).__name__} has no features() fast path")

    def compare(self, f_dist: Any, f_ref: Any) -> torch.Tensor:
        """Scores from two :meth:`features` results; equals ``score(dist, ref)``."""
        raise NotImplementedError(f"{type(self).__name__} has no compare() fast path")

    def extra_repr(self) -> str:
        return f"name={self.name!r}, higher_is_better={self.higher_is_better}"
