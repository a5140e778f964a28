"""Segmentation networks from MONAI, by name.

Two architectures per modality keep the guide and the judge of a counterfactual
independent: the guide segmentor of Seg-CFT is a residual ``UNet``; the evaluation
segmentor is a ``BasicUNet`` trained with another seed.

A segmentor may carry its own input normalisation (``normalise="percentile"``): each image's
1st to 99th percentile is mapped to ``[-1, 1]`` inside the network, so the same window applies
in training, as the CFT guide on generated images and as the judge, and an image from another
scanner or exposure reaches the layers with the contrast JSRT's did.
"""

from __future__ import annotations

import torch
from torch import nn
from monai.networks.nets import BasicUNet, SegResNet, UNet

from segcft.utils import InputError

SEGMENTOR_ARCHITECTURES = ("unet", "basicunet", "segresnet")
SEGMENTOR_NORMALISATIONS = ("fixed", "percentile")


class PercentileWindow(nn.Module):
    """Map each image's ``lower`` to ``upper`` quantile (per channel) linearly onto ``[-1, 1]``.

    Differentiable almost everywhere (the quantiles are image values), so a guide that
    carries it still passes gradients to a generated image. Values beyond the quantiles are
    not clipped: the map stays linear and keeps the gradient.
    """

    def __init__(self, lower: float = 0.01, upper: float = 0.99, eps: float = 1e-3) -> None:
        super().__init__()
        if not 0.0 <= lower < upper <= 1.0:
            raise InputError(f"percentile window needs 0 <= lower < upper <= 1, got {lower}, {upper}")
        self.register_buffer("quantiles", torch.tensor([lower, upper]), persistent=False)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(2).float()
        lo, hi = torch.quantile(flat, self.quantiles.to(flat), dim=-1, keepdim=True).unbind(0)
        out = 2.0 * (flat - lo) / (hi - lo).clamp_min(self.eps) - 1.0
        return out.to(x.dtype).view_as(x)


def segmentor(name: str, out_channels: int, in_channels: int = 1, width: int = 16, normalise: str = "fixed") -> nn.Module:
    """A 2-D segmentation network; ``width`` is the number of features of the first level.

    ``normalise``: ``fixed`` takes the pipeline's fixed intensity window as it is;
    ``percentile`` puts a :class:`PercentileWindow` in front of the network.
    """
    if normalise not in SEGMENTOR_NORMALISATIONS:
        raise InputError(f"unknown segmentor normalisation {normalise!r}; known: {list(SEGMENTOR_NORMALISATIONS)}")
    net = _architecture(name, out_channels, in_channels, width)
    return nn.Sequential(PercentileWindow(), net) if normalise == "percentile" else net


def _architecture(name: str, out_channels: int, in_channels: int, width: int) -> nn.Module:
    w = width
    if name == "unet":
        return UNet(2, in_channels, out_channels, channels=(w, 2 * w, 4 * w, 8 * w, 16 * w), strides=(2, 2, 2, 2), num_res_units=2, norm="batch")
    if name == "basicunet":
        return BasicUNet(2, in_channels, out_channels, features=(w, w, 2 * w, 4 * w, 8 * w, w))
    if name == "segresnet":
        return SegResNet(2, init_filters=w, in_channels=in_channels, out_channels=out_channels, blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1))
    raise InputError(f"unknown segmentor architecture {name!r}; known: {list(SEGMENTOR_ARCHITECTURES)}")
