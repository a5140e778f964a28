"""``segcft bench cft``: no fine-tuning, Reg-CFT, Seg-CFT and Positional Seg-CFT, side by side.

One base generator, one ELBO bound ``eps``, the same interventions and the same judge for
every method: each method fine-tunes its own copy of the base model for the same number of
steps, and everything is measured on the test split (METHOD.md sections 3 and 4).
"""

from __future__ import annotations

import copy
import os
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.handlers import ProgressBar
from monai.handlers import LrScheduleHandler
from torch.optim.lr_scheduler import LinearLR

from segcft.causal.interventions import Intervention
from segcft.cft import InterventionSampler, LagrangeMultiplier, SegmentorGuide, train_regressor
from segcft.cft.factory import guide_kind, make_guide, regional_variables, spatial_mechanism, structure_variables
from segcft.cft.guides import Guide
from segcft.cft.lagrangian import check_init
from segcft.cft.recipe import LOCALITY_RECIPES, RECIPE, SPATIAL, LocalityTerms, SpatialRecipe
from segcft.cft.views import GuideViews
from segcft.data.datalist import load_datalist, structures_of
from segcft.data.phantom import Phantom, phantom_from_datalist
from segcft.cft.engine import CFTTrainer, elbo_bound, trainable
from segcft.evaluate import counterfactuals as cfe
from segcft.evaluate.counterfactuals import mean_change_percent, relative_counterfactuals
from segcft.engines.generator import ema_model
from segcft.engines.loading import bundle_for, generator_config_files, load_generator, load_segmentor
from segcft.evaluate.generator import load_judge
from segcft.figures import cft_curves, counterfactual_grid
from segcft.measure import RegionSpec
from segcft.utils import InputError, atomic_path, write_json

METHODS = ("none", "reg", "seg", "pos-seg", "local-seg", "local-pos-seg", "spatial-reg", "spatial-seg", "spatial-pos-seg")
#: A ``local-`` method is Seg-CFT (or Positional Seg-CFT) on the direct HVAE output with the
#: bench's locality terms; without the prefix, the seeds' loss.
LOCAL_PREFIX = "local-"


def shuffled_loader(data: cfe.EvalData, batch_size: int, seed: int) -> torch.utils.data.DataLoader:
    """A seeded, shuffled loader over an in-memory split, in the batch layout the engines expect."""
    items = [{"image": data.images[i], "parents": {k: v[i] for k, v in data.parents.items()}, "spacing": data.spacing[i]}
             for i in range(len(data))]
    return torch.utils.data.DataLoader(items, batch_size=batch_size, shuffle=True, drop_last=len(items) > batch_size,
                                       generator=torch.Generator().manual_seed(seed))


