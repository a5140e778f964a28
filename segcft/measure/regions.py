"""Region partitions of a structure, for positional (regional) variables.

A partition is a set of region maps ``(B, R, H, W)`` that sum to one at every pixel, so
the regional areas of any mask or probability map add up to its total area. It is
computed once on the *factual* label map and then held fixed: a partition recomputed on
a counterfactual would move with the change it is meant to measure.

Two kinds:

- ``bands``: equal bands along an axis of the structure's extent (axis 0 = rows, i.e. the
  cranio-caudal axis of a PA chest radiograph: upper/middle/lower lung zones). Pixels
  beyond the extent belong to the nearest band.
- ``sectors``: equal angular sectors around the centroid of a reference structure (plaque
  around the lumen). Angles are counter-clockwise as displayed, 0 degrees pointing to the
  image's right (3 o'clock), 90 degrees up (12 o'clock).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from segcft.measure.areas import Spacing, _as_batch_labels, pixel_area_mm2


def region_variable_name(structure: str, region: str) -> str:
    """The one name of a regional area variable, used in datalists, configs and reports."""
    return f"{structure}_{region}_area"


@dataclass(frozen=True)
class RegionSpec:
    """How to subdivide one structure into named regions.

    ``kind`` is ``"bands"`` (with ``axis``) or ``"sectors"`` (around the centroid of
    ``centre_of``, default the structure itself, rotated by ``offset_deg``).
    """

    structure: str
    kind: str
    regions: Sequence[str]
    axis: int = 0
    centre_of: str | None = None
    offset_deg: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("bands", "sectors"):
            raise ValueError(f"region kind must be 'bands' or 'sectors', got {self.kind!r}")
        if len(self.regions) < 2:
            raise ValueError(f"a partition of {self.structure!r} needs at least two regions")

    @classmethod
    def from_dict(cls, d: Mapping) -> RegionSpec:
        return cls(**{k: (tuple(v) if k == "regions" else v) for k, v in d.items()})

    def variable_names(self) -> list[str]:
        return [region_variable_name(self.structure, r) for r in self.regions]


def axial_bands(mask: torch.Tensor, n: int, axis: int = 0) -> torch.Tensor:
    """Equal bands along ``axis`` (0 rows, 1 columns) of each mask's extent: ``(B, n, H, W)``.

    An empty mask gets bands over the whole image.
    """
    if mask.ndim != 3:
        raise ValueError(f"mask must be (B, H, W), got {tuple(mask.shape)}")
    b, h, w = mask.shape
    length = (h, w)[axis]
    coords = torch.arange(length, device=mask.device, dtype=torch.float32)
    present = mask.bool().any(dim=2 - axis)  # (B, length): rows (or columns) the structure touches
    lo = torch.where(present.any(1), present.float().argmax(1), torch.zeros(b, device=mask.device)).float()
    hi = torch.where(
        present.any(1),
        length - 1 - present.flip(1).float().argmax(1),
        torch.full((b,), length - 1, device=mask.device),
    ).float()
    extent = (hi - lo + 1).clamp(min=1)
    idx = ((coords[None] - lo[:, None]) / extent[:, None] * n).floor().clamp(0, n - 1).long()  # (B, length)
    onehot = torch.nn.functional.one_hot(idx, n).permute(0, 2, 1).float()  # (B, n, length)
    if axis == 0:
        return onehot[:, :, :, None].expand(b, n, h, w).contiguous()
    return onehot[:, :, None, :].expand(b, n, h, w).contiguous()


def centroid(mask: torch.Tensor) -> torch.Tensor:
    """Centroid ``(row, col)`` of each mask ``(B, H, W)``; the image centre if empty."""
    b, h, w = mask.shape
    m = mask.float()
    total = m.flatten(1).sum(1)
    rows = torch.arange(h, device=mask.device, dtype=torch.float32)
    cols = torch.arange(w, device=mask.device, dtype=torch.float32)
    r = (m.sum(2) * rows).sum(1) / total.clamp(min=1)
    c = (m.sum(1) * cols).sum(1) / total.clamp(min=1)
    empty = total == 0
    r = torch.where(empty, torch.full_like(r, (h - 1) / 2), r)
    c = torch.where(empty, torch.full_like(c, (w - 1) / 2), c)
    return torch.stack([r, c], 1)


def angular_sectors(centre: torch.Tensor, n: int, shape: tuple[int, int], offset_deg: float = 0.0) -> torch.Tensor:
    """Equal angular sectors around ``centre`` ``(B, 2)`` as ``(B, n, H, W)`` one-hot maps."""
    h, w = shape
    rows = torch.arange(h, device=centre.device, dtype=torch.float32)[None, :, None]
    cols = torch.arange(w, device=centre.device, dtype=torch.float32)[None, None, :]
    dy = -(rows - centre[:, 0, None, None])  # up is positive
    dx = cols - centre[:, 1, None, None]
    angle = (torch.rad2deg(torch.atan2(dy, dx)) - offset_deg) % 360.0
    idx = (angle / (360.0 / n)).floor().clamp(0, n - 1).long()
    return torch.nn.functional.one_hot(idx, n).permute(0, 3, 1, 2).float()


def partition(labels: torch.Tensor, structures: Mapping[str, int], spec: RegionSpec) -> torch.Tensor:
    """Region maps ``(B, R, H, W)`` for ``spec``, computed on the factual label map."""
    labels = _as_batch_labels(labels)
    for name in (spec.structure, spec.centre_of or spec.structure):
        if name not in structures:
            raise KeyError(f"unknown structure {name!r} in region spec; known: {sorted(structures)}")
    n = len(spec.regions)
    if spec.kind == "bands":
        return axial_bands(labels == structures[spec.structure], n, spec.axis)
    centre = centroid(labels == structures[spec.centre_of or spec.structure])
    return angular_sectors(centre, n, tuple(labels.shape[-2:]), spec.offset_deg)


def region_areas(
    occupancy: torch.Tensor, regions: torch.Tensor, spec: RegionSpec, spacing: Spacing = None
) -> dict[str, dict[str, torch.Tensor]]:
    """Per-region areas of one structure.

    ``occupancy`` is ``(B, H, W)``: a hard 0/1 mask or the structure's soft probability.
    Returns ``{variable_name: {"px": (B,), "mm2": (B,)}}``; the regions sum to the total.
    """
    if occupancy.ndim != 3 or regions.ndim != 4 or regions.shape[0] != occupancy.shape[0]:
        raise ValueError(
            f"occupancy (B, H, W) and regions (B, R, H, W) must match, got "
            f"{tuple(occupancy.shape)} and {tuple(regions.shape)}"
        )
    px_area = pixel_area_mm2(spacing, occupancy.shape[0], occupancy.device)
    px = (occupancy.float()[:, None] * regions).flatten(2).sum(2)  # (B, R)
    return {
        name: {"px": px[:, k], "mm2": px[:, k] * px_area}
        for k, name in enumerate(spec.variable_names())
    }


__all__ = ["RegionSpec", "angular_sectors", "axial_bands", "centroid", "partition", "region_areas"]


def regional_area_values(
    labels: torch.Tensor, structures: Mapping[str, int], specs: Sequence[RegionSpec], spacing: Spacing
) -> dict[str, float]:
    """Regional areas (mm^2) of one ``(H, W)`` label map, for the parents recorded in datalists."""
    lab = torch.as_tensor(labels).long()[None]
    out = {}
    for spec in specs:
        occupancy = (lab == structures[spec.structure]).float()
        for name, area in region_areas(occupancy, partition(lab, structures, spec), spec, spacing).items():
            out[name] = round(float(area["mm2"][0]), 3)
    return out
