"""Ignite engines for the causal generator, built on MONAI's ``Trainer`` and ``Evaluator``.

HVAE training is unstable in familiar ways (METHOD.md section 5): the KL term is warmed up,
free bits keep the latents in use, gradients are clipped and an update whose gradient norm
is absurd (or not finite) is skipped, and an exponential moving average (EMA) of the
weights is what gets validated, sampled from and used for counterfactuals.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced, sync_all_reduce
from monai.engines import Evaluator, Trainer
from torch.optim.swa_utils import AveragedModel

from segcft.causal.scm import DeepSCM
from segcft.data.io import write_nifti, write_png
from segcft.engines.distributed import auto_model
from segcft.figures import diff_png, image_grid, to_uint8
from segcft.utils import atomic_path


def lower_is_better(current: float, best: float) -> bool:
    """Metric comparison for an ELBO (nats per dimension, never negative).

    MONAI starts ``best_metric`` at -1, which no non-negative ELBO would beat.
    """
    return best < 0 or current < best


def ema_model(scm: DeepSCM, decay: float = 0.999, warmup: bool = True) -> AveragedModel:
    """An EMA copy of the deep SCM (parents included, which are frozen and so stay equal).

    With ``warmup`` the decay warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n``
    updates: with a fixed 0.999 the average would still be mostly the first, untrained weights
    after a few hundred steps, and validation, samples and the saved model would all be that.
    Fine-tuning starts from trained weights, which the average may keep: no warm-up.
    """

    def average(averaged: torch.Tensor, current: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        rate = min(decay, (1.0 + float(n)) / (10.0 + float(n))) if warmup else decay
        return rate * averaged + (1.0 - rate) * current

    return AveragedModel(scm, avg_fn=average, use_buffers=True)


def clip_or_skip(parameters, loss: float, grad_clip: float, grad_skip: float) -> tuple[float, bool]:
    """Clip the gradient norm; say to skip the update if the loss or the norm is not finite or absurd."""
    grad_norm = float(torch.nn.utils.clip_grad_norm_(parameters, grad_clip))
    return grad_norm, not (math.isfinite(grad_norm) and grad_norm < grad_skip and math.isfinite(loss))


def batch_tensors(scm: DeepSCM, batch: dict, device: torch.device) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Images and parents of a collated batch, on ``device``, as plain tensors.

    A MONAI MetaTensor would carry into every result computed from it (a spatial
    displacement too), and MONAI's ``BendingEnergyLoss`` indexes its input with a list,
    which torch reads as a tensor index on a MetaTensor: the backward pass then crashes.
    """
    x = torch.as_tensor(batch["image"]).to(device).as_subclass(torch.Tensor)
    pa = {k: torch.as_tensor(v).to(device).as_subclass(torch.Tensor) for k, v in batch["parents"].items()}
    return x, pa


class Precision:
    """Mixed precision and memory format of a training engine: config keys ``amp`` and ``channels_last``.

    ``amp`` runs the forward pass under ``torch.autocast`` in bfloat16 (no loss scaling is
    needed, unlike float16); the loss and the optimizer stay in float32. On CPU both are off
    by default: bfloat16 on a CPU without native support is slower, and NCHW is PyTorch's
    fast path there. ``channels_last`` stores the network and its image inputs as NHWC, the
    layout tensor cores prefer. Reports record both (:meth:`settings`).
    """

    def __init__(self, amp: bool = False, channels_last: bool = False) -> None:
        self.amp, self.channels_last = bool(amp), bool(channels_last)

    def prepare(self, module: torch.nn.Module) -> torch.nn.Module:
        return module.to(memory_format=torch.channels_last) if self.channels_last else module

    def images(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.ndim == 4 else x

    def autocast(self, device: torch.device):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=self.amp)

    def settings(self) -> dict[str, Any]:
        return {"amp": "bfloat16" if self.amp else False, "channels_last": self.channels_last}