def finetune(
    scm, guide: Guide, train: cfe.EvalData, targets: Sequence[str], eps: float, steps: int, lr: float, seed: int,
    batch_size: int = RECIPE.batch_size, lagrange_lr: float = RECIPE.lagrange_lr, damping: float = RECIPE.damping,
    lagrange_init: float = RECIPE.lagrange_init, warmup: int = RECIPE.warmup, guide_weight: float = RECIPE.guide_weight,
    relative_targets: bool = RECIPE.relative_targets, guide_views: float = RECIPE.guide_views, ema_decay: float = RECIPE.ema_decay,
    bending_weight: float = SPATIAL.bending_weight, displacement_weight: float = SPATIAL.displacement_weight,
    sparse_weight: float = SPATIAL.sparse_weight,
    locality: LocalityTerms = LOCALITY_RECIPES["seeds"], desc: str = "CFT", trace_every: int = 25, amp: bool = False, channels_last: bool = False,
) -> dict[str, Any]:
    """Counterfactual fine-tuning of ``scm`` for ``steps`` iterations, with a progress bar.

    Returns the last iteration's output and a ``trace``: every ``trace_every`` steps, the mean
    factual ELBO and guide loss of those steps and lambda at their end, so a report shows
    when the ELBO left its bound and how lambda answered, not only where both ended (a
    spatial head, which leaves the HVAE frozen, has no ELBO in either).

    The learning rate warms up linearly over ``warmup`` steps: Adam's first, unscaled steps
    otherwise knock the pre-trained ELBO far out of its bound. With ``ema_decay`` > 0, ``scm``
    ends as the exponential moving average of the fine-tuned weights (no warm-up: it starts
    at the pre-trained ones); the defaults are :data:`segcft.cft.recipe.RECIPE`. ``locality``
    adds the terms of :mod:`segcft.cft.locality` (default: none, the seeds' loss). ``amp`` and
    ``channels_last`` are the engine's precision (:class:`~segcft.engines.generator.Precision`).
    """
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(trainable(scm), lr=lr, weight_decay=0.01)
    ema = ema_model(scm, ema_decay, warmup=False) if ema_decay > 0 else None
    trainer = CFTTrainer(
        scm.cond_mean.device, 1, shuffled_loader(train, batch_size, seed), scm, guide,
        InterventionSampler(targets, scm.support, seed=seed),
        optimizer, LagrangeMultiplier(init=lagrange_init, lr=lagrange_lr, damping=damping), eps, ema=ema, epoch_length=steps,
        guide_weight=guide_weight, relative_targets=relative_targets, guide_views=guide_views,
        bending_weight=bending_weight, displacement_weight=displacement_weight, sparse_weight=sparse_weight, locality=locality, amp=amp, channels_last=channels_last,
    )
    if warmup > 0:
        LrScheduleHandler(LinearLR(optimizer, start_factor=1.0 / warmup, total_iters=warmup), epoch_level=False).attach(trainer)
    means = ("guide_loss",) if scm.spatial is not None else ("elbo", "guide_loss")  # a spatial head logs no ELBO
    ProgressBar(persist=True, desc=desc).attach(trainer, output_transform=lambda out: {k: out[k] for k in (*means, "lambda")})
    trace: dict[str, list[float]] = {"step": [], **{k: [] for k in means}, "lambda": []}
    window: list[dict[str, float]] = []

    @trainer.on(Events.ITERATION_COMPLETED)
    def _record(engine: Engine) -> None:
        window.append(engine.state.output)
        if len(window) == trace_every or engine.state.iteration == steps:
            trace["step"].append(engine.state.iteration)
            for key in means:
                trace[key].append(round(sum(out[key] for out in window) / len(window), 5))
            trace["lambda"].append(round(window[-1]["lambda"], 5))
            window.clear()

    trainer.run()
    if ema is not None:
        scm.load_state_dict(ema.module.state_dict())
    return ({k: round(v, 5) for k, v in trainer.state.output.items()}
            | {"skipped_updates": trainer.state.skipped_updates, "precision": trainer.precision.settings(), "trace": trace})


def locality_and_drift(
    scm, data: cfe.EvalData, judge: cfe.Judge, structure_of: Mapping[str, str], pct: float = -25.0, dilation: int = 3
) -> dict[str, dict[str, Any]]:
    """For ``do(v *= 1 + pct%)``: locality, locality with descendants, and off-target drift (%).

    ``locality`` is METHOD.md's: the share of |x*-x| in the dilated target. ``locality_causal``
    is the share in the dilated target *and* the structures whose variables are causal
    descendants of ``v``: ``do(right lung)`` *should* move a left lung that is its child in the
    graph, so a counterfactual that does so scores below 1 on ``locality`` but not on this.
    Drift is the mean change of the structures that the intervention must leave alone: every
    structure of the judge except the target and those descendants (their change is the
    counterfactual's effect, not a leak). ``held`` names the structures counted; with none,
    there is no drift to report.
    """
    report = {}
    for name, structure in structure_of.items():
        found = relative_counterfactuals(scm, data, name, pct)
        if found is None:
            continue
        sub, _, images = found
        target = sub.labels == judge.structures[structure]
        share = cfe.locality(sub.images, images, target, dilation)
        before, after = judge.areas(sub.images, sub.spacing), judge.areas(images, sub.spacing)
        downstream = {structure_of[v] for v in scm.graph.descendants(name) if v in structure_of}
        causal = target | torch.isin(sub.labels, torch.as_tensor([judge.structures[s] for s in downstream], dtype=sub.labels.dtype))
        held = [s for s in judge.structures if s != structure and s not in downstream]
        drift = [(100 * (after[s] - before[s]).abs() / before[s].clamp(min=1e-6)).mean() for s in held]
        report[name] = {"locality": round(float(share.mean()), 4),
                        "locality_causal": round(float(cfe.locality(sub.images, images, causal, dilation).mean()), 4),
                        "held": held, "n": len(sub)}
        if drift:
            report[name]["off_target_drift_percent"] = round(float(torch.stack(drift).mean()), 3)
    return report


