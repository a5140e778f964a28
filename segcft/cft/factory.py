"""The parts of a CFT run built from a datalist and a generator: guide variables, guides, the sampler.

The CFT bundles (``bundles/*_cft``) reach these through ``segcft.bundle``. What a guide
measures follows METHOD.md section 3: every whole-structure area in mm^2 among the
generator's variables, plus, for positional Seg-CFT, the generator's regional areas.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import ignite.distributed as idist
import torch
from torch import nn

from segcft.causal.scm import DeepSCM
from segcft.cft.guides import Guide, RegressorGuide, SegmentorGuide
from segcft.cft.regressor import regressor_network, train_regressor
from segcft.cft.sampling import InterventionSampler
from segcft.data.datalist import structures_of
from segcft.measure import RegionSpec
from segcft.models.spatial import SpatialMechanism, spatial_settings
from segcft.utils import InputError, atomic_path

GUIDES = ("seg", "pos-seg", "reg")
#: A method's name with this prefix fine-tunes a spatial mechanism with the guide of the rest.
SPATIAL_PREFIX = "spatial-"


def guide_kind(method: str) -> tuple[str, bool]:
    """``(guide, spatial)`` of a CFT method name: ``"spatial-seg"`` -> ``("seg", True)``."""
    spatial = method.startswith(SPATIAL_PREFIX)
    return (method[len(SPATIAL_PREFIX):] if spatial else method), spatial


def structure_variables(datalist: Mapping, variables: Sequence[str]) -> dict[str, str]:
    """``{variable: structure}`` for the generator's whole-structure areas in mm^2 (regional ones excluded)."""
    described = datalist["variables"]
    return {
        v: described[v]["structure"]
        for v in variables
        if described[v].get("structure") and described[v].get("unit") == "mm2" and not described[v].get("region")
    }


def regional_variables(datalist: Mapping, variables: Sequence[str]) -> dict[str, tuple[RegionSpec, int]]:
    """``{variable: (partition, region index)}`` for the generator's regional areas (the datalist's ``regions``)."""
    specs = [RegionSpec.from_dict(r) for r in datalist.get("regions", [])]
    return {v: (spec, spec.variable_names().index(v)) for spec in specs for v in spec.variable_names() if v in variables}


def make_guide(
    kind: str,
    datalist: Mapping,
    variables: Sequence[str],
    segmentor: Callable[[], tuple[nn.Module, int]],
    regressor: Callable[[list[str]], Guide],
) -> Guide:
    """The frozen guide of ``kind`` for a generator of ``variables``.

    ``reg`` calls ``regressor(structure variables)``. ``seg`` and ``pos-seg`` call
    ``segmentor()`` for the guide network and its image size; ``pos-seg`` adds the regional
    variables. Only the callable the kind needs is called.
    """
    if kind not in GUIDES:
        raise InputError(f"guide must be one of {list(GUIDES)}, got {kind!r}")
    structure_of = structure_variables(datalist, variables)
    if kind == "reg":
        return regressor(list(structure_of))
    regional = regional_variables(datalist, variables) if kind == "pos-seg" else None
    if kind == "pos-seg" and not regional:
        raise InputError("guide 'pos-seg' needs a generator whose variables include regional areas (e.g. left_lung_lower_area)")
    network, size = segmentor()
    return SegmentorGuide(network, structures_of(datalist), size, structure_of, regional)


def regressor_guide(
    variables: list[str],
    path: str | os.PathLike,
    dataset: Sequence[Mapping],
    epochs: int = 40,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> RegressorGuide:
    """The Reg-CFT guide stored at ``path``; if there is none, one trained on ``dataset`` and stored there.

    ``dataset`` holds preprocessed items (``image`` and ``parents``) at the generator's size.
    Under ``torchrun`` every process trains the same regressor (same data and seed) and rank 0
    alone stores it.
    """
    path = Path(path)
    if path.is_file():
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state["variables"] != variables:
            raise InputError(f"{path}: regressor of {state['variables']}, but the guide needs {variables}; delete it to retrain")
        guide = RegressorGuide(regressor_network(state["image_size"], len(variables)), variables, dict.fromkeys(variables, (0.0, 1.0)))
        guide.load_state_dict(state["guide"])
        return guide.to(device).freeze()
    images = torch.stack([torch.as_tensor(item["image"]).as_subclass(torch.Tensor) for item in dataset])
    parents = {v: torch.stack([torch.as_tensor(item["parents"][v]) for item in dataset]) for v in variables}
    guide = train_regressor(images, parents, variables, epochs=epochs, seed=seed, device=device).to(device)
    if idist.get_rank() == 0:
        with atomic_path(path) as tmp:
            torch.save({"variables": variables, "image_size": images.shape[-1], "guide": guide.state_dict()}, tmp)
    return guide


def intervention_sampler(targets: Sequence[str], scm: DeepSCM, seed: int = 0) -> InterventionSampler:
    """The sampler of CFT's interventions over ``targets``, which must be continuous variables of ``scm``."""
    if not targets:
        raise InputError("targets: CFT needs at least one variable to intervene on")
    for name in targets:
        if scm.graph.kinds.get(name) != "continuous":
            raise InputError(f"targets: {name!r} is not a continuous variable of the generator ({scm.variables})")
    return InterventionSampler(list(targets), scm.support, seed=seed)


def spatial_mechanism(
    datalist: Mapping, variables: Sequence[str], segmentor_net: nn.Module, segmentor_size: int, **options
) -> SpatialMechanism:
    """A fresh spatial mechanism for a generator of ``variables``: it moves the structures of the
    datalist's whole-structure area variables, placed by the (frozen, copied) ``segmentor_net``."""
    settings = spatial_settings(structure_variables(datalist, variables), structures_of(datalist), segmentor_size, **options)
    net = copy.deepcopy(segmentor_net)
    return SpatialMechanism(settings, net, variables)