class HVAETrainer(Trainer):
    """Maximises the ELBO of the image mechanism; the parent flows stay frozen.

    The KL term is weighted by ``kl_weight`` (beta), reached linearly over ``kl_warmup_steps``.
    A beta of 1 or more makes it cheaper for the decoder to take from the parents what they
    already say than to carry it in the latents (docs/concepts.md); a warm-up as long as
    training leaves beta below 1 throughout, and the latents then carry the anatomy.

    The image mechanism is trained through ``auto_model`` (DDP under ``torchrun``, which
    averages the gradients over the processes); the wrapper shares its parameters, so the
    optimizer over ``scm.image`` and the EMA of ``scm`` need no change.
    """

    def __init__(
        self,
        device: torch.device | str,
        max_epochs: int,
        train_data_loader,
        scm: DeepSCM,
        optimizer: torch.optim.Optimizer,
        ema: AveragedModel,
        kl_warmup_steps: int = 2000,
        kl_weight: float = 1.0,
        free_bits: float = 0.0,
        grad_clip: float = 200.0,
        grad_skip: float = 1000.0,
        train_handlers: Sequence | None = None,
        amp: bool = False,
        channels_last: bool = False,
    ) -> None:
        super().__init__(
            device=torch.device(device),
            max_epochs=max_epochs,
            data_loader=train_data_loader,
            handlers=train_handlers,
            decollate=False,
        )
        self.scm = scm
        self.network = auto_model(scm.image, device, data_parallel=False)
        self.optimizer = optimizer
        self.ema = ema
        self.kl_warmup_steps = kl_warmup_steps
        self.kl_weight = kl_weight
        self.free_bits = free_bits
        self.grad_clip = grad_clip
        self.grad_skip = grad_skip
        self.state.skipped_updates = 0  # type: ignore[attr-defined]
        scm.parents.requires_grad_(False)
        self.precision = Precision(amp, channels_last)
        self.precision.prepare(scm.image)

    def _iteration(self, engine: Engine, batchdata: dict) -> dict[str, float]:  # type: ignore[override]
        self.network.train()
        x, pa = batch_tensors(self.scm, batchdata, engine.state.device)
        beta = self.kl_weight * min(1.0, engine.state.iteration / max(1, self.kl_warmup_steps))
        with self.precision.autocast(x.device):
            out = self.network(self.precision.images(x), self.scm.condition(pa), beta=beta, free_bits=self.free_bits)
        self.optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        stats = {k: float(out[k].detach()) for k in ("loss", "elbo", "nll", "kl")}
        grad_norm, skipped = clip_or_skip(self.scm.image.parameters(), stats["loss"], self.grad_clip, self.grad_skip)
        if skipped:
            self.optimizer.zero_grad(set_to_none=True)
            engine.state.skipped_updates += 1
        else:
            self.optimizer.step()
            self.ema.update_parameters(self.scm)
        return {
            **stats,
            "beta": beta,
            "grad_norm": grad_norm,
            "skipped": float(skipped),
        }


class SampleMean(Metric):
    """The mean of per-sample values over a whole run, and over all processes, as a Python float.

    Under ``torchrun`` each process sees a shard (``DistributedSampler`` pads the shards to equal
    length by repeating a few items); the sum and count are reduced over the processes.
    """

    @reinit__is_reduced
    def reset(self) -> None:
        self._sum = torch.tensor(0.0, dtype=torch.float64)
        self._count = 0

    @reinit__is_reduced
    def update(self, output: torch.Tensor) -> None:
        values = torch.as_tensor(output).detach().flatten()
        self._sum += values.sum().cpu().double()
        self._count += values.numel()

    @sync_all_reduce("_sum", "_count")
    def compute(self) -> float:
        return float(self._sum) / max(self._count, 1)


class HVAEEvaluator(Evaluator):
    """Validation ELBO (nats per dimension) of the EMA model; ``val_elbo`` is lower-is-better."""

    def __init__(self, device: torch.device | str, val_data_loader, ema: AveragedModel, val_handlers: Sequence | None = None) -> None:
        super().__init__(
            device=torch.device(device),
            val_data_loader=val_data_loader,
            key_val_metric={"val_elbo": SampleMean(output_transform=lambda out: out["elbo_per_sample"])},
            metric_cmp_fn=lower_is_better,
            val_handlers=val_handlers,
            decollate=False,
        )
        self.ema = ema

    def _iteration(self, engine: Engine, batchdata: dict) -> dict[str, torch.Tensor]:  # type: ignore[override]
        scm: DeepSCM = self.ema.module
        scm.eval()
        x, pa = batch_tensors(scm, batchdata, engine.state.device)
        with torch.no_grad():
            out = scm.image(x, scm.condition(pa))
        return {"elbo_per_sample": out["elbo_per_sample"]}