def guide_agreement(
    scm, data: cfe.EvalData, guide: Guide, judge: cfe.Judge, structure_of: Mapping[str, str], pcts: Sequence[float] = (-25.0, 25.0),
    batch_size: int = 32,
) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """For ``do(v *= 1 + pct%)``: each structure's mean change (%) from ``x`` to ``x*``, requested and as measured.

    The guide's measure is what fine-tuning optimised; the judge's is independent. Where the
    two part, the counterfactual satisfies the network that guided it more than it changes the
    structure (METHOD.md section 4: a generator can learn to fool its guide).
    """
    names = [v for v in structure_of if v in guide.variables]
    device = next(guide.parameters()).device

    def guided(images: torch.Tensor, factual: torch.Tensor, spacing: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = []
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                sl = slice(start, start + batch_size)
                parts.append(guide.measure(images[sl].to(device), spacing[sl].to(device), factual[sl].to(device)))
        return {v: torch.cat([part[v] for part in parts]).cpu() for v in names}

    report: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for name in names:
        for pct in pcts:
            found = relative_counterfactuals(scm, data, name, pct)
            if found is None:
                continue
            sub, target, images = found
            with torch.no_grad():
                pa_cf = scm.parents.counterfactual({k: v.to(scm.cond_mean.device) for k, v in sub.parents.items()},
                                                   {name: target.to(scm.cond_mean.device)})
            g0, g1 = guided(sub.images, sub.images, sub.spacing), guided(images, sub.images, sub.spacing)
            j0, j1 = judge.areas(sub.images, sub.spacing), judge.areas(images, sub.spacing)
            report.setdefault(name, {})[f"{pct:+.0f}%"] = {
                v: {"requested": round(mean_change_percent(pa_cf[v].cpu(), sub.parents[v]), 2),
                    "guide": round(mean_change_percent(g1[v], g0[v]), 2),
                    "judge": round(mean_change_percent(j1[structure_of[v]], j0[structure_of[v]]), 2)}
                for v in names
            }
    return report


def realism(scm, data: cfe.EvalData, judge: cfe.Judge, names: Sequence[str], seed: int) -> float:
    """Frechet distance between real test images and their counterfactuals (values drawn from the test split)."""
    feats = []
    for name in names:
        target, ok = cfe.interventions_for(scm, data, name, seed)["test distribution"]
        if ok.any():
            sub = cfe.subset(data, ok)
            feats.append(judge.features(cfe.counterfactual_images(scm, sub, {name: target[ok]})))
    return round(cfe.frechet_distance(judge.features(data.images), torch.cat(feats)), 4)


def region_judge(judge: cfe.Judge, spec: RegionSpec) -> SegmentorGuide:
    """The judge measuring the regions of ``spec``, with the partition of the factual image held fixed."""
    return SegmentorGuide(judge.network, judge.structures, judge.size, {}, {v: (spec, i) for i, v in enumerate(spec.variable_names())})


def region_change(
    before: Mapping[str, torch.Tensor], after: Mapping[str, torch.Tensor], target: torch.Tensor, name: str,
    others: Sequence[str], metric: str,
) -> dict[str, float]:
    """Summary of one regional intervention from the judge's region areas before and after it.

    ``target_<metric>``: error of the targeted region against the requested value (the judge's
    bias included, as for whole structures). ``target_change_percent``: the change the judge
    measured in the targeted region, summed over cases, against its own factual measure (its
    bias cancels), to set beside the requested change. ``other_regions_change``: how much the
    structure's other regions moved (percent of their factual area, or mm^2 with ``"mae"``).
    """
    unit = "percent" if metric == "mape" else "mm2"
    moved = [(after[v] - before[v]).abs() for v in others]
    if metric == "mape":
        moved = [100 * m / before[v].clamp(min=1e-6) for m, v in zip(moved, others)]
    return {
        f"target_{metric}_{unit}": round(cfe.error(after[name], target, metric), 3),
        "target_change_percent": round(float(100 * (after[name].sum() / before[name].sum().clamp(min=1e-6) - 1)), 3),
        f"other_regions_change_{unit}": round(float(torch.stack([m.mean() for m in moved]).mean()), 3),
    }


def positional(
    scm, data: cfe.EvalData, judge: cfe.Judge, regional: Mapping[str, tuple[RegionSpec, int]], metric: str = "mape",
    pct: float = -25.0,
) -> dict:
    """``do(region *= 1 + pct%)``: the targeted region's error, its measured change, and how much
    the structure's other regions moved (:func:`region_change`).

    Regions are measured by the judge with the partition of the factual image held fixed. Only
    cases whose targeted region is not empty count (a relative change of an empty plaque sector
    asks for nothing). With ``metric="mape"`` the errors are percentages; with ``"mae"`` they
    are mm^2, because the other regions are often empty too. ``noise_floor`` is the judge's own
    error on the factual images of those cases, against the recorded regional parents.
    """
    report = {}
    for name, (spec, _) in regional.items():
        present = data.parents[name] > 0
        if not present.any():
            continue
        found = relative_counterfactuals(scm, cfe.subset(data, present), name, pct)
        if found is None:
            continue
        sub, target, images = found
        measure = region_judge(judge, spec).measure
        with torch.no_grad():
            before = measure(sub.images, sub.spacing, factual=sub.images)
            after = measure(images, sub.spacing, factual=sub.images)
        others = [v for v in spec.variable_names() if v != name]
        report[name] = {
            "requested_change_percent": pct,
            **region_change(before, after, target, name, others, metric),
            "noise_floor": round(cfe.error(before[name], sub.parents[name], metric), 3),
            "n": len(sub),
        }
    return report


def measure_model(
    scm, datalist: Mapping, data: cfe.EvalData, judge: cfe.Judge, modality: str, size: int, seed: int = 0,
    guide: Guide | None = None,
) -> dict[str, Any]:
    """Every measure of one (fine-tuned) generator on ``data``: ELBO, composition, reversibility,
    effectiveness, locality and drift, realism, positional and ground-truth errors where they apply,
    and with the ``guide`` it was fine-tuned against, how far guide and judge agree."""
    scm.eval()
    structure_of = structure_variables(datalist, scm.variables)
    regional = regional_variables(datalist, scm.variables)
    metric = "mape" if modality == "cxr" else "mae"
    entry: dict[str, Any] = {
        **cfe.test_elbo(scm, data),
        "composition_max_abs": cfe.composition_error(scm, data),
        "reversibility": cfe.reversibility_error(scm, data, list(structure_of)),
        "effectiveness": cfe.effectiveness(scm, data, judge, structure_of, metric, seed),
        "locality": locality_and_drift(scm, data, judge, structure_of),
        "realism_frechet": realism(scm, data, judge, list(structure_of), seed),
    }
    if regional:
        entry["positional"] = positional(scm, data, judge, regional, metric)
    if scm.spatial is not None:
        entry["folding_share"] = cfe.folding(scm, data, list(structure_of))
    first = next(iter(structure_of))
    shrink = {first: Intervention(first, "percent", -25.0).apply(data.parents[first]).clamp(*scm.support[first])}
    entry["counterfactual_images_per_second"] = cfe.images_per_second(
        lambda: len(cfe.counterfactual_images(scm, data, shrink)), repeats=2)
    if "phantom" in datalist:
        entry["ground_truth"] = cfe.ground_truth_error(
            scm, data, phantom_from_datalist(datalist), structure_of, judge, modality, size
        )
    if guide is not None:  # last: it draws no random numbers, but keeps the measures above as they were
        entry["guide_agreement"] = guide_agreement(scm, data, guide, judge, structure_of)
    return entry


def bench_cft(
    datalist: str | os.PathLike,
    out: str | os.PathLike,
    *,
    generator_run: str | os.PathLike,
    segmentor_report: str | os.PathLike,
    methods: Sequence[str] = METHODS,
    steps: int = RECIPE.steps,
    lr: float = RECIPE.lr,
    guide_weight: float = RECIPE.guide_weight,
    lagrange_lr: float = RECIPE.lagrange_lr,
    damping: float = RECIPE.damping,
    lagrange_init: float = RECIPE.lagrange_init,
    relative_targets: bool = RECIPE.relative_targets,
    guide_views: float = RECIPE.guide_views,
    ema_decay: float = RECIPE.ema_decay,
    eps_slack: float = RECIPE.eps_slack,
    regressor_epochs: int = 40,
    device: str = "cpu",
    seed: int = 0,
    command: str | None = None,
    config_overrides: dict[str, Any] | None = None,
    config_files: Sequence[str | os.PathLike] = (),
    figure_cases: int = 4,
    spatial: SpatialRecipe = SPATIAL,
    locality: LocalityTerms = LOCALITY_RECIPES["local"],
) -> dict[str, Any]:
    """Fine-tune with each guide and measure every method; write JSON, a Markdown table and a figure.

    A ``local-`` method (``local-seg``, ``local-pos-seg``) adds the ``locality`` terms to the
    seeds' loss, so both are fine-tuned from the same base with the same interventions.

    A ``spatial-`` method (e.g. ``spatial-seg``) fine-tunes a fresh spatial mechanism on the
    base model with the same guide, under the ``spatial`` recipe (its own steps and rate).
    """
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise InputError(f"unknown CFT method(s) {sorted(unknown)}; known: {list(METHODS)}")
    check_init(lagrange_init)  # before the models load, not at the first fine-tuning
    GuideViews(guide_views)  # likewise: a strength outside [0, 1] is refused here
    torch.manual_seed(seed)
    datalist = Path(datalist).resolve()
    dl = load_datalist(datalist)
    bundle = bundle_for(dl, "generator")
    files = generator_config_files(bundle, dl, extra=config_files)
    overrides = {**(config_overrides or {}), "bundle_root": str(Path(generator_run).resolve()), "datalist": str(datalist), "device": device}
    parser, base = load_generator(files, overrides)
    variables = parser.get_parsed_content("variables")
    size, modality = parser.get_parsed_content("image_size"), parser.get_parsed_content("modality")
    structures = structures_of(dl)
    dev = torch.device(device)
    train = cfe.load_split(dl, "training", size, modality, variables)
    test = cfe.load_split(dl, "test", size, modality, variables)
    judge = load_judge(segmentor_report, structures, dev)
    structure_of = structure_variables(dl, variables)
    regional = regional_variables(dl, variables)
    if "pos-seg" in methods and not regional:
        raise InputError("pos-seg needs a generator whose parents include regional variables (e.g. left_lung_lower_area)")
    metric = "mape" if modality == "cxr" else "mae"
    eps = elbo_bound(base.module, shuffled_loader(train, 32, seed), eps_slack, seed)
    report: dict[str, Any] = {
        "benchmark": "cft", "command": command, "datalist": str(datalist), "generator_run": overrides["bundle_root"],
        "segmentors": str(segmentor_report), "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "seed": seed, "steps": steps, "lr": lr, "guide_weight": guide_weight, "lagrange_lr": lagrange_lr,
        "damping": damping, "lagrange_init": lagrange_init, "relative_targets": relative_targets, "guide_views": guide_views, "ema_decay": ema_decay, "eps": round(eps, 5), "eps_slack": eps_slack, "variables": variables, "latents": base.module.latents,
        **({"spatial": asdict(spatial)} if any(guide_kind(m)[1] for m in methods) else {}),
        **({"locality": asdict(locality)} if any(m.startswith(LOCAL_PREFIX) for m in methods) else {}),
        "effectiveness_metric": "MAPE (%)" if metric == "mape" else "MAE (mm2)", "test_cases": len(test),
        "noise_floor": cfe.noise_floor(test, judge, structure_of, metric),
        "realism_features": "evaluation segmentor (BasicUNet) deepest encoder level, globally pooled",
        "methods": {},
    }
    models = {}
    for method in methods:
        # Each method starts from the same random state, so its figures do not depend on which
        # methods ran before it (a spatial head is initialised before its fine-tuning reseeds).
        torch.manual_seed(seed)
        scm = copy.deepcopy(base.module)
        entry: dict[str, Any] = {}
        guide = None
        if method != "none":
            local = method.startswith(LOCAL_PREFIX)
            kind, moves = guide_kind(method.removeprefix(LOCAL_PREFIX))
            guide = make_guide(
                kind, dl, variables,
                segmentor=lambda: load_segmentor(segmentor_report, "guide", structures, dev),
                regressor=lambda names: train_regressor(train.images, train.parents, names, epochs=regressor_epochs,
                                                        seed=seed, device=dev).to(dev),
            )
            start = time.perf_counter()
            if moves:
                scm.attach_spatial(spatial_mechanism(dl, variables, *load_segmentor(segmentor_report, "guide", structures, dev),
                                                     **spatial.mechanism_options()))
                entry["finetune"] = finetune(scm, guide, train, guide.variables, eps, spatial.steps, spatial.lr, seed,
                                             batch_size=spatial.batch_size, warmup=spatial.warmup, guide_weight=spatial.guide_weight,
                                             relative_targets=relative_targets, guide_views=guide_views, ema_decay=0.0,
                                             bending_weight=spatial.bending_weight, displacement_weight=spatial.displacement_weight,
                                             sparse_weight=spatial.sparse_weight,
                                             desc=f"CFT {method}")
            else:
                entry["finetune"] = finetune(scm, guide, train, guide.variables, eps, steps, lr, seed, lagrange_lr=lagrange_lr,
                                             damping=damping, lagrange_init=lagrange_init, guide_weight=guide_weight, relative_targets=relative_targets, guide_views=guide_views,
                                             ema_decay=ema_decay, locality=locality if local else LOCALITY_RECIPES["seeds"],
                                             desc=f"CFT {method}")
            entry["finetune_seconds"] = round(time.perf_counter() - start, 1)
            entry["seconds_per_step"] = round(entry["finetune_seconds"] / (spatial.steps if moves else steps), 4)
        # The constraint is on the training split's ELBO, so that is where it is judged.
        entry["train_elbo_nats_per_dim"] = round(elbo_bound(scm, shuffled_loader(train, 32, seed), 0.0, seed), 5)
        entry["within_eps"] = entry["train_elbo_nats_per_dim"] <= eps
        entry.update(measure_model(scm, dl, test, judge, modality, size, seed, guide))
        report["methods"][method] = entry
        models[method] = scm
    write_json(report, out)
    _write_table(report, Path(out).with_suffix(".md"))
    phantom = phantom_from_datalist(dl) if "phantom" in dl else None
    _write_figure(models, test, structure_of, Path(out).with_suffix(".png"), figure_cases, phantom, modality, size)
    traces = method_traces(report)
    if traces:
        cft_curves(traces, eps, curves_path(out))
    return report


def method_traces(report: Mapping[str, Any]) -> dict[str, Any]:
    """The fine-tuning trace of each method of a ``bench cft`` report that has one (not ``none``, nor older reports)."""
    return {m: e["finetune"]["trace"] for m, e in report["methods"].items() if "trace" in e.get("finetune", {})}


def curves_path(out: str | os.PathLike) -> Path:
    """Where ``bench cft`` draws the fine-tuning traces: ``<stem>_curves.png`` beside its report."""
    return Path(out).with_name(Path(out).stem + "_curves.png")


def _write_table(report: Mapping[str, Any], path: Path) -> None:
    """The headline numbers as Markdown: effectiveness (test-distribution do), locality, drift, ELBO, realism."""
    lines = [f"Effectiveness: {report['effectiveness_metric']} of the judge-measured area (noise floor: "
             + ", ".join(f"{k} {v}" for k, v in report["noise_floor"].items()) + f"); eps = {report['eps']} nats/dim", ""]
    lines.append("| method | variable | do ~ test split | -25% | +25% | locality | with descendants | off-target drift % | train ELBO "
                 "| test ELBO | realism FD |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for method, entry in report["methods"].items():
        for name, eff in entry["effectiveness"].items():
            loc = entry["locality"].get(name, {})
            lines.append(
                f"| {method} | {name} | {eff.get('test distribution', '-')} | {eff.get('-25%', '-')} | {eff.get('+25%', '-')} "
                f"| {loc.get('locality', '-')} | {loc.get('locality_causal', '-')} | {loc.get('off_target_drift_percent', '-')} "
                f"| {entry['train_elbo_nats_per_dim']} "
                f"| {entry['elbo_nats_per_dim']} "
                f"| {entry['realism_frechet']} |"
            )
    positional_rows = [(method, name, pos) for method, entry in report["methods"].items() for name, pos in entry.get("positional", {}).items()]
    if positional_rows:
        unit = "percent" if report["effectiveness_metric"].startswith("MAPE") else "mm2"
        metric = "mape" if unit == "percent" else "mae"
        lines += ["", f"Positional: do(region *= 1 + requested %); target error and the judge's noise floor in {metric.upper()} "
                  f"({unit}), other regions' change in {unit}", "",
                  "| method | region | requested % | measured change % | target error | noise floor | other regions' change |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {method} | {name} | {pos['requested_change_percent']} | {pos['target_change_percent']} | "
                  f"{pos[f'target_{metric}_{unit}']} | {pos['noise_floor']} | {pos[f'other_regions_change_{unit}']} |"
                  for method, name, pos in positional_rows]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _write_figure(
    models: Mapping[str, Any], data: cfe.EvalData, structure_of: Mapping[str, str], path: Path, cases: int,
    phantom: Phantom | None = None, modality: str = "cxr", size: int = 64,
) -> None:
    """Rows: cases; columns: the original, then each method's counterfactual of the same do() with its
    difference, and on a phantom the true counterfactual last."""
    name = next(iter(structure_of))
    target = Intervention(name, "percent", -25.0).apply(data.parents[name])
    ok = torch.ones(len(data), dtype=torch.bool)
    for scm in models.values():
        ok &= cfe.in_support(scm, name, target)
    if phantom is not None:
        ok &= cfe.in_phantom_support(phantom, name, target)
    idx = torch.nonzero(ok).flatten()[:cases]
    sub = cfe.subset(data, torch.isin(torch.arange(len(data)), idx))
    n = len(idx)
    cfs = {m: cfe.counterfactual_images(scm, sub, {name: target[idx]}) for m, scm in models.items()}
    if phantom is not None:
        cfs["true (phantom)"] = cfe.true_counterfactuals(phantom, data, idx.tolist(), name, target, modality, size)
    rows = [{"label": sub.cases[i], "original": sub.images[i, 0].numpy(),
             "counterfactuals": {m: images[i, 0].numpy() for m, images in cfs.items()}} for i in range(n)]
    counterfactual_grid(rows, path, title=f"do({name} = -25%)")
