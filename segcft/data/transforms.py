"""MONAI dictionary transforms that load 2-D images with their pixel spacing, and pipelines.

The pixel spacing lives in the affine of the image's ``MetaTensor``: MONAI updates the
affine through padding and resizing, so the spacing in mm stays correct at any
resolution. :class:`StoreSpacingd` copies it into a plain ``(2,)`` tensor for batching.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import (
    CastToTyped,
    Compose,
    EnsureTyped,
    MapTransform,
    RandAdjustContrastd,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandHistogramShiftd,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
    Resized,
    ScaleIntensityRanged,
    SpatialPad,
)

from segcft.data.io import read_image, read_label_map
from segcft.utils import InputError

logger = logging.getLogger(__name__)

#: Intensity windows mapped to [-1, 1]: radiograph display values, and CT in HU.
INTENSITY_WINDOWS: dict[str, tuple[float, float]] = {"cxr": (0.0, 1.0), "ccta": (-300.0, 900.0)}

#: The segmentors' training jitter: rotation (radians, about 10 degrees), translation (share of
#: the image side) and the SD of additive Gaussian noise (on the [-1, 1] scale). CFT's guide
#: views (``segcft.cft.views``) draw from the same ranges.
AUGMENT_ROTATE, AUGMENT_TRANSLATE, AUGMENT_NOISE = 0.17, 0.06, 0.02


def spacing_affine(spacing: Sequence[float]) -> torch.Tensor:
    """A 4 x 4 affine whose first two axes (rows, columns) have ``spacing`` mm."""
    return torch.diag(torch.tensor([float(spacing[0]), float(spacing[1]), 1.0, 1.0], dtype=torch.float64))


def spacing_of(img: MetaTensor) -> torch.Tensor:
    """``(row_mm, col_mm)`` of a ``(C, H, W)`` MetaTensor, read from its affine."""
    affine = torch.as_tensor(img.affine, dtype=torch.float64)
    return torch.linalg.norm(affine[:2, :2], dim=0).float()


class LoadImageWithSpacingd(MapTransform):
    """Load DICOM, PNG or NIfTI images as ``(1, H, W)`` MetaTensors carrying their spacing.

    The spacing comes from the file (DICOM PixelSpacing, then ImagerPixelSpacing; NIfTI
    pixdim), else from the item's ``spacing_key`` field (datalists of PNGs), else from
    ``default_spacing``. With none of these, 1 mm is assumed and the metadata says so.
    """

    def __init__(
        self,
        keys: KeysCollection,
        spacing_key: str = "spacing_mm",
        default_spacing: Sequence[float] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.spacing_key = spacing_key
        self.default_spacing = default_spacing

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            arr, meta = read_image(d[key])
            spacing, source = meta.spacing, meta.spacing_source
            if spacing is None and d.get(self.spacing_key) is not None:
                spacing, source = tuple(d[self.spacing_key]), "datalist"
            if spacing is None and self.default_spacing is not None:
                spacing, source = tuple(self.default_spacing), "default"
            if spacing is None:
                logger.warning("%s: no valid pixel spacing; assuming 1 mm per pixel", d[key])
                spacing, source = (1.0, 1.0), "assumed"
            d[key] = MetaTensor(
                torch.from_numpy(arr)[None],
                affine=spacing_affine(spacing),
                meta={
                    "filename_or_obj": str(d[key]),
                    "spacing_source": source,
                    "photometric": meta.photometric,
                    "modality": meta.modality,
                    "format": meta.format,
                    "original_shape": list(meta.original_shape),
                },
            )
        return d


class LoadLabelMapd(MapTransform):
    """Load integer label maps (PNG or NIfTI) aligned with an already loaded image.

    The label map takes the image's affine; a label map of another size than its image is
    refused with both file names.
    """

    def __init__(self, keys: KeysCollection, image_key: str = "image", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.image_key = image_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        image = d[self.image_key]
        for key in self.key_iterator(d):
            path = d[key]
            labels = read_label_map(path)
            if tuple(labels.shape) != tuple(image.shape[-2:]):
                raise InputError(
                    f"{path}: label map is {labels.shape[0]} x {labels.shape[1]} but its image "
                    f"{image.meta.get('filename_or_obj')} is {image.shape[-2]} x {image.shape[-1]}"
                )
            d[key] = MetaTensor(
                torch.from_numpy(labels.astype(np.int64))[None],
                affine=image.affine.clone(),
                meta={"filename_or_obj": str(path)},
            )
        return d


class PadToSquared(MapTransform):
    """Pad each image symmetrically to a square so that resizing keeps the aspect ratio."""

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            side = max(d[key].shape[-2:])
            d[key] = SpatialPad((side, side), method="symmetric")(d[key])
        return d


class StoreSpacingd(MapTransform):
    """Write the current ``(row_mm, col_mm)`` of ``keys`` (from the affine) into ``out_key``."""

    def __init__(self, keys: KeysCollection, out_key: str = "spacing", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.out_key = out_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.out_key] = spacing_of(d[key])
        return d


class ParentsToTensord(MapTransform):
    """Convert the item's ``parents`` dict to float32 tensors, refusing NaN and missing values."""

    def __init__(self, variables: Sequence[str], key: str = "parents") -> None:
        super().__init__(key)
        self.variables = list(variables)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        parents = d.get(self.keys[0], {})
        out = {}
        for name in self.variables:
            if name not in parents:
                raise InputError(f"{d.get('case', d.get('image'))}: parent {name!r} is missing")
            value = float(parents[name])
            if not np.isfinite(value):
                raise InputError(f"{d.get('case', d.get('image'))}: parent {name!r} is {value}")
            out[name] = torch.tensor(value, dtype=torch.float32)
        d[self.keys[0]] = out
        return d


