"""Guides for counterfactual fine-tuning: frozen networks that measure a counterfactual's parents.

Every guide compares what it measures on ``x*`` with the counterfactual parents ``pa*`` by
relative error over all the variables it knows, so untouched structures are held in place
too (METHOD.md section 3). The errors are averaged within each group of variables and the
group means summed: a positional guide's regions are a group of their own, added to the
whole structures' mean rather than diluting it.

- :class:`RegressorGuide` (Reg-CFT, the baseline): a CNN regressing the areas from the image.
- :class:`SegmentorGuide` (Seg-CFT): the guide segmentor; differentiable *soft* areas, the
  softmax probability of each class summed and times the pixel area.
- Positional Seg-CFT: a :class:`SegmentorGuide` with regional variables; each structure's
  partition is computed on the *factual* image (from the guide's hard prediction) and held
  fixed while the counterfactual is measured.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from segcft.measure import RegionSpec, partition, region_areas, soft_areas
from segcft.utils import InputError

#: A regional error's scale is at least the partition's mean region area over this number.
REGION_FLOOR_DIVISOR = 8.0


class Guide(nn.Module):
    """A frozen measuring network. Subclasses implement :meth:`measure`."""

    variables: list[str]

    def freeze(self) -> Guide:
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)
        return self

    def train(self, mode: bool = True) -> Guide:  # a guide never leaves eval mode (frozen batch norm)
        return super().train(False)

    def measure(self, x: torch.Tensor, spacing: torch.Tensor, factual: torch.Tensor) -> dict[str, torch.Tensor]:
        """The guide's values of its variables on images ``x`` (differentiable in ``x``)."""
        raise NotImplementedError

    def loss(
        self,
        x_cf: torch.Tensor,
        pa_cf: Mapping[str, torch.Tensor],
        spacing: torch.Tensor,
        factual: torch.Tensor,
        pa: Mapping[str, torch.Tensor] | None = None,
        intervened: Collection[str] = (),
    ) -> torch.Tensor:
        """Relative error between the measured values and ``pa*``: its mean in each of :meth:`groups`, summed.

        With the factual parents ``pa``, each target is the requested *relative* change applied
        to what the guide measures on the factual image, ``m(x) * pa* / pa``: a guide biased on
        an image (soft areas of a segmentor that is not confident everywhere) then does not
        push the counterfactual to undo its own bias. ``intervened`` names the variables ``do()``
        set, for :meth:`consistent`.
        """
        measured = self.measure(x_cf, spacing, factual)
        if pa is None:
            targets = dict(pa_cf)
        else:
            with torch.no_grad():
                reference = self.measure(factual, spacing, factual)
            # a factual value of 0 (an empty plaque sector) has no relative change: its target stays absolute
            targets = {
                v: torch.where(pa[v] > 0, reference[v] * pa_cf[v] / pa[v].clamp(min=1e-6), pa_cf[v]) for v in self.variables
            }
        targets = self.consistent(targets, intervened)
        scales = self.scales(targets)
        errors = {v: (measured[v] - targets[v]).abs() / scales[v] for v in self.variables}
        return sum(torch.stack([errors[v] for v in group], 1).mean() for group in self.groups())

    def groups(self) -> list[list[str]]:
        """The variables whose errors are averaged together; by default all of them."""
        return [list(self.variables)]

    def consistent(self, targets: Mapping[str, torch.Tensor], intervened: Collection[str] = ()) -> dict[str, torch.Tensor]:
        """Targets the guide can meet all at once, given the variables ``do()`` set; by default the targets themselves."""
        return dict(targets)

    def scales(self, targets: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """What each variable's absolute error is divided by: the size of its target."""
        return {v: targets[v].abs().clamp(min=1e-6) for v in self.variables}


class SegmentorGuide(Guide):
    """Soft areas (mm^2) of structures, and optionally of regions, from a frozen segmentor.

    ``variables`` maps each structure variable to its structure; ``regional`` maps each
    regional variable to ``(RegionSpec, region index)``. Images are resized to the
    segmentor's ``size`` and the spacing follows.
    """

    def __init__(
        self,
        network: nn.Module,
        structures: Mapping[str, int],
        size: int,
        variables: Mapping[str, str],
        regional: Mapping[str, tuple[RegionSpec, int]] | None = None,
    ) -> None:
        super().__init__()
        self.network = network
        self.structures = dict(structures)
        self.size = size
        self.structure_of = dict(variables)
        self.regional = dict(regional or {})
        for name, structure in [*self.structure_of.items(), *((v, s.structure) for v, (s, _) in self.regional.items())]:
            if structure not in self.structures:
                raise InputError(f"guide variable {name!r} measures unknown structure {structure!r}")
        self.variables = [*self.structure_of, *self.regional]
        self.freeze()

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """The segmentor's class probabilities ``(B, C, size, size)`` on images ``x`` (differentiable)."""
        return self._probs(x)

    def _probs(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return self.network(x).softmax(1)

    def measure(self, x: torch.Tensor, spacing: torch.Tensor, factual: torch.Tensor) -> dict[str, torch.Tensor]:
        sp = spacing * (x.shape[-1] / self.size)
        probs = self._probs(x)
        areas = soft_areas(probs, self.structures, sp)
        out = {v: areas[s]["mm2"] for v, s in self.structure_of.items()}
        if self.regional:
            with torch.no_grad():
                labels = self._probs(factual).argmax(1)
            maps = {}
            for name, (spec, index) in self.regional.items():
                if spec not in maps:
                    maps[spec] = partition(labels, self.structures, spec)
                occupancy = probs[:, self.structures[spec.structure]]
                out[name] = region_areas(occupancy, maps[spec], spec, sp)[spec.variable_names()[index]]["mm2"]
        return out

    def groups(self) -> list[list[str]]:
        """The whole structures, then the regions: Positional Seg-CFT holds the structures as
        strongly as Seg-CFT does and adds the regions' mean error on top (with one mean over
        both, six or eight variables instead of three or four, every structure's pull halved
        and pos-seg moved the model less than seg on everything; docs/results.md)."""
        return [list(self.structure_of), list(self.regional)] if self.regional else [list(self.structure_of)]

    def consistent(self, targets: Mapping[str, torch.Tensor], intervened: Collection[str] = ()) -> dict[str, torch.Tensor]:
        """For a structure set by ``do()``, its region targets rescaled to add up to its target.

        The regions partition the structure, so they must sum to it. ``do(left_lung_area)``
        leaves the lung's parents, its zones, at their factual values: unreconciled, the guide
        would ask the lung to shrink and every zone to hold, a target no image meets. Rescaled,
        the whole-structure change is spread over the regions in proportion.
        """
        out = dict(targets)
        variable_of = {s: v for v, s in self.structure_of.items()}
        for spec in {spec for spec, _ in self.regional.values()}:
            whole = variable_of.get(spec.structure)
            names = [v for v, (s, _) in self.regional.items() if s == spec]
            if whole not in intervened or len(names) != len(spec.regions):
                continue
            total = torch.stack([targets[v] for v in names]).sum(0)
            scale = torch.where(total > 0, targets[whole] / total.clamp(min=1e-6), torch.ones_like(total))
            for v in names:
                out[v] = targets[v] * scale
        return out

    def scales(self, targets: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A region's error is relative to its target, but never to less than an eighth of the
        mean region of its partition: a plaque sector is often empty (target 0), and a relative
        error there would be infinite."""
        out = super().scales(targets)
        for spec in {spec for spec, _ in self.regional.values()}:
            names = [v for v, (s, _) in self.regional.items() if s == spec]
            floor = torch.stack([targets[v] for v in names]).sum(0).abs() / (REGION_FLOOR_DIVISOR * len(spec.regions))
            for v in names:
                out[v] = torch.maximum(out[v], floor)
        return out


class RegressorGuide(Guide):
    """A CNN that regresses standardised log areas; measured areas are ``exp(mean + std * output)``."""

    def __init__(self, network: nn.Module, variables: Sequence[str], stats: Mapping[str, tuple[float, float]]) -> None:
        super().__init__()
        self.network = network
        self.variables = list(variables)
        self.register_buffer("mean", torch.tensor([stats[v][0] for v in self.variables], dtype=torch.float32))
        self.register_buffer("std", torch.tensor([stats[v][1] for v in self.variables], dtype=torch.float32))
        self.freeze()

    def measure(self, x: torch.Tensor, spacing: torch.Tensor, factual: torch.Tensor) -> dict[str, torch.Tensor]:
        out = torch.exp(self.mean + self.std * self.network(x))
        return {v: out[:, i] for i, v in enumerate(self.variables)}
