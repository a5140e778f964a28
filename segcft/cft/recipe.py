"""The fine-tuning recipe that ``segcft bench cft``, the CFT bundles and ``finetune`` share by default.

The values are the ones docs/results.md supports on JSRT ("an EMA of the fine-tuned weights
on four base models"): 900 AdamW steps at 1e-4 after a 20-step warm-up, lambda ascending at
0.3, guide targets relative to the factual measurement, and the fine-tuned model returned as
an EMA (decay 0.995) of its weights, which kept the ELBO bound on 8 of 8 runs where the last
iterate kept it on 3. The bundles' ``train.json`` repeat the values; a test holds them equal.

:data:`SPATIAL` is the recipe of the spatial-intensity mechanism
(:class:`~segcft.models.spatial.SpatialMechanism`): its head starts from nothing, so it
trains faster and shorter, and nothing of the base model moves, so it needs no EMA.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from segcft.utils import InputError


@dataclass(frozen=True)
class Recipe:
    """Settings of one counterfactual fine-tuning run (see METHOD.md section 3 for the Lagrangian)."""

    steps: int = 900
    batch_size: int = 16
    lr: float = 1e-4
    warmup: int = 20
    guide_weight: float = 50.0
    lagrange_lr: float = 0.3
    damping: float = 10.0
    lagrange_init: float = 0.0
    relative_targets: bool = True
    guide_views: float = 0.0
    ema_decay: float = 0.995
    eps_slack: float = 0.02
    grad_clip: float = 200.0


RECIPE = Recipe()


@dataclass(frozen=True)
class SpatialRecipe:
    """Settings of fine-tuning a spatial mechanism's head, and of the mechanism itself.

    ``bending_weight`` weighs the displacement's bending energy (MONAI ``BendingEnergyLoss``),
    ``sparse_weight`` the L1 norm of the intensity term; the last six fields are those of
    :class:`~segcft.models.spatial.SpatialSettings`. ``max_intensity`` 0 turns the intensity
    term off: a chest radiograph's structures change by moving, and on the chest phantom an
    intensity term of 0.25 repainted the lungs instead (docs/research).
    """

    steps: int = 200
    batch_size: int = 16
    lr: float = 1e-3
    warmup: int = 20
    guide_weight: float = 50.0
    bending_weight: float = 1.0
    sparse_weight: float = 1.0
    grad_clip: float = 200.0
    width: int = 16
    max_displacement: float = 4.0
    max_intensity: float = 0.0
    band: int = 4
    context: int = 4
    layers: str = "shared"

    def mechanism_options(self) -> dict:
        """The fields that configure the mechanism, as :func:`~segcft.models.spatial.spatial_settings` takes them."""
        return {k: getattr(self, k) for k in ("width", "max_displacement", "max_intensity", "band", "context", "layers")}


SPATIAL = SpatialRecipe()


def spatial_recipe(overrides: Mapping[str, Any]) -> SpatialRecipe:
    """:data:`SPATIAL` with ``overrides``; an unknown field or a value of the wrong type is refused by name."""
    known = {f.name: f.type for f in fields(SpatialRecipe)}
    for key, value in overrides.items():
        if key not in known:
            raise InputError(f"unknown spatial recipe field {key!r}; known: {sorted(known)}")
        expected = {"int": int, "float": (int, float), "str": str}[known[key]]
        if isinstance(value, bool) or not isinstance(value, expected):
            raise InputError(f"spatial recipe field {key!r} must be a {known[key]}, got {value!r}")
    return replace(SPATIAL, **{k: float(v) if known[k] == "float" else v for k, v in overrides.items()})
