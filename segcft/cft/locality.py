"""The locality terms of Seg-CFT on the direct HVAE output (:class:`~segcft.cft.recipe.LocalityTerms`).

The seeds' loss constrains a few scalar areas and nothing else; the cheapest way to meet them
is to repaint intensities everywhere, or to make the guide unsure without moving its argmax.
These terms hold what should not change: outside a band around the structures whose variable
changes, the guide's class probabilities and the pixels stay those of the factual image.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from segcft.cft.guides import SegmentorGuide
from segcft.cft.recipe import LocalityTerms
from segcft.utils import InputError

EPS = 1e-6


def changing_band(
    labels: torch.Tensor, guide: SegmentorGuide, pa: Mapping[str, torch.Tensor], pa_cf: Mapping[str, torch.Tensor], band: int
) -> torch.Tensor:
    """``(B, 1, s, s)``: 1 within ``band`` px of a structure whose variable changes in that sample, else 0.

    ``labels`` are the guide's factual labels ``(B, s, s)``. A variable changes where ``pa*``
    differs from ``pa`` (the intervened one and its descendants); a sample where nothing
    changes has an empty band, so all of it is held.
    """
    mask = torch.zeros_like(labels, dtype=torch.bool)
    for variable, structure in guide.structure_of.items():
        if variable not in pa_cf:
            continue
        changed = (pa_cf[variable] - pa[variable]).abs() > EPS * pa[variable].abs().clamp(min=1.0)
        mask |= (labels == guide.structures[structure]) & changed[:, None, None]
    mask = mask.float()[:, None]
    return F.max_pool2d(mask, 2 * band + 1, stride=1, padding=band) if band > 0 else mask


def locality_loss(
    guide: SegmentorGuide,
    x: torch.Tensor,
    x_cf: torch.Tensor,
    pa: Mapping[str, torch.Tensor],
    pa_cf: Mapping[str, torch.Tensor],
    terms: LocalityTerms,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The weighted sum of the active terms, and each term's value for the logs."""
    if not isinstance(guide, SegmentorGuide):
        raise InputError("the locality terms need a segmentor guide (Seg-CFT or Positional Seg-CFT), not a regressor")
    with torch.no_grad():
        p = guide.probabilities(x).float()
        outside = 1.0 - changing_band(p.argmax(1), guide, pa, pa_cf, terms.band)
    p_cf = guide.probabilities(x_cf).float()
    log_cf = p_cf.clamp(min=EPS).log()
    values: dict[str, torch.Tensor] = {}
    if terms.hold_weight > 0:
        kl = (p * (p.clamp(min=EPS).log() - log_cf)).sum(1, keepdim=True)
        values["hold"] = (kl * outside).sum() / outside.sum().clamp(min=1.0)
    if terms.pixel_weight > 0:
        out_px = F.interpolate(outside, size=tuple(x.shape[-2:]), mode="nearest")
        values["pixel"] = ((x_cf - x).abs().float() * out_px).sum() / out_px.sum().clamp(min=1.0)
    if terms.entropy_weight > 0:
        values["entropy"] = -(p_cf * log_cf).sum(1).mean()
    weights = {"hold": terms.hold_weight, "pixel": terms.pixel_weight, "entropy": terms.entropy_weight}
    loss = sum(weights[k] * v for k, v in values.items())
    return torch.as_tensor(loss, device=x.device), {k: float(v.detach()) for k, v in values.items()}
