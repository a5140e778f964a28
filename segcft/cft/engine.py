"""The counterfactual fine-tuning engine: the HVAE learns from a frozen guide, within an ELBO bound."""

from __future__ import annotations

import math
from collections.abc import Sequence

import ignite.distributed as idist
import torch
from ignite.engine import Engine
from monai.engines import Trainer
from monai.losses import BendingEnergyLoss
from torch.optim.swa_utils import AveragedModel

from segcft.causal.scm import DeepSCM
from segcft.cft.guides import Guide
from segcft.cft.lagrangian import LagrangeMultiplier
from segcft.cft.locality import locality_loss
from segcft.cft.recipe import LOCALITY_RECIPES, RECIPE, SPATIAL, LocalityTerms
from segcft.cft.sampling import InterventionSampler
from segcft.cft.views import GuideViews
from segcft.engines.distributed import average_gradients, mean_over_ranks
from segcft.engines.generator import Precision, batch_tensors, clip_or_skip


@torch.no_grad()
def elbo_bound(scm: DeepSCM, loader, slack: float, seed: int = 0) -> float:
    """``eps``: the pre-trained model's mean negative ELBO (nats/dim) on ``loader`` plus ``slack``.

    The ELBO is a one-sample estimate, so the posterior draws come from a private RNG stream
    seeded with ``seed``: the same model, data and seed give the same bound, and the global
    RNG is left untouched. Under ``torchrun`` each process sees a shard of ``loader``; the sum
    and count are reduced over the processes, so all share one bound.
    """
    scm.eval()
    device = scm.cond_mean.device
    total, count = 0.0, 0
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for batch in loader:
            x, pa = batch_tensors(scm, batch, device)
            elbo = scm.image(x, scm.condition(pa))["elbo_per_sample"]
            total += float(elbo.sum())
            count += elbo.numel()
    total, count = idist.all_reduce(torch.tensor([total, count], dtype=torch.float64)).tolist()
    return total / max(count, 1) + slack


def trainable(scm: DeepSCM) -> list[torch.nn.Parameter]:
    """What CFT trains: the spatial mechanism's head where one is attached, else the HVAE."""
    return list((scm.image if scm.spatial is None else scm.spatial.head).parameters())


