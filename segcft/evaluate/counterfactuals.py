"""Measuring counterfactuals (METHOD.md section 4).

- **Effectiveness**: the area of the intervened structure measured on ``x*`` by an
  *independent* evaluation segmentor (the "judge"), against the intervened value: MAPE (%)
  for chest areas, MAE (mm^2) for coronary areas, for fixed relative changes and for values
  drawn from the test split's distribution of the variable.
- **Noise floor**: the judge's own area error on the factual test images.
- **Composition** and **reversibility**: ``x`` against the null counterfactual, and against
  the counterfactual of the counterfactual with the intervention undone.
- **Ground truth** (phantoms): pixel error against the true counterfactual rendered from
  the sample's stored exogenous noise, next to the error of not changing the image at all.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.metrics import compute_dice

from segcft.causal.interventions import Intervention
from segcft.causal.scm import DeepSCM
from segcft.data.phantom import Phantom
from segcft.data.transforms import image_pipeline
from segcft.measure import hard_areas
from segcft.utils import InputError

RELATIVE_CHANGES = (-25.0, -10.0, 10.0, 25.0)


@dataclass
class EvalData:
    """A split loaded at the generator's size: images in ``[-1, 1]``, parents, spacing, labels."""

    cases: list[str]
    images: torch.Tensor
    labels: torch.Tensor
    parents: dict[str, torch.Tensor]
    spacing: torch.Tensor
    noise: list[dict] | None

    def __len__(self) -> int:
        return len(self.cases)


def load_split(datalist: Mapping, split: str, size: int, modality: str, variables: Sequence[str]) -> EvalData:
    """Every item of ``split`` through the generator's own preprocessing (with labels)."""
    pipeline = image_pipeline(size, modality, variables=variables)
    items = [pipeline(item) for item in datalist[split]]
    if not items:
        raise InputError(f"datalist has no {split!r} items")
    return EvalData(
        cases=[item["case"] for item in datalist[split]],
        images=torch.stack([torch.as_tensor(i["image"]) for i in items]).float(),
        labels=torch.stack([torch.as_tensor(i["label"])[0] for i in items]),
        parents={v: torch.stack([i["parents"][v] for i in items]) for v in variables},
        spacing=torch.stack([i["spacing"] for i in items]),
        noise=[item["noise"] for item in datalist[split]] if "noise" in datalist[split][0] else None,
    )


