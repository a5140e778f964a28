"""Areas of labelled structures, hard (from label maps) and soft (from probabilities).

Conventions: label maps are integer tensors ``(B, H, W)`` or ``(B, 1, H, W)``; class
probabilities are ``(B, C, H, W)`` with channel ``c`` the probability of label ``c``.
Spacing is ``(row_mm, col_mm)`` per image, a ``(B, 2)`` tensor or one pair for all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

Spacing = torch.Tensor | Sequence[float] | None


def pixel_area_mm2(spacing: Spacing, batch: int, device: torch.device | None = None) -> torch.Tensor:
    """Area of one pixel in mm^2 for each of ``batch`` images (1 where spacing is None)."""
    if spacing is None:
        return torch.ones(batch, device=device)
    sp = torch.as_tensor(spacing, dtype=torch.float32, device=device)
    if sp.ndim == 1:
        sp = sp.expand(batch, 2)
    if sp.shape != (batch, 2):
        raise ValueError(f"spacing must be (2,) or ({batch}, 2), got {tuple(sp.shape)}")
    return sp[:, 0] * sp[:, 1]


def _as_batch_labels(labels: torch.Tensor) -> torch.Tensor:
    if labels.ndim == 4:
        if labels.shape[1] != 1:
            raise ValueError(f"label map must have one channel, got shape {tuple(labels.shape)}")
        labels = labels[:, 0]
    if labels.ndim != 3:
        raise ValueError(f"label map must be (B, H, W) or (B, 1, H, W), got {tuple(labels.shape)}")
    return labels.long()


def hard_areas(
    labels: torch.Tensor, structures: Mapping[str, int], spacing: Spacing = None
) -> dict[str, dict[str, torch.Tensor]]:
    """Pixel counts and mm^2 areas of each named structure in a batch of label maps.

    Returns ``{name: {"px": (B,), "mm2": (B,)}}``.
    """
    labels = _as_batch_labels(labels)
    px_area = pixel_area_mm2(spacing, labels.shape[0], labels.device)
    out = {}
    for name, index in structures.items():
        px = (labels == index).flatten(1).sum(1).float()
        out[name] = {"px": px, "mm2": px * px_area}
    return out


def soft_areas(
    probs: torch.Tensor, structures: Mapping[str, int], spacing: Spacing = None
) -> dict[str, dict[str, torch.Tensor]]:
    """Differentiable areas: the sum of each class's probability times the pixel area.

    ``probs`` is ``(B, C, H, W)`` (softmax output). Gradients flow to ``probs``; this is
    what Seg-CFT compares with the counterfactual parents.
    """
    if probs.ndim != 4:
        raise ValueError(f"probabilities must be (B, C, H, W), got {tuple(probs.shape)}")
    px_area = pixel_area_mm2(spacing, probs.shape[0], probs.device)
    out = {}
    for name, index in structures.items():
        if not 0 <= index < probs.shape[1]:
            raise ValueError(f"structure {name!r} has label {index}, outside {probs.shape[1]} channels")
        px = probs[:, index].flatten(1).sum(1)
        out[name] = {"px": px, "mm2": px * px_area}
    return out
