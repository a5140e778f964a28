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

from collections.abc import Mapping, Sequence
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
    ``displacement_weight`` the mean squared displacement (px^2), so of the moves that meet
    the areas the smallest wins: spread along the whole boundary rather than one wall (bending
    energy is blind to a translation or a linear stretch), ``sparse_weight`` the L1 norm of the
    intensity term; the last eight fields are those of
    :class:`~segcft.models.spatial.SpatialSettings`. ``max_intensity`` 0 turns the intensity
    term off: a chest radiograph's structures change by moving, and on the chest phantom an
    intensity term of 0.25 repainted the lungs instead (docs/research). ``fill`` ``warp``: a
    pixel that a boundary crosses takes the moved tissue, not the local class means, which
    left a shrinking structure short on the chest phantom and on JSRT; ``strip``, the moved
    tissue in full at a soft boundary; ``prior`` ``scale``, each structure scaled about its
    centroid to its requested area before the head's correction, which ``displacement_weight``
    keeps small (docs/research/2026-12-08-spatial-scale-prior.md).
    """

    steps: int = 200
    batch_size: int = 16
    lr: float = 1e-3
    warmup: int = 20
    guide_weight: float = 50.0
    bending_weight: float = 1.0
    displacement_weight: float = 10.0
    sparse_weight: float = 1.0
    grad_clip: float = 200.0
    width: int = 16
    max_displacement: float = 4.0
    max_intensity: float = 0.0
    band: int = 4
    context: int = 4
    layers: str = "shared"
    fill: str = "strip"
    prior: str = "scale"

    def mechanism_options(self) -> dict:
        """The fields that configure the mechanism, as :func:`~segcft.models.spatial.spatial_settings` takes them."""
        return {k: getattr(self, k) for k in ("width", "max_displacement", "max_intensity", "band", "context", "layers", "fill",
                                         "prior")}


SPATIAL = SpatialRecipe()


@dataclass(frozen=True)
class LocalityTerms:
    """Terms of Seg-CFT on the direct HVAE output that hold the image outside the change in place.

    Outside a ``band`` (px at the guide's size) around the structures whose variable changes
    (the intervened one and its causal descendants, on the guide's factual labels):
    ``hold_weight`` weighs the KL of the guide's class probabilities on ``x*`` from those on
    ``x`` (``x``'s side without gradient), ``pixel_weight`` the mean ``|x* - x|``.
    ``entropy_weight`` weighs the entropy of the guide's probabilities on ``x*``, so a soft
    area cannot be met by making pixels uncertain instead of moving the argmax. All zero: the
    seeds' Seg-CFT loss.
    """

    hold_weight: float = 0.0
    pixel_weight: float = 0.0
    entropy_weight: float = 0.0
    band: int = 3

    @property
    def active(self) -> bool:
        return any(w > 0 for w in (self.hold_weight, self.pixel_weight, self.entropy_weight))


#: Named Seg-CFT recipes for the direct HVAE output: ``seeds`` is the paper's loss (the guide
#: and the ELBO constraint only); ``local`` adds the terms that hold the rest of the image.
LOCALITY_RECIPES: dict[str, LocalityTerms] = {
    "seeds": LocalityTerms(),
    "local": LocalityTerms(hold_weight=100.0, pixel_weight=100.0, entropy_weight=1.0, band=3),
}


def locality_terms(spec: Sequence[str] | None) -> LocalityTerms:
    """Locality terms from a recipe name (``seeds``, ``local``) and/or ``KEY=VALUE`` items.

    The first item may name a recipe (default ``seeds``); the ``KEY=VALUE`` items override its
    fields. Unknown names and fields are refused by name.
    """
    items, base = list(spec or []), LOCALITY_RECIPES["seeds"]
    if items and "=" not in items[0]:
        if items[0] not in LOCALITY_RECIPES:
            raise InputError(f"unknown locality recipe {items[0]!r}; known: {sorted(LOCALITY_RECIPES)}")
        base, items = LOCALITY_RECIPES[items[0]], items[1:]
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise InputError(f"locality item {item!r} must be KEY=VALUE (or a recipe name first)")
        overrides[key.strip()] = value.strip()
    known = {f.name: f.type for f in fields(LocalityTerms)}
    out = {}
    for key, value in overrides.items():
        if key not in known:
            raise InputError(f"unknown locality field {key!r}; known: {sorted(known)}")
        try:
            out[key] = int(value) if known[key] == "int" else float(value)
        except (TypeError, ValueError) as e:
            raise InputError(f"locality field {key!r} must be a number, got {value!r}") from e
        if out[key] < 0:
            raise InputError(f"locality field {key!r} must be >= 0, got {value!r}")
    return replace(base, **out)


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