class Judge:
    """The evaluation segmentor: structure areas (mm^2) measured on images of any size."""

    def __init__(self, network: torch.nn.Module, structures: Mapping[str, int], size: int) -> None:
        self.network = network.eval()
        self.structures = dict(structures)
        self.size = size

    @torch.no_grad()
    def labels(self, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
        """Label maps ``(B, size, size)`` on the CPU; images are resized to the judge's size first."""
        device = next(self.network.parameters()).device
        parts = []
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size].to(device)
            if x.shape[-1] != self.size:
                x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
            parts.append(self.network(x).argmax(1).cpu())
        return torch.cat(parts)

    def areas(self, images: torch.Tensor, spacing: torch.Tensor, batch_size: int = 32) -> dict[str, torch.Tensor]:
        """Hard areas in mm^2 of each structure, on the judge's label maps (spacing scaled to its size)."""
        factor = images.shape[-1] / self.size
        areas = hard_areas(self.labels(images, batch_size), self.structures, spacing.cpu() * factor)
        return {name: area["mm2"] for name, area in areas.items()}


    @torch.no_grad()
    def features(self, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
        """Globally pooled features of the judge's deepest encoder level (BasicUNet ``down_4``), for realism."""
        if not hasattr(self.network, "down_4"):
            raise InputError("realism features need a BasicUNet evaluation segmentor (it has no 'down_4' level)")
        device = next(self.network.parameters()).device
        captured: list[torch.Tensor] = []
        hook = self.network.down_4.register_forward_hook(lambda _m, _i, out: captured.append(out.mean((2, 3)).cpu()))
        try:
            for start in range(0, len(images), batch_size):
                x = images[start : start + batch_size].to(device)
                if x.shape[-1] != self.size:
                    x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
                self.network(x)
        finally:
            hook.remove()
        return torch.cat(captured)


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to two feature sets ``(N, D)``.

    ``tr((C_a C_b)^(1/2))`` is taken from the eigenvalues of the symmetric ``C_a^(1/2) C_b C_a^(1/2)``,
    which equal those of ``C_a C_b`` and are real and >= 0 for any pair of covariances, singular
    ones included (fewer cases than features), where a general matrix square root is inaccurate.
    """
    a64, b64 = a.double().numpy(), b.double().numpy()
    mu_a, mu_b = a64.mean(0), b64.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a64, rowvar=False)), np.atleast_2d(np.cov(b64, rowvar=False))
    w, v = np.linalg.eigh(cov_a)
    root_a = (v * np.sqrt(w.clip(min=0.0))) @ v.T
    cross = np.sqrt(np.linalg.eigvalsh(root_a @ cov_b @ root_a).clip(min=0.0)).sum()
    # a squared distance: the square roots of rounding-level eigenvalues (~1e-7 of the trace) can take it below 0
    return max(0.0, float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2.0 * cross))


def in_support(scm: DeepSCM, name: str, values: torch.Tensor) -> torch.Tensor:
    """Which target values lie in the model's support of ``name``."""
    lo, hi = scm.support[name]
    return (values >= lo) & (values <= hi)


def batches(data: EvalData, device: torch.device, batch_size: int = 32) -> Iterator[tuple[slice, torch.Tensor, dict[str, torch.Tensor]]]:
    """``(slice, x, pa)`` of consecutive batches of ``data``, moved to ``device``."""
    for start in range(0, len(data), batch_size):
        sl = slice(start, start + batch_size)
        yield sl, data.images[sl].to(device), {k: v[sl].to(device) for k, v in data.parents.items()}


@torch.no_grad()
def counterfactual_images(scm: DeepSCM, data: EvalData, do: Mapping[str, torch.Tensor], batch_size: int = 32) -> torch.Tensor:
    """``x*`` for absolute per-sample targets ``do`` (posterior-mean latents, deterministic)."""
    device = scm.cond_mean.device
    parts = []
    for sl, x, pa in batches(data, device, batch_size):
        cf = scm.counterfactual(x, pa, {k: v[sl].to(device) for k, v in do.items()}, use_mean=True)
        parts.append(cf.image.cpu())
    return torch.cat(parts)


def error(measured: torch.Tensor, target: torch.Tensor, metric: str) -> float:
    """MAPE (%) or MAE (in the variable's unit) of ``measured`` against ``target``."""
    diff = (measured - target).abs()
    return float((100 * diff / target.abs().clamp(min=1e-6)).mean() if metric == "mape" else diff.mean())


def interventions_for(scm: DeepSCM, data: EvalData, name: str, seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Targets for ``name``: fixed relative changes, and values drawn from the split (a permutation).

    Returns ``{label: (target values, mask of samples whose target lies in the support)}``.
    """
    factual = data.parents[name]
    out = {}
    for pct in RELATIVE_CHANGES:
        target = Intervention(name, "percent", pct).apply(factual)
        out[f"{pct:+.0f}%"] = (target, in_support(scm, name, target))
    perm = torch.randperm(len(factual), generator=torch.Generator().manual_seed(seed))
    target = factual[perm]
    out["test distribution"] = (target, in_support(scm, name, target) & (perm != torch.arange(len(factual))))
    return out


def effectiveness(
    scm: DeepSCM, data: EvalData, judge: Judge, structure_of: Mapping[str, str], metric: str, seed: int = 0
) -> dict[str, dict[str, float | int]]:
    """Judge-measured error of the intervened structure's area, per variable and intervention."""
    report = {}
    for name, structure in structure_of.items():
        entry: dict[str, float | int] = {}
        for label, (target, ok) in interventions_for(scm, data, name, seed).items():
            if not ok.any():
                continue
            sub = subset(data, ok)
            images = counterfactual_images(scm, sub, {name: target[ok]})
            measured = judge.areas(images, sub.spacing)[structure]
            entry[label] = round(error(measured, target[ok], metric), 3)
            entry[f"{label} n"] = int(ok.sum())
        report[name] = entry
    return report


def supported_targets(scm, data: EvalData, name: str, pct: float) -> tuple[EvalData, torch.Tensor] | None:
    """The samples whose target of ``do(name *= 1 + pct%)`` stays in the model's support, and those targets; None if none."""
    target = Intervention(name, "percent", pct).apply(data.parents[name])
    ok = in_support(scm, name, target)
    if not ok.any():
        return None
    return subset(data, ok), target[ok]


def relative_counterfactuals(scm, data: EvalData, name: str, pct: float):
    """``(subset, targets, x*)`` for ``do(name *= 1 + pct%)`` on the samples where it stays in support, or None."""
    found = supported_targets(scm, data, name, pct)
    if found is None:
        return None
    sub, target = found
    return sub, target, counterfactual_images(scm, sub, {name: target})


def _dose_curve(
    scm, data: EvalData, judge: Judge, name: str, structure: str, changes: Sequence[float],
    images: Callable[[EvalData, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
) -> dict[float, float]:
    """Requested change (%) -> the judge's mean change (%) of ``structure`` between the two images ``images(sub, targets)`` gives."""
    curve = {}
    for pct in changes:
        found = supported_targets(scm, data, name, float(pct))
        if found is None:
            continue
        sub, target = found
        before, after = images(sub, target)
        area0 = judge.areas(before, sub.spacing)[structure]
        area1 = judge.areas(after, sub.spacing)[structure]
        curve[float(pct)] = round(mean_change_percent(area1, area0), 3)
    return curve


def dose_response(
    scm, data: EvalData, judge: Judge, name: str, structure: str, changes: Sequence[float] = (-30, -20, -10, 0, 10, 20, 30)
) -> dict[float, float]:
    """Requested relative change of ``name`` (%) -> the judge's mean measured change of its structure (%).

    The measured change is against the judge's area on the factual image, so the judge's own
    bias cancels; only samples whose target stays in the model's support count.
    """
    return _dose_curve(scm, data, judge, name, structure, changes,
                       lambda sub, target: (sub.images, counterfactual_images(scm, sub, {name: target})))


def mean_change_percent(after: torch.Tensor, before: torch.Tensor) -> float:
    """The mean relative change (%) from ``before`` to ``after``, sample by sample."""
    return float((100 * (after / before.clamp(min=1e-6) - 1)).mean())


def locality(x: torch.Tensor, x_cf: torch.Tensor, mask: torch.Tensor, dilation: int = 3) -> torch.Tensor:
    """Per image, the share of the total change ``|x* - x|`` inside ``mask`` dilated by ``dilation`` px.

    ``x`` and ``x_cf`` are ``(B, 1, H, W)``, ``mask`` ``(B, H, W)``; an unchanged image scores 1.
    """
    grown = F.max_pool2d(mask.float()[:, None], 2 * dilation + 1, stride=1, padding=dilation)
    return _change_share(x, x_cf, grown)


def relabelled_share(x: torch.Tensor, x_cf: torch.Tensor, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """Per image, the share of ``|x* - x|`` on pixels whose label differs between ``before`` and ``after``.

    The label maps ``(B, h, w)`` may be coarser or finer than the images (the judge's size): they
    are resampled to the images' size (nearest). A change that only moves boundaries scores 1; a
    change of intensity where every pixel keeps its structure scores 0; an unchanged image 1.
    """
    moved = (before != after).float()[:, None]
    if moved.shape[-1] != x.shape[-1]:
        moved = F.interpolate(moved, size=tuple(x.shape[-2:]), mode="nearest")
    return _change_share(x, x_cf, moved)


def _change_share(x: torch.Tensor, x_cf: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Per image, the share of ``|x* - x|`` inside ``region`` ``(B, 1, H, W)``; an unchanged image scores 1."""
    change = (x_cf - x).abs()
    total = change.flatten(1).sum(1)
    inside = (change * region).flatten(1).sum(1)
    return torch.where(total > 0, inside / total.clamp(min=1e-12), torch.ones_like(total))


def noise_floor(data: EvalData, judge: Judge, structure_of: Mapping[str, str], metric: str) -> dict[str, float]:
    """The judge's own error on the factual images against the recorded parents."""
    measured = judge.areas(data.images, data.spacing)
    return {name: round(error(measured[s], data.parents[name], metric), 3) for name, s in structure_of.items()}


@torch.no_grad()
def reconstruction_quality(scm: DeepSCM, data: EvalData, batch_size: int = 32) -> dict[str, float]:
    """How sharp the model's reconstructions are: PSNR (dB, on the [-1, 1] range) and the ratio of
    the reconstructions' high-frequency energy (variance of the Laplacian) to the inputs' (1 = as sharp)."""
    device = scm.cond_mean.device
    laplace = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], device=device).view(1, 1, 3, 3)
    mse, sharpness = [], []
    for _, x, pa in batches(data, device, batch_size):
        recon = scm.reconstruct(x, pa)
        mse.append(((recon - x) ** 2).flatten(1).mean(1))
        energy = [torch.nn.functional.conv2d(img, laplace).flatten(1).var(1) for img in (recon, x)]
        sharpness.append(energy[0] / energy[1].clamp(min=1e-12))
    mse_all = torch.cat(mse)
    return {
        "psnr_db": round(float((10 * torch.log10(4.0 / mse_all.clamp(min=1e-12))).mean()), 2),
        "sharpness_ratio": round(float(torch.cat(sharpness).mean()), 3),
    }


@torch.no_grad()
def composition_error(scm: DeepSCM, data: EvalData) -> float:
    """Max abs difference between ``x`` and its null-intervention counterfactual."""
    images = counterfactual_images(scm, data, {})
    return float((images - data.images).abs().max())


@torch.no_grad()
def reversibility_error(scm: DeepSCM, data: EvalData, names: Sequence[str], pct: float = 10.0) -> dict[str, dict[str, float]]:
    """``x`` against the counterfactual of ``do(v = v * (1 + pct%))`` with ``v`` then set back."""
    report = {}
    device = scm.cond_mean.device
    for name in names:
        found = supported_targets(scm, data, name, pct)
        if found is None:
            continue
        sub, target = found
        pa = {k: v.to(device) for k, v in sub.parents.items()}
        x = sub.images.to(device)
        first = scm.counterfactual(x, pa, {name: target.to(device)}, use_mean=True)
        back = scm.counterfactual(first.image, first.parents, {name: pa[name]}, use_mean=True)
        diff = (back.image - x).abs().cpu()
        report[name] = {"mean_abs": round(float(diff.mean()), 5), "max_abs": round(float(diff.max()), 5), "n": len(target)}
    return report


def ground_truth_error(
    scm: DeepSCM, data: EvalData, phantom: Phantom, structure_of: Mapping[str, str], judge: Judge, modality: str, size: int,
) -> dict:
    """Mean abs pixel error (in ``[-1, 1]`` units) against the true counterfactual, and of not changing ``x``.

    ``unchanged_mae`` is also the size of the true change, ``mean |x_true - x|``; with the size
    of the model's own change, ``model_change`` = ``mean |x* - x|``, a large ``model_mae`` reads
    as a change too large (``model_change`` well above it) or in the wrong place (about equal).
    ``true_locality`` and ``model_locality`` say where each change lies: the share of it inside
    the factual target structure dilated as for :func:`locality`. The truth's share is what a
    perfect counterfactual scores on that measure (a child structure's change lies outside).

    The judge's label maps say whether a change moves structures or repaints them:
    ``true_relabelled`` and ``model_relabelled`` are the shares of each change on pixels whose
    judged label it changes (the truth's is near 1: the phantom only moves boundaries), and
    ``dice_unchanged`` and ``dice_model`` the Dice of the target structure's judged mask on
    ``x`` and on ``x*`` against its judged mask on the true counterfactual.
    """
    if data.noise is None:
        raise InputError("ground truth needs a phantom datalist (items with 'noise')")
    report = {}
    for name, structure in structure_of.items():
        entry = {}
        for pct in (-25.0, 25.0):
            target = Intervention(name, "percent", pct).apply(data.parents[name])
            ok = in_support(scm, name, target) & in_phantom_support(phantom, name, target)
            if not ok.any():
                continue
            idx = torch.nonzero(ok).flatten().tolist()
            true_t = true_counterfactuals(phantom, data, idx, name, target, modality, size)
            sub = subset(data, ok)
            model = counterfactual_images(scm, sub, {name: target[ok]})
            label = judge.structures[structure]
            mask = sub.labels == label
            judged = {k: judge.labels(v) for k, v in (("x", sub.images), ("model", model), ("true", true_t))}
            entry[f"{pct:+.0f}%"] = {
                "model_mae": round(float((model - true_t).abs().mean()), 5),
                "unchanged_mae": round(float((sub.images - true_t).abs().mean()), 5),
                "model_change": round(float((model - sub.images).abs().mean()), 5),
                "true_locality": round(float(locality(sub.images, true_t, mask).mean()), 4),
                "model_locality": round(float(locality(sub.images, model, mask).mean()), 4),
                "true_relabelled": round(float(relabelled_share(sub.images, true_t, judged["x"], judged["true"]).mean()), 4),
                "model_relabelled": round(float(relabelled_share(sub.images, model, judged["x"], judged["model"]).mean()), 4),
                "dice_unchanged": round(float(_dice(judged["x"] == label, judged["true"] == label).mean()), 4),
                "dice_model": round(float(_dice(judged["model"] == label, judged["true"] == label).mean()), 4),
                "n": len(idx),
            }
        report[name] = entry
    return report


def true_counterfactuals(
    phantom: Phantom, data: EvalData, idx: Sequence[int], name: str, target: torch.Tensor, modality: str, size: int
) -> torch.Tensor:
    """``(len(idx), 1, size, size)``: the phantom's true ``do(name = target[i])`` for samples ``idx``.

    Each is rendered from the sample's stored noise, written in the phantom's own format and
    read back through the models' preprocessing, so it compares with ``x*`` like for like.
    """
    if data.noise is None:
        raise InputError("true counterfactuals need a phantom datalist (items with 'noise')")
    pipeline = image_pipeline(size, modality, with_label=False)
    true = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in idx:
            image, _, parents = phantom.counterfactual(data.noise[i], {name: float(target[i])})
            path = Path(tmp) / f"true_{i}{phantom.image_suffix}"
            phantom.write_image(image, path, data.cases[i], parents)
            true.append(torch.as_tensor(pipeline({"image": str(path)})["image"]))
    return torch.stack(true).float()


def _dice(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per image, the Dice of two boolean masks ``(B, H, W)``; two empty masks agree (1)."""
    return compute_dice(a[:, None].float(), b[:, None].float(), include_background=True, ignore_empty=False)[:, 0]


def in_phantom_support(phantom: Phantom, name: str, values: torch.Tensor) -> torch.Tensor:
    """Which target values the phantom can render (its own support of ``name``)."""
    lo, hi = phantom.support[name]
    return (values >= lo) & (values <= hi)


def subset(data: EvalData, mask: torch.Tensor) -> EvalData:
    """The samples of ``data`` where ``mask`` is true."""
    idx = torch.nonzero(mask).flatten()
    return EvalData(
        cases=[data.cases[i] for i in idx.tolist()],
        images=data.images[idx],
        labels=data.labels[idx],
        parents={k: v[idx] for k, v in data.parents.items()},
        spacing=data.spacing[idx],
        noise=[data.noise[i] for i in idx.tolist()] if data.noise is not None else None,
    )


@torch.no_grad()
def test_elbo(scm: DeepSCM, data: EvalData, batch_size: int = 32) -> dict[str, float]:
    """Mean negative ELBO on the split, in nats and bits per dimension (8-bit discretized)."""
    device = scm.cond_mean.device
    parts = []
    for _, x, pa in batches(data, device, batch_size):
        parts.append(scm.image(x, scm.condition(pa))["elbo_per_sample"].cpu())
    elbo = float(torch.cat(parts).mean())
    return {"elbo_nats_per_dim": round(elbo, 4), "bits_per_dim": round(elbo / math.log(2), 4)}


@torch.no_grad()
def kl_per_level(scm: DeepSCM, data: EvalData, batch_size: int = 32) -> dict[str, float]:
    """Mean KL (nats per image dimension) of the posterior from the prior, per latent resolution.

    A level near 0 carries nothing about the image; where the anatomy's size goes through the
    latents instead of the parents, the coarse levels hold most of the KL.
    """
    device = scm.cond_mean.device
    total = None
    for _, x, pa in batches(data, device, batch_size):
        layers = scm.image(x, scm.condition(pa))["kl_layers"].cpu() * x.shape[0]
        total = layers if total is None else total + layers
    per_block = (total / len(data)).tolist()
    levels: dict[str, float] = {}
    for r, kl in zip(scm.image.latent_resolutions, per_block):
        levels[f"{r}x{r}"] = levels.get(f"{r}x{r}", 0.0) + kl
    return {k: round(v, 5) for k, v in levels.items()}


@torch.no_grad()
def decoder_dose_response(
    scm: DeepSCM, data: EvalData, judge: Judge, name: str, structure: str, changes: Sequence[float], batch_size: int = 32
) -> dict[float, float]:
    """Like :func:`dose_response`, between the decoder's means ``mu(z, pa)`` and ``mu(z, pa*)``.

    No pixel noise is abducted and the latents are the posterior means, so this is the
    decoder's own response to the parents. Where it follows the request and the
    counterfactual does not, the factual edges ride along in the abducted noise ``u_x``.
    """
    device = scm.cond_mean.device

    def decoded(sub: EvalData, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        before, after = [], []
        for sl, x, pa in batches(sub, device, batch_size):
            pa_cf = scm.parents.counterfactual(pa, {name: target[sl].to(device)})
            cond, cond_cf = scm.condition(pa), scm.condition(pa_cf)
            zs = scm.image.abduct_latents(x, cond, use_mean=True)
            before.append(scm.image.decode(zs, cond)[0].clamp(-1, 1).cpu())
            after.append(scm.image.decode(zs, cond_cf)[0].clamp(-1, 1).cpu())
        return torch.cat(before), torch.cat(after)

    return _dose_curve(scm, data, judge, name, structure, changes, decoded)


def dose_slope(curve: Mapping[float, float]) -> float | None:
    """Least-squares slope through the origin of judged against requested change (1: it follows exactly)."""
    points = [(float(r), float(m)) for r, m in curve.items() if float(r) != 0.0]
    if not points:
        return None
    return round(sum(r * m for r, m in points) / sum(r * r for r, _ in points), 3)


@torch.no_grad()
def folding(scm: DeepSCM, data: EvalData, names: Sequence[str], pcts: Sequence[float] = (-25.0, 25.0), batch_size: int = 32) -> dict[str, dict[str, float]]:
    """For a spatial mechanism and ``do(v *= 1 + pct%)``: the mean share of band pixels where the displacement folds.

    A fold (a non-positive Jacobian determinant of ``identity + phi``) tears or overlaps
    tissue; the diffeomorphic integration makes it rare, and this says how rare.
    """
    from segcft.models.spatial import folding_share

    device = scm.cond_mean.device
    report: dict[str, dict[str, float]] = {}
    for name in names:
        for pct in pcts:
            found = supported_targets(scm, data, name, pct)
            if found is None:
                continue
            (sub, target), shares = found, []
            for sl, x, pa in batches(sub, device, batch_size):
                cf = scm.counterfactual(x, pa, {name: target[sl].to(device)}, use_mean=True)
                shares.append(folding_share(cf.displacement, cf.band).cpu())
            report.setdefault(name, {})[f"{pct:+.0f}%"] = round(float(torch.cat(shares).mean()), 6)
    return report


def images_per_second(fn: Callable[[], int], repeats: int = 3) -> float:
    """Throughput of ``fn`` (which returns how many images it processed), after one warm-up call."""
    fn()
    start, n = time.perf_counter(), 0
    for _ in range(repeats):
        n += fn()
    return round(n / (time.perf_counter() - start), 2)


__all__ = [
    "EvalData",
    "Judge",
    "composition_error",
    "counterfactual_images",
    "effectiveness",
    "folding",
    "frechet_distance",
    "ground_truth_error",
    "images_per_second",
    "in_phantom_support",
    "in_support",
    "interventions_for",
    "load_split",
    "locality",
    "noise_floor",
    "relabelled_share",
    "reversibility_error",
    "subset",
    "test_elbo",
]