class SampleGridHandler:
    """Every ``interval`` epochs, write a PNG grid from the EMA model on a fixed batch.

    Rows: inputs, reconstructions, random samples with the same parents, and one row of
    counterfactuals per variable (``do(v)`` with the values of ``v`` rolled within the batch).
    Under ``torchrun`` every process holds the same EMA model, and only rank 0 writes.
    """

    def __init__(self, ema: AveragedModel, batch: dict, output_dir: str | os.PathLike, interval: int = 5, n: int = 8) -> None:
        self.ema = ema
        self.batch = batch
        self.output_dir = Path(output_dir)
        self.interval = interval
        self.n = n

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)
        engine.add_event_handler(Events.COMPLETED, self)

    @idist.one_rank_only()
    @torch.no_grad()
    def __call__(self, engine: Engine) -> None:
        scm: DeepSCM = self.ema.module
        scm.eval()
        x, pa = batch_tensors(scm, {k: self.batch[k] for k in ("image", "parents")}, engine.state.device)
        x, pa = x[: self.n], {k: v[: self.n] for k, v in pa.items()}
        rows = {"input": x, "reconstruction": scm.reconstruct(x, pa), "sample": scm.image.sample(scm.condition(pa))}
        for name in scm.variables:
            do = {name: pa[name].roll(1)}
            rows[f"do({name})"] = scm.counterfactual(x, pa, do, use_mean=True).image
        image_grid(
            {k: v[:, 0].cpu().numpy() for k, v in rows.items()},
            self.output_dir / f"samples_epoch{engine.state.epoch:04d}.png",
            title=f"epoch {engine.state.epoch}",
        )


def first_batch(loader, n: int = 8) -> dict:
    """A fixed batch (the first of a non-shuffled loader) for sample grids."""
    batch = next(iter(loader))
    return {"image": batch["image"][:n], "parents": {k: v[:n] for k, v in batch["parents"].items()}}



class CounterfactualEngine(Evaluator):
    """Runs the EMA model's counterfactuals of ``do`` (specs such as ``"heart_area=*1.2"``) over a loader."""

    def __init__(
        self,
        device: torch.device | str,
        val_data_loader,
        ema: AveragedModel,
        do: str | Sequence[str],
        particles: int = 1,
        val_handlers: Sequence | None = None,
    ) -> None:
        super().__init__(device=torch.device(device), val_data_loader=val_data_loader, val_handlers=val_handlers, decollate=False)
        self.ema = ema
        self.do = [do] if isinstance(do, str) else list(do)  # `--do name=*0.8` arrives as one string
        self.particles = particles

    def _iteration(self, engine: Engine, batchdata: dict) -> dict:  # type: ignore[override]
        scm: DeepSCM = self.ema.module
        scm.eval()
        x, pa = batch_tensors(scm, batchdata, engine.state.device)
        with torch.no_grad():
            cf = scm.counterfactual(x, pa, self.do, particles=self.particles, use_mean=self.particles == 1)
        return {"image": x, "parents": pa, "cf_image": cf.image, "cf_parents": cf.parents, "variance": cf.variance}


class CounterfactualWriter:
    """Write each counterfactual as NIfTI (with spacing) and PNG, its difference map, and a parents CSV."""

    def __init__(self, output_dir: str | os.PathLike) -> None:
        self.output_dir = Path(output_dir)
        self.rows: list[dict] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.write_batch)
        engine.add_event_handler(Events.COMPLETED, self.write_table)

    def write_batch(self, engine: Engine) -> None:
        out, batch = engine.state.output, engine.state.batch
        for i, case in enumerate(batch["case"]):
            spacing = tuple(float(s) for s in batch["spacing"][i])
            cf = out["cf_image"][i, 0].cpu().numpy()
            x = out["image"][i, 0].cpu().numpy()
            write_nifti(cf.astype(np.float32), self.output_dir / "images" / f"{case}.nii.gz", spacing)
            write_png(to_uint8(cf), self.output_dir / "png" / f"{case}.png")
            diff_png(cf - x, self.output_dir / "difference" / f"{case}.png")
            if out["variance"] is not None:
                write_nifti(out["variance"][i, 0].cpu().numpy().astype(np.float32), self.output_dir / "variance" / f"{case}.nii.gz", spacing)
            row = {"case": case}
            for name in out["parents"]:
                row[name] = round(float(out["parents"][name][i]), 4)
                row[f"{name}_cf"] = round(float(out["cf_parents"][name][i]), 4)
            self.rows.append(row)

    def write_table(self, engine: Engine) -> None:
        if not self.rows:
            return
        with atomic_path(self.output_dir / "parents.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(self.rows[0]))
            writer.writeheader()
            writer.writerows(self.rows)