class CFTTrainer(Trainer):
    """Fine-tunes the image mechanism only; the parent flows and the guide stay frozen.

    Each iteration: the factual negative ELBO, one sampled intervention, the differentiable
    counterfactual, the guide's loss on it, and the Lagrangian term that keeps the ELBO
    within ``eps``; then a step on the HVAE and an ascent step on ``lambda``.

    ``guide_weight`` scales the guide's loss against the ELBO term: a relative area error has
    a far smaller gradient than the per-dimension ELBO's, so at weight 1 the constraint
    drowns the guide (docs/results.md).

    ``guide_views`` > 0 has the guide measure the factual and the counterfactual image of each
    step under one random view of that strength (:class:`~segcft.cft.views.GuideViews`), so
    a change pays only if the guide reads it under every view, not only through this one.

    ``relative_targets`` compares the guide's measurement of ``x*`` with the requested relative
    change of its measurement of ``x`` (see :meth:`Guide.loss`) instead of with ``pa*``.

    With a spatial mechanism attached (``scm.mechanism == "spatial"``) only its head learns:
    the HVAE, and so its ELBO, stay those of the base model (the ELBO is not computed, nor
    logged, and lambda never moves). The head's loss adds the bending energy of the displacement
    (``bending_weight``, MONAI ``BendingEnergyLoss``), its mean square (``displacement_weight``), both of
    the head's part of the displacement (all of it without a prior), and an L1 penalty on the intensity term
    (``sparse_weight``), so the change is a smooth move with as little repainting as it needs.

    ``locality`` adds, on the direct HVAE output, the terms that hold the guide's labels and
    the pixels outside the changing structures (:mod:`segcft.cft.locality`); all zero, the
    loss is the seeds' Seg-CFT.

    Gradients are clipped, and by default an update is skipped only when it is not finite:
    once the ELBO leaves its bound, the damped Lagrangian's gradient is large *and* the only
    way back, so skipping large updates (as in pre-training) would freeze the model outside
    the bound.

    Under ``torchrun`` every process fine-tunes the same model on its shard of the batches.
    The loss reaches the image mechanism through ``DeepSCM.counterfactual`` (abduction and
    decoding, not ``forward``), where DDP's gradient hooks do not apply, so the gradients are
    averaged over the processes after ``backward`` (``average_gradients``). The constraint
    uses the factual ELBO averaged over the processes: ``lambda``, its damping and the
    logged ``elbo`` are then the same everywhere, and the averaged gradient is that of the
    whole batch.
    """

    def __init__(
        self,
        device: torch.device | str,
        max_epochs: int,
        train_data_loader,
        scm: DeepSCM,
        guide: Guide,
        sampler: InterventionSampler,
        optimizer: torch.optim.Optimizer,
        lagrange: LagrangeMultiplier,
        eps: float,
        ema: AveragedModel | None = None,
        grad_clip: float = RECIPE.grad_clip,
        grad_skip: float = math.inf,
        guide_weight: float = RECIPE.guide_weight,
        relative_targets: bool = RECIPE.relative_targets,
        guide_views: float = RECIPE.guide_views,
        bending_weight: float = SPATIAL.bending_weight,
        displacement_weight: float = SPATIAL.displacement_weight,
        sparse_weight: float = SPATIAL.sparse_weight,
        locality: LocalityTerms = LOCALITY_RECIPES["seeds"],
        train_handlers: Sequence | None = None,
        epoch_length: int | None = None,
        amp: bool = False,
        channels_last: bool = False,
    ) -> None:
        super().__init__(device=torch.device(device), max_epochs=max_epochs, data_loader=train_data_loader,
                         epoch_length=epoch_length, handlers=train_handlers, decollate=False)
        self.scm, self.guide, self.sampler = scm, guide, sampler
        self.optimizer, self.lagrange, self.eps, self.ema = optimizer, lagrange, float(eps), ema
        self.grad_clip, self.grad_skip, self.guide_weight = grad_clip, grad_skip, guide_weight
        self.relative_targets, self.views = relative_targets, GuideViews(guide_views)
        self.bending_weight, self.sparse_weight, self.bending = bending_weight, sparse_weight, BendingEnergyLoss()
        self.displacement_weight = displacement_weight
        self.locality = locality
        self.params = trainable(scm)
        scm.parents.requires_grad_(False)
        guide.freeze()
        self.state.skipped_updates = 0  # type: ignore[attr-defined]
        self.precision = Precision(amp, channels_last)
        self.precision.prepare(scm.spatial if scm.spatial is not None else scm.image)

    def _iteration(self, engine: Engine, batchdata: dict) -> dict[str, float]:  # type: ignore[override]
        spatial = self.scm.spatial is not None
        (self.scm.spatial if spatial else self.scm.image).train()
        device = engine.state.device
        x, pa = batch_tensors(self.scm, batchdata, device)
        x = self.precision.images(x)
        spacing = torch.as_tensor(batchdata["spacing"]).to(device).as_subclass(torch.Tensor)
        with self.precision.autocast(x.device):
            if not spatial:  # a spatial head leaves the HVAE frozen: its ELBO is neither a constraint nor worth a forward pass
                elbo = self.scm.image(x, self.scm.condition(pa))["elbo"].float()
                elbo = elbo + (mean_over_ranks(elbo) - elbo).detach()  # the value over all processes, this process's gradient
            do = self.sampler(pa)
            cf = self.scm.counterfactual(x, pa, do)
            seen, seen_cf = self.views(x, cf.image)
            guide_loss = self.guide.loss(seen_cf, cf.parents, spacing, factual=seen, pa=pa if self.relative_targets else None,
                                         intervened=list(do)).float()
        if spatial:
            ddf = cf.mechanism["residual"]  # the head's own move: a prior's shape is not the head's to smooth away
            loss = (self.guide_weight * guide_loss + self.bending_weight * self.bending(ddf.reshape(-1, 2, *ddf.shape[-2:]))
                    + self.displacement_weight * ddf.pow(2).mean() + self.sparse_weight * cf.intensity.abs().mean())
        else:
            loss = self.guide_weight * guide_loss + self.lagrange.penalty(elbo, self.eps)
        held: dict[str, float] = {}
        if self.locality.active and not spatial:
            with self.precision.autocast(x.device):
                term, held = locality_loss(self.guide, x, cf.image, pa, cf.parents, self.locality)
            loss = loss + term
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(self.params)
        grad_norm, skipped = clip_or_skip(self.params, float(loss.detach()), self.grad_clip, self.grad_skip)
        if skipped:
            self.optimizer.zero_grad(set_to_none=True)
            self.lagrange.optimizer.zero_grad(set_to_none=True)
            engine.state.skipped_updates += 1
        else:
            self.optimizer.step()
            if not spatial:
                self.lagrange.step()
            if self.ema is not None:
                self.ema.update_parameters(self.scm)
        return {
            "loss": float(loss.detach()),
            "guide_loss": float(guide_loss.detach()),
            **({} if spatial else {"elbo": float(elbo.detach())}),
            "eps": self.eps,
            "lambda": float(self.lagrange.value.detach()),
            "grad_norm": grad_norm,
            "skipped": float(skipped),
            **{f"locality_{k}": v for k, v in held.items()},
        }
