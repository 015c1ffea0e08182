"""Gradients through the metrics: a warning where a configuration's gradient is zero.

Some defaults reproduce official scripts that round MATLAB's ``rgb2gray`` output to 8 bits. Rounding is
piecewise constant, so autograd returns exactly zero gradients there, silently. Every metric carries a
``differentiable`` attribute (mirrored in its card); a metric whose configuration is not differentiable
warns once per instance when it is called on an input that requires grad, and names the option that
gives real gradients.
"""

from __future__ import annotations

import warnings

import torch


def warn_if_not_differentiable(metric: torch.nn.Module, *inputs: torch.Tensor, fix: str) -> None:
    """Warn (``UserWarning``, once per metric instance) when a non-differentiable configuration gets an
    input that requires grad while autograd is recording.

    Args:
        metric: the metric; reads its ``differentiable`` and ``name`` attributes.
        inputs: the tensors the metric was called on.
        fix: the option that makes the metric differentiable, as the user would write it.
    """
    if getattr(metric, "differentiable", True) or metric.__dict__.get("_warned_no_gradient", False):
        return
    if not torch.is_grad_enabled() or not any(t.requires_grad for t in inputs):
        return
    metric.__dict__["_warned_no_gradient"] = True
    warnings.warn(
        f"{getattr(metric, 'name', type(metric).__name__)} ({metric.extra_repr()}) rounds its luminance to 8 "
        f"bits as MATLAB's rgb2gray does, so its gradient with respect to the images is exactly zero; for a "
        f"loss, create it with {fix}.",
        UserWarning,
        stacklevel=6,  # the caller of metric(dist, ref): through forward and Module.__call__
    )
