"""Segmentation networks from MONAI, by name.

Two architectures per modality keep the guide and the judge of a counterfactual
independent: the guide segmentor of Seg-CFT is a residual ``UNet``; the evaluation
segmentor is a ``BasicUNet`` trained with another seed.
"""

from __future__ import annotations

from torch import nn
from monai.networks.nets import BasicUNet, SegResNet, UNet

from segcft.utils import InputError

SEGMENTOR_ARCHITECTURES = ("unet", "basicunet", "segresnet")


def segmentor(name: str, out_channels: int, in_channels: int = 1, width: int = 16) -> nn.Module:
    """A 2-D segmentation network; ``width`` is the number of features of the first level."""
    w = width
    if name == "unet":
        return UNet(2, in_channels, out_channels, channels=(w, 2 * w, 4 * w, 8 * w, 16 * w), strides=(2, 2, 2, 2), num_res_units=2, norm="batch")
    if name == "basicunet":
        return BasicUNet(2, in_channels, out_channels, features=(w, w, 2 * w, 4 * w, 8 * w, w))
    if name == "segresnet":
        return SegResNet(2, init_filters=w, in_channels=in_channels, out_channels=out_channels, blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1))
    raise InputError(f"unknown segmentor architecture {name!r}; known: {list(SEGMENTOR_ARCHITECTURES)}")
