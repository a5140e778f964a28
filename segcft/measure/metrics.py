"""Ignite/MONAI metrics on label maps that MONAI does not provide."""

from __future__ import annotations

import torch
from monai.metrics import CumulativeIterationMetric
from monai.metrics.utils import do_metric_reduction


class AreaErrorMetric(CumulativeIterationMetric):
    """Per-class error of the predicted area against the true area.

    Inputs are one-hot ``(B, C, H, W)`` predictions and labels (as after MONAI's
    ``AsDiscrete``). ``relative=True`` gives the absolute percentage error (the area MAPE
    that bounds every later effectiveness number), otherwise the absolute error in pixels.
    """

    def __init__(self, include_background: bool = False, relative: bool = True, reduction: str = "mean_batch") -> None:
        super().__init__()
        self.include_background = include_background
        self.relative = relative
        self.reduction = reduction

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        pred = y_pred.flatten(2).sum(2).float()
        true = y.flatten(2).sum(2).float()
        err = (pred - true).abs()
        if self.relative:
            err = 100.0 * err / true.clamp(min=1.0)
        return err if self.include_background else err[:, 1:]

    def aggregate(self) -> torch.Tensor:  # type: ignore[override]
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor):
            raise ValueError("the metric buffer is empty or not a tensor")
        return do_metric_reduction(data, self.reduction)[0]