class Pipeline(Compose):
    """A MONAI ``Compose`` that lets the project's :class:`InputError` through unwrapped.

    MONAI wraps any exception raised inside a transform in a ``RuntimeError``; the user
    should see the original message, which names the bad file or field.
    """

    def __call__(self, input_, *args, **kwargs):
        try:
            return super().__call__(input_, *args, **kwargs)
        except RuntimeError as e:
            cause = e.__cause__
            while cause is not None and not isinstance(cause, InputError):
                cause = cause.__cause__
            if cause is None:
                raise
            raise cause from None


def image_pipeline(
    size: int,
    modality: str = "cxr",
    *,
    with_label: bool = True,
    variables: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
    default_spacing: Sequence[float] | None = None,
) -> Pipeline:
    """Load, (pad to square,) resize to ``size`` and scale to ``[-1, 1]``, tracking spacing.

    Images resize with area averaging (anti-aliased), label maps with nearest neighbour.
    Tensors move to ``device`` right after loading, so the rest runs there too.
    """
    if modality not in INTENSITY_WINDOWS:
        raise InputError(f"unknown modality {modality!r}; known: {sorted(INTENSITY_WINDOWS)}")
    keys = ["image", "label"] if with_label else ["image"]
    a_min, a_max = INTENSITY_WINDOWS[modality]
    transforms: list = [LoadImageWithSpacingd("image", default_spacing=default_spacing)]
    if with_label:
        transforms.append(LoadLabelMapd("label"))
    transforms += [
        EnsureTyped(keys, device=torch.device(device), track_meta=True),
        PadToSquared(keys),
        Resized(keys, spatial_size=(size, size), mode=["area", "nearest"][: len(keys)]),
        ScaleIntensityRanged("image", a_min=a_min, a_max=a_max, b_min=-1.0, b_max=1.0, clip=True),
        StoreSpacingd("image"),
    ]
    if with_label:
        transforms.append(CastToTyped("label", dtype=torch.long))
    if variables is not None:
        transforms.append(ParentsToTensord(variables))
    return Pipeline(transforms)


AUGMENTATIONS = ("anatomy", "scanners")


def augmentation_transforms(modality: str, size: int, kind: str = "anatomy") -> list:
    """Training augmentation that respects anatomy.

    Chest radiographs are lateralised (the left lung is on the image's right), so they get
    small affine jitter, contrast and noise but never a flip. Coronary cross-sections have
    no handedness that the labels depend on: they also get flips and quarter turns.

    ``kind="scanners"`` widens it towards other scanners, exposures and patients: stronger
    gamma, exposure (intensity scale and offset), a random monotone histogram shift, blur,
    more noise and larger scale and rotation jitter. Still no flip for radiographs.
    """
    if kind not in AUGMENTATIONS:
        raise InputError(f"unknown augmentation {kind!r}; known: {list(AUGMENTATIONS)}")
    keys = ["image", "label"]
    wide = kind == "scanners"
    transforms: list = [
        RandAffined(
            keys,
            prob=0.8,
            rotate_range=AUGMENT_ROTATE * (1.5 if wide else 1.0),
            scale_range=0.2 if wide else 0.1,
            translate_range=AUGMENT_TRANSLATE * size,
            mode=["bilinear", "nearest"],
            padding_mode="border",
        ),
        RandAdjustContrastd("image", prob=0.5 if wide else 0.3, gamma=(0.5, 2.0) if wide else (0.7, 1.5)),
    ]
    if wide:
        transforms += [
            RandScaleIntensityd("image", factors=0.3, prob=0.3),
            RandShiftIntensityd("image", offsets=0.3, prob=0.3),
            RandHistogramShiftd("image", num_control_points=(5, 10), prob=0.3),
            RandGaussianSmoothd("image", sigma_x=(0.25, 1.5), sigma_y=(0.25, 1.5), prob=0.3),
        ]
    transforms.append(RandGaussianNoised("image", prob=0.3, std=AUGMENT_NOISE * (2.5 if wide else 1.0)))
    if modality == "ccta":
        transforms += [RandFlipd(keys, prob=0.5, spatial_axis=1), RandRotate90d(keys, prob=0.5)]
    return transforms


def segmentation_transforms(
    size: int, modality: str, train: bool, device: str | torch.device = "cpu", augmentation: str = "anatomy"
) -> Pipeline:
    """The segmentor's pipeline: :func:`image_pipeline`, plus augmentation (of that kind) when training."""
    base = image_pipeline(size, modality, device=device)
    if not train:
        return base
    return Pipeline([*base.transforms, *augmentation_transforms(modality, size, augmentation), CastToTyped("label", dtype=torch.long)])
