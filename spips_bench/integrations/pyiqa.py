"""Make SPIPS available through pyiqa: ``pyiqa.create_metric("spips")`` after :func:`register`.

How pyiqa finds a metric (0.1.x): ``pyiqa.create_metric(name, **kw)`` requires ``name`` to be a key of
the module-level dict ``pyiqa.default_model_configs.DEFAULT_CONFIGS`` and builds
``InferenceModel(name)``, which reads that entry's ``metric_opts``, updates it with ``kw`` and asks
``pyiqa.utils.registry.ARCH_REGISTRY`` for the class named by ``metric_opts["type"]``. The arch registry
accepts plugins (``register``, entry-point group ``pyiqa.archs``) but ``DEFAULT_CONFIGS`` has no plugin
hook, and ``create_metric`` checks it first, so an entry there is unavoidable.

:func:`register` therefore does the least that works: one arch class (:class:`SpipsBenchArch`) in the
arch registry under a namespaced type name, and one ``DEFAULT_CONFIGS`` entry per metric whose card sets
``pyiqa_bridge = true`` (the SPIPS variants), never replacing a name pyiqa already has (unless
``overwrite``); it is idempotent, and :func:`unregister` removes exactly what it added. pyiqa's input
checks, device handling and ``as_loss`` mode then apply unchanged; scores are spips-bench's own (lower =
more similar), as an ``(N, 1)`` tensor like pyiqa's LPIPS.

Example::

    import pyiqa
    from spips_bench.integrations.pyiqa import register

    register()
    metric = pyiqa.create_metric("spips-alex-st", device="cpu", checkpoint="runs/spips-alex-st/final.safetensors")
    score = metric(dist, ref)          # (N, 1), lower = more similar

Without ``checkpoint=`` the SPIPS heads are untrained (data-free initialisation) and creating the metric
issues :class:`spips_bench.errors.UntrainedHeadsWarning`, once per process and variant.
"""

from __future__ import annotations

from typing import Any

import torch

#: The type name under which :class:`SpipsBenchArch` sits in pyiqa's arch registry.
ARCH_TYPE = "spips_bench.SpipsBenchArch"

_ADDED: set[str] = set()


class SpipsBenchArch(torch.nn.Module):
    """A pyiqa network wrapping one spips-bench metric.

    Args:
        metric: spips-bench registry name (``"spips-alex-st"``, ...); the ``metric`` of the entry's
            ``metric_opts``.
        **options: passed to :func:`spips_bench.create_metric` (``checkpoint=``, ``pretrained=``, ...).
    """

    def __init__(self, metric: str, **options: Any) -> None:
        super().__init__()
        from spips_bench.registry import create_metric

        self.metric = create_metric(metric, **options)

    def forward(self, dist: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """``(N, 1)`` scores of ``dist`` against ``ref`` (pyiqa's argument order: target, reference)."""
        return self.metric(dist, ref).view(-1, 1)


def bridged_metric_names() -> list[str]:
    """Names of the registered metrics whose spec sets ``pyiqa_bridge`` (the SPIPS variants' cards do)."""
    from spips_bench.registry import REGISTRY

    return [s.name for s in REGISTRY.specs() if s.pyiqa_bridge]


def register(names: list[str] | None = None, *, overwrite: bool = False) -> list[str]:
    """Add spips-bench metrics to pyiqa's ``create_metric``.

    Args:
        names: spips-bench metric names; default :func:`bridged_metric_names`.
        overwrite: replace entries pyiqa already has under the same name (default: leave them).

    Returns:
        The names that ``pyiqa.create_metric`` now resolves to spips-bench.

    Raises:
        ModuleNotFoundError: pyiqa is not installed (``pip install spips-bench[pyiqa]``).
        UnknownMetricError: a name is not in the spips-bench registry.
    """
    try:
        from pyiqa.default_model_configs import DEFAULT_CONFIGS
        from pyiqa.utils.registry import ARCH_REGISTRY
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "pyiqa is not installed; install it with `pip install spips-bench[pyiqa]` to use this bridge."
        ) from exc
    from spips_bench.registry import get_spec

    if ARCH_TYPE not in ARCH_REGISTRY:
        ARCH_REGISTRY.register(SpipsBenchArch, name=ARCH_TYPE)
    registered: list[str] = []
    for name in names if names is not None else bridged_metric_names():
        spec = get_spec(name)
        existing = DEFAULT_CONFIGS.get(spec.name)
        ours = existing is not None and existing.get("metric_opts", {}).get("type") == ARCH_TYPE
        if existing is not None and not ours and not overwrite:
            continue  # pyiqa's own metric keeps its name
        DEFAULT_CONFIGS[spec.name] = {
            "metric_opts": {"type": ARCH_TYPE, "metric": spec.name},
            "metric_mode": "FR",
            "lower_better": not spec.higher_is_better,
        }
        _ADDED.add(spec.name)
        registered.append(spec.name)
    return registered


def unregister() -> None:
    """Remove every ``DEFAULT_CONFIGS`` entry :func:`register` added (the arch class stays registered)."""
    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    for name in list(_ADDED):
        entry = DEFAULT_CONFIGS.get(name)
        if entry is not None and entry.get("metric_opts", {}).get("type") == ARCH_TYPE:
            del DEFAULT_CONFIGS[name]
        _ADDED.discard(name)
