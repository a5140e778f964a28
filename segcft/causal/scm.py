"""The deep structural causal model: parent mechanisms plus the HVAE image mechanism.

Counterfactuals follow METHOD.md section 2. Abduction: the parents' exogenous noise from
the flows, the image's latents ``z ~ q(z | x, pa)`` and its pixel noise
``u_x = (x - mu(z, pa)) / sigma(z, pa)``. Action: ``do()`` on the parents; descendants are
recomputed, non-descendants keep their values. Prediction:
``x* = mu(z, pa*) + sigma(z, pa*) * u_x``, clipped to ``[-1, 1]``. With ``pa* = pa`` this
returns ``x`` (composition).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from segcft.causal.graph import CausalGraph
from segcft.causal.interventions import Intervention, parse_do, resolve, support_from_data
from segcft.causal.parents import ParentSCM, parent_stats
from segcft.data.datalist import check_variable
from segcft.models.hvae import ConditionalHVAE, hvae_config
from segcft.models.spatial import SpatialMechanism
from segcft.utils import InputError


#: How a counterfactual treats the image's latents (see :class:`DeepSCM`).
LATENTS = ("fixed", "mediated")
#: The smallest standard deviation a conditioning column is divided by.
MIN_COND_STD = 1e-3
#: How a counterfactual image is made: decoded by the HVAE, or moved by a spatial mechanism.
MECHANISMS = ("direct", "spatial")


@dataclass
class Counterfactual:
    """Counterfactual images ``(B, C, H, W)`` and parents; with particles, their per-pixel variance.

    A spatial mechanism also gives its forward's outputs (``mechanism``): among them the
    ``displacement`` (pixels), ``intensity`` change and ``band``, and what
    :meth:`~segcft.models.spatial.SpatialMechanism.full_resolution_change` needs, so serving
    at the input's resolution does not run the mechanism a second time.
    """

    image: torch.Tensor
    parents: dict[str, torch.Tensor]
    variance: torch.Tensor | None = None
    mechanism: dict[str, torch.Tensor] | None = None

    @property
    def displacement(self) -> torch.Tensor | None:
        return None if self.mechanism is None else self.mechanism["displacement"]

    @property
    def intensity(self) -> torch.Tensor | None:
        return None if self.mechanism is None else self.mechanism["intensity"]

    @property
    def band(self) -> torch.Tensor | None:
        return None if self.mechanism is None else self.mechanism["band"]


class DeepSCM(nn.Module):
    """Parents ``pa`` (a DAG of flows) and image ``x = g(pa, z, u_x)`` (a conditional HVAE).

    ``variables`` is the order in which the image mechanism sees its parents; each is
    standardised with ``cond_stats`` (on the log scale for ``log_vars``). ``latents`` says how a
    counterfactual treats the image's latents: ``"fixed"`` decodes the abducted ``z`` as it is
    (METHOD.md section 2); ``"mediated"`` moves them with the parents through the conditional
    prior (:meth:`~segcft.models.hvae.DecoderBlock.mediate`), as the reference implementation
    does with a conditional prior.

    With a :class:`~segcft.models.spatial.SpatialMechanism` attached (:meth:`attach_spatial`,
    ``mechanism == "spatial"``), counterfactual images are the factual image with the intervened
    structures' boundaries moved; the HVAE still models, samples and reconstructs images.
    """

    spatial: SpatialMechanism | None

    def __init__(
        self,
        parents: ParentSCM,
        image: ConditionalHVAE,
        variables: Sequence[str],
        cond_stats: Mapping[str, tuple[float, float]],
        support: Mapping[str, tuple[float, float]],
        log_vars: Sequence[str] = (),
        latents: str = "fixed",
    ) -> None:
        super().__init__()
        if latents not in LATENTS:
            raise InputError(f"latents must be one of {list(LATENTS)}, got {latents!r}")
        self.latents = latents
        self.spatial = None
        self.parents = parents
        self.image = image
        self.variables = list(variables)
        self.log_vars = set(log_vars)
        self.support = {k: (float(v[0]), float(v[1])) for k, v in support.items()}
        self.register_buffer("cond_mean", torch.tensor([cond_stats[v][0] for v in self.variables], dtype=torch.float32))
        self.register_buffer("cond_std", torch.tensor([cond_stats[v][1] for v in self.variables], dtype=torch.float32))

    def get_extra_state(self) -> dict:
        """Saved with the weights: the variables' order and supports (from the training split)."""
        return {"variables": self.variables, "support": self.support, "log_vars": sorted(self.log_vars)}

    def set_extra_state(self, state: dict) -> None:
        if list(state["variables"]) != self.variables:
            raise InputError(f"checkpoint was trained on variables {state['variables']}, this model has {self.variables}")
        self.support = {k: (float(v[0]), float(v[1])) for k, v in state["support"].items()}
        self.log_vars = set(state["log_vars"])

    @property
    def mechanism(self) -> str:
        """``"spatial"`` with a spatial mechanism attached, else ``"direct"`` (the HVAE decodes ``x*``)."""
        return "direct" if self.spatial is None else "spatial"

    def attach_spatial(self, mechanism: SpatialMechanism) -> DeepSCM:
        """Make counterfactuals with ``mechanism`` from now on (its weights join this model's state)."""
        self.spatial = mechanism.to(self.cond_mean.device)
        return self

    @property
    def graph(self) -> CausalGraph:
        return self.parents.graph

    def condition(self, pa: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The ``(B, P)`` standardised parent vector the image mechanism is conditioned on."""
        columns = []
        for name in self.variables:
            if name not in pa:
                raise InputError(f"parents lack {name!r}; the model needs {self.variables}")
            value = torch.as_tensor(pa[name], dtype=torch.float32, device=self.cond_mean.device)
            columns.append(torch.log(value.clamp(min=1e-6)) if name in self.log_vars else value)
        return (torch.stack(columns, 1) - self.cond_mean) / self.cond_std

    def interventions(self, specs: Sequence[str | Intervention], pa: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Absolute per-sample targets from ``do()`` specs such as ``"left_lung_area=*0.8"``."""
        parsed = [s if isinstance(s, Intervention) else parse_do(s) for s in specs]
        return resolve(parsed, pa, self.support, self.graph.kinds)

    def reconstruct(self, x: torch.Tensor, pa: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The likelihood's location with posterior-mean latents: what the latents alone keep of ``x``.

        Unlike a null-intervention counterfactual, no pixel noise is abducted, so this shows how
        much detail the hierarchy itself has learned to carry.
        """
        cond = self.condition(pa)
        loc, _ = self.image.decode(self.image.abduct_latents(x, cond, use_mean=True), cond)
        return loc.clamp(-1, 1)

    def counterfactual(
        self,
        x: torch.Tensor,
        pa: Mapping[str, torch.Tensor],
        do: Mapping[str, torch.Tensor] | Sequence[str | Intervention],
        particles: int = 1,
        use_mean: bool = False,
    ) -> Counterfactual:
        """Counterfactual images and parents of ``do``; differentiable in the image mechanism (for CFT)."""
        if not isinstance(do, Mapping):
            do = self.interventions(do, pa)
        pa_cf = self.parents.counterfactual(pa, do)
        cond, cond_cf = self.condition(pa), self.condition(pa_cf)
        if self.spatial is not None:  # deterministic: particles would all be the same image
            names = list(self.spatial.settings.structure_of)
            value = lambda p, v: torch.as_tensor(p[v], dtype=x.dtype, device=x.device).reshape(-1).expand(x.shape[0])
            ratio = torch.stack([value(pa_cf, v) / value(pa, v).clamp(min=1e-6) for v in names], 1)
            out = self.spatial(x, cond, cond_cf, ratio)
            variance = torch.zeros_like(x) if particles > 1 else None
            return Counterfactual(out["image"], pa_cf, variance, out)
        images = []
        for _ in range(max(1, particles)):
            if self.latents == "mediated":
                zs, zs_cf = self.image.mediated_latents(x, cond, cond_cf, use_mean=use_mean)
            else:
                zs = zs_cf = self.image.abduct_latents(x, cond, use_mean=use_mean)
            loc, log_scale = self.image.decode(zs, cond)
            u = (x - loc) / torch.exp(log_scale)
            loc_cf, log_scale_cf = self.image.decode(zs_cf, cond_cf)
            images.append((loc_cf + torch.exp(log_scale_cf) * u).clamp(-1, 1))
        stack = torch.stack(images)
        variance = stack.var(0, unbiased=False) if particles > 1 else None
        return Counterfactual(stack.mean(0) if particles > 1 else stack[0], pa_cf, variance)


def build_deep_scm(
    datalist: Mapping,
    variables: Sequence[str],
    graph: Mapping[str, Sequence[str]],
    preset: str = "cpu64",
    stages: Sequence[dict] | None = None,
    log_vars: Sequence[str] = (),
    flow_transforms: int = 3,
    flow_hidden: int = 32,
    latents: str = "fixed",
    hvae: Mapping[str, Any] | None = None,
) -> DeepSCM:
    """A fresh DeepSCM whose statistics and supports come from the datalist's training split.

    ``hvae`` holds the image mechanism's options beside its stages (:class:`~segcft.models.hvae.HVAEConfig`:
    ``conditioning``, ``likelihood_scale``, ``std_init``, ...).
    """
    for name in variables:
        check_variable(datalist, name)
    missing = set(graph) ^ set(variables)
    if missing:
        raise InputError(f"the causal graph and the model's variables differ on {sorted(missing)}")
    data = training_parents(datalist, variables)
    cg = CausalGraph.from_config(graph, datalist["variables"])
    stats = parent_stats(data, log_vars)
    parents = ParentSCM(cg, stats, transforms=flow_transforms, hidden=flow_hidden, log_vars=log_vars)
    image = ConditionalHVAE(hvae_config(preset, parent_dim=len(variables), stages=stages, **dict(hvae or {})))
    # A variable constant over the training split (a binary all 1 in a small datalist) has std 0:
    # its standardised column would be 0/0. Clamped, it is 0 there, as it carries no information.
    cond_stats = {v: (stats[v][0], max(stats[v][1], MIN_COND_STD)) if v in stats else _binary_stats(data[v]) for v in variables}
    return DeepSCM(parents, image, variables, cond_stats, support_from_data(data, cg.kinds), log_vars, latents)


def training_parents(datalist: Mapping, variables: Sequence[str], split: str = "training") -> dict[str, torch.Tensor]:
    """The parents of one split as ``{name: (N,) float32}``."""
    items = datalist[split]
    if not items:
        raise InputError(f"datalist has no {split!r} items")
    out = {}
    for name in variables:
        try:
            out[name] = torch.tensor([float(item["parents"][name]) for item in items], dtype=torch.float32)
        except KeyError as e:
            raise InputError(f"a {split} item lacks parent {name!r}") from e
    return out


def _binary_stats(values: torch.Tensor) -> tuple[float, float]:
    return float(values.mean()), float(values.std().clamp(min=MIN_COND_STD))
