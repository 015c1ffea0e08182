"""The metric contract shared by every metric of the zoo.

A metric is a ``torch.nn.Module`` called as ``metric(dist, ref)`` on two float tensors ``(N, 3, H, W)``
in [0, 1] (RGB), returning a ``(N,)`` tensor: one score per pair, never reduced.

Metadata (name, direction, minimum size, symmetry, weight files, trained, citation, differentiable) is
what the runner, the tables and ``spips-bench list`` read; nothing downstream looks at a metric's name to
decide what to do. Each metric states it once:

* a built-in metric in its card (``spips_bench/cards/*.toml``), which the registry reads without
  importing any model; its class declares none of it;
* a plugin class (or one registered at runtime) in its class attributes ``name``, ``higher_is_better``,
  ``min_size``, ``symmetric``, ``weights``, ``trained``, ``citation``, ``differentiable``, which the
  registry reads into a :class:`~spips_bench.registry.MetricSpec`.

An instance reports its metadata as :attr:`Metric.spec`: the card of the variant its options select
(:func:`spips_bench.registry.spec_of`), updated by :meth:`Metric.variant`, the one hook for values that
an instance's options or state change (a minimum size that depends on an option, ``trained`` after a
checkpoint is loaded). The attributes ``metric.name``, ``metric.min_size``, ... read :attr:`Metric.spec`.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from spips_bench.validation import validate_pair

if TYPE_CHECKING:
    from spips_bench.registry import MetricSpec


class Metric(torch.nn.Module):
    """Base class of all metrics.

    Subclasses implement :meth:`score` (no validation needed there) and, when a metric can reuse work
    across the pairs of a 2AFC triplet, :meth:`features` and :meth:`compare`; a metric whose trunk other
    metrics may share (the same network with the same weights) also :meth:`trunk_key`,
    :meth:`trunk_features` and :meth:`features_from_trunk`.

    Metadata, read from :attr:`spec` (module docstring; a plugin class's own attributes of the same
    names take precedence, being its declaration):

    Attributes:
        name: the registry name.
        higher_is_better: ``True`` for similarities (PSNR, SSIM), ``False`` for distances (LPIPS, SPIPS).
        min_size: the smallest height/width in pixels the metric accepts.
        symmetric: ``metric(a, b) == metric(b, a)`` for all inputs.
        weights: names of the weight files (see :mod:`spips_bench.weights`) the metric loads.
        trained: ``False`` for a learned metric running without trained parameters; reported in tables.
        citation: the reference, as a short string with a DOI or arXiv id.
        differentiable: whether the score has real gradients with respect to the images.
    """

    # -- metadata: one source per metric (module docstring) ------------------------------------------

    @property
    def spec(self) -> MetricSpec:
        """This instance's metadata: its card (or its class's declaration), updated by :meth:`variant`."""
        from spips_bench.registry import spec_of

        return spec_of(self)

    def variant(self) -> dict[str, Any]:
        """The metadata that this instance's options or state change, as :class:`MetricSpec` fields.

        The one hook for instance-dependent metadata: e.g. ``{"min_size": 48}`` for an option that needs
        larger images, ``{"trained": True}`` once a checkpoint is loaded, ``{"differentiable": False}``
        for an option that rounds. The values must equal the card's at the card's options (a test
        checks every card). The default, ``{}``, keeps the card or the class declaration.
        """
        return {}

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def higher_is_better(self) -> bool:
        return self.spec.higher_is_better

    @property
    def min_size(self) -> int:
        return self.spec.min_size

    @property
    def symmetric(self) -> bool:
        return self.spec.symmetric

    @property
    def weights(self) -> tuple[str, ...]:
        return self.spec.weights

    @property
    def trained(self) -> bool:
        return self.spec.trained

    @property
    def citation(self) -> str:
        return self.spec.citation

    @property
    def differentiable(self) -> bool:
        return self.spec.differentiable

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

    def features_of(self, images: Sequence[torch.Tensor]) -> list[Any]:
        """:meth:`features` of each of ``images``, validated batches of one shape (the runner passes the
        distinct images of a kind: ref, p0 and p1 of a 2AFC batch). The default calls :meth:`features` on
        each; a metric whose network runs faster on one larger batch may compute them in one call, as long
        as each result equals ``features(x)`` up to float rounding."""
        return [self.features(x) for x in images]

    # -- optional trunk sharing: metrics with equal trunks run them once per image ----------------------

    def trunk_key(self) -> Hashable | None:
        """The identity of this metric's trunk network *and its weights*, or ``None`` (the default: no
        sharing).

        Two metrics whose keys are equal must return equal :meth:`trunk_features` for the same images
        (bit for bit on one device): the runner then computes them with one metric and hands them to
        every metric of the group (:meth:`features_from_trunk`). A key therefore names everything that
        changes the features: the network's class and layers, a digest of its weights (not only a file
        name: random or fine-tuned weights must differ), the input normalisation, the tapped layers,
        dtype and device. Metrics that declare a key implement :meth:`features`/:meth:`compare` too.
        """
        return None

    def trunk_features(self, x: torch.Tensor) -> Any:
        """The shared part of :meth:`features` of a validated batch: the trunk's raw output (e.g. its
        tapped activations, before this metric's own normalisation)."""
        raise NotImplementedError(f"{type(self).__name__} declares no shared trunk")

    def features_from_trunk(self, shared: Any, x: torch.Tensor) -> Any:
        """:meth:`features` of ``x`` from ``shared``, the :meth:`trunk_features` of ``x`` computed by a
        metric with an equal :meth:`trunk_key`; equals ``features(x)``. ``shared`` is read by every metric
        of the group: never modify it in place."""
        raise NotImplementedError(f"{type(self).__name__} declares no shared trunk")

    def extra_repr(self) -> str:
        return f"name={self.name!r}, higher_is_better={self.higher_is_better}"
