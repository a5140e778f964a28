"""``segcft demo``: the main job, end to end, on a fresh clone with nothing downloaded but packages.

Makes a chest phantom (whose causal model is known), trains the guide and evaluation
segmentors and the causal generator through their MONAI bundles, fine-tunes the generator
with Seg-CFT, then measures both models against the evaluation segmentor and against the
phantom's true counterfactuals, and writes a Markdown report with figures and a model
package that ``segcft counterfactual`` reads. ``--data`` runs the same on a real datalist.

Two fine-tuned models stand beside the base: the seeds' Seg-CFT (the HVAE decodes ``x*``,
fine-tuned under the ELBO Lagrangian) and Spatial Seg-CFT (the same guide fine-tuning a
spatial mechanism that moves the structures' boundaries over the factual image,
:class:`~segcft.models.spatial.SpatialMechanism`). The package holds the spatial model.
"""

from __future__ import annotations

import copy
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import torch
import typer

from segcft.cli.common import user_errors

GRID_DO = "left_lung_area"


@user_errors
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Output folder for data, models, figures and the report."),
    seed: int = typer.Option(0, help="Seed of everything; the same seed gives the same figures."),
    data: Optional[Path] = typer.Option(None, help="A chest datalist (e.g. JSRT) instead of the embedded phantom."),
    n: int = typer.Option(200, min=20, help="Phantom cases to make (ignored with --data)."),
    size: int = typer.Option(64, help="Image size of every model."),
    segmentor_epochs: int = typer.Option(25, min=1, help="Epochs of each segmentor (the guide's soft areas need a confident segmentor)."),
    generator_epochs: int = typer.Option(25, min=1, help="Epochs of the causal generator."),
    cft_steps: int = typer.Option(100, min=1, help="Seg-CFT fine-tuning steps."),
    cft_lr: float = typer.Option(3e-4, help="Seg-CFT learning rate; above the bench's 1e-4 because the demo fine-tunes for only 100 steps, at some cost in ELBO."),
    spatial_steps: int = typer.Option(200, min=1, help="Spatial Seg-CFT fine-tuning steps (the spatial recipe's rate and weights)."),
    device: str = typer.Option("cpu", help="Torch device, e.g. cpu or cuda."),
) -> None:
    """Train segmentors, generator and Seg-CFT at small size; write counterfactuals and a report."""
    from segcft.data.datalist import load_datalist
    from segcft.data.phantom import make_phantom
    from segcft.utils import seed_everything

    command = "segcft " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    seed_everything(seed)
    start = time.perf_counter()
    out = Path(out)
    if data is None:
        typer.echo(f"[1/5] making {n} chest phantom cases at {size} px")
        datalist = make_phantom("cxr", size).write_dataset(out / "data", n, seed)
    else:
        datalist = Path(data)
        load_datalist(datalist)
    report = _run(datalist, out, seed, size, segmentor_epochs, generator_epochs, cft_steps, cft_lr, spatial_steps, device,
                  command, start)
    typer.echo(f"report: {report}")


def _run(
    datalist: Path, out: Path, seed: int, size: int, seg_epochs: int, gen_epochs: int, cft_steps: int, cft_lr: float,
    spatial_steps: int, device: str, command: str, start: float,
) -> Path:
    from monai.bundle import ConfigWorkflow

    from segcft.cft import SegmentorGuide
    from segcft.cft.factory import spatial_mechanism, structure_variables
    from segcft.cft.recipe import SPATIAL
    from segcft.cft.engine import elbo_bound
    from segcft.data.datalist import load_datalist, structures_of
    from segcft.data.phantom import phantom_from_datalist
    from segcft.evaluate import counterfactuals as cfe
    from segcft.evaluate.cft import finetune, locality_and_drift, shuffled_loader
    from segcft.evaluate.counterfactuals import dose_response
    from segcft.engines.loading import bundle_for, generator_config_files, load_generator, load_segmentor
    from segcft.evaluate.generator import load_judge
    from segcft.evaluate.segmentor import bench_segmentor
    from segcft.figures import dose_response as plot_dose_response, training_curves
    from segcft.serve.package import generator_settings, save_model_package
    from segcft.utils import atomic_path, write_json

    datalist = datalist.resolve()
    dl = load_datalist(datalist)
    structures = structures_of(dl)
    dev = torch.device(device)

    typer.echo(f"[2/5] training the guide (UNet) and evaluation (BasicUNet) segmentors, {seg_epochs} epochs each")
    seg_report_path = out / "segmentor.json"
    seg_report = bench_segmentor(datalist, seg_report_path, work_dir=out / "segmentor", image_size=size,
                                 epochs=seg_epochs, device=device, seed=seed, command=command)

    typer.echo(f"[3/5] training the causal generator (HVAE + flows), {gen_epochs} epochs")
    files = generator_config_files(bundle_for(dl, "generator"), dl)
    gen_root = (out / "generator").resolve()
    overrides = {"bundle_root": str(gen_root), "datalist": str(datalist), "device": device, "seed": seed,
                 "image_size": size, "epochs": gen_epochs, "val_interval": max(1, gen_epochs // 5),
                 "sample_interval": gen_epochs, "resume": False, "patience": gen_epochs,
                 "kl_warmup_steps": max(1, gen_epochs * len(dl["training"]) // 32)}
    t0 = time.perf_counter()
    wf = ConfigWorkflow(config_file=files, meta_file=None, logging_file=False, workflow_type="train", **overrides)
    wf.initialize()
    wf.run()
    wf.finalize()
    gen_seconds = time.perf_counter() - t0
    parser, ema = load_generator(files, {k: overrides[k] for k in ("bundle_root", "datalist", "device", "image_size")})
    base = ema.module
    variables = parser.get_parsed_content("variables")
    structure_of = structure_variables(dl, variables)
    modality = parser.get_parsed_content("modality")
    train = cfe.load_split(dl, "training", size, modality, variables)
    test = cfe.load_split(dl, "test", size, modality, variables)

    typer.echo(f"[4/5] Seg-CFT: fine-tuning the generator with the frozen guide segmentor, {cft_steps} steps, "
               f"then its spatial mechanism, {spatial_steps} steps")
    guide_net, guide_size = load_segmentor(seg_report_path, "guide", structures, dev)
    guide = SegmentorGuide(guide_net, structures, guide_size, structure_of)
    with torch.no_grad():  # the guide's own error on real images: Seg-CFT cannot be better than its guide
        guide_factual = float(guide.loss(test.images.to(dev), {k: v.to(dev) for k, v in test.parents.items()},
                                         test.spacing.to(dev), factual=test.images.to(dev)))
    eps = elbo_bound(base, shuffled_loader(train, 32, seed), slack=0.02, seed=seed)
    tuned = copy.deepcopy(base)
    t0 = time.perf_counter()
    # 100 steps are too few for the benchmarks' EMA (decay 0.995) to leave the base weights
    cft_out = finetune(tuned, guide, train, list(structure_of), eps, cft_steps, cft_lr, seed, lagrange_lr=0.1,
                       relative_targets=True, ema_decay=0.0, desc="Seg-CFT")
    cft_seconds = time.perf_counter() - t0
    tuned.eval()
    moving = copy.deepcopy(base).attach_spatial(spatial_mechanism(dl, variables, guide_net, guide_size, **SPATIAL.mechanism_options()))
    t0 = time.perf_counter()
    spatial_out = finetune(moving, guide, train, list(structure_of), eps, spatial_steps, SPATIAL.lr, seed, batch_size=SPATIAL.batch_size,
                           warmup=SPATIAL.warmup, guide_weight=SPATIAL.guide_weight, ema_decay=0.0,
                           bending_weight=SPATIAL.bending_weight, displacement_weight=SPATIAL.displacement_weight,
                           sparse_weight=SPATIAL.sparse_weight, desc="Spatial Seg-CFT")
    spatial_seconds = time.perf_counter() - t0
    moving.eval()

    typer.echo("[5/5] measuring both models with the evaluation segmentor and writing the report")
    judge = load_judge(seg_report_path, structures, dev)
    models = {"no fine-tuning": base, "Seg-CFT": tuned, "Spatial Seg-CFT": moving}
    phantom = phantom_from_datalist(dl) if "phantom" in dl else None
    results = {}
    for name, scm in models.items():
        entry = {
            **cfe.test_elbo(scm, test),
            "composition_max_abs": cfe.composition_error(scm, test),
            "effectiveness_mape_percent": cfe.effectiveness(scm, test, judge, structure_of, "mape", seed),
            "locality": locality_and_drift(scm, test, judge, structure_of),
            "dose_response": {GRID_DO: dose_response(scm, test, judge, GRID_DO, structure_of[GRID_DO])},
        }
        if phantom is not None:
            entry["ground_truth"] = cfe.ground_truth_error(scm, test, phantom, structure_of, judge, modality, size)
        results[name] = entry
    figures = out / "figures"
    grid = _grid(models, test, phantom, modality, size, figures / "counterfactuals.png")
    dose = plot_dose_response({m: r["dose_response"][GRID_DO] for m, r in results.items()}, figures / "dose_response.png",
                              title=f"do({GRID_DO} = x (1 + requested %)), {len(test)} test cases")
    curves = training_curves(gen_root / "eval" / "tensorboard", figures / "generator_curves.png")
    package = save_model_package(
        out / "model", moving, config=generator_settings(parser),
        datalist=dl, segmentor_net=guide_net, segmentor_entry=seg_report["instances"]["guide"],
        provenance={"method": "spatial-seg", "command": command, "seed": seed, "datalist": str(datalist),
                    "spatial_steps": spatial_steps, "spatial_recipe": asdict(SPATIAL)},
    )
    summary = {
        "command": command, "seed": seed, "datalist": str(datalist), "image_size": size, "eps": round(eps, 5),
        "cft": cft_out, "spatial_cft": spatial_out, "guide_soft_area_error_on_test_images": round(guide_factual, 4), "threads": torch.get_num_threads(),
        "seconds": {"generator": round(gen_seconds, 1), "cft": round(cft_seconds, 1), "spatial_cft": round(spatial_seconds, 1),
                    "segmentors": {k: v.get("train_seconds") for k, v in seg_report["instances"].items()},
                    "total": round(time.perf_counter() - start, 1)},
        "segmentors": {k: v["test_dice"] for k, v in seg_report["instances"].items()},
        "methods": results,
    }
    write_json(summary, out / "metrics.json")
    report = out / "report.md"
    with atomic_path(report) as tmp:
        tmp.write_text(_markdown(summary, structure_of, [grid, dose, curves], package, datalist.parent / dl["test"][0]["image"]), encoding="utf-8")
    return report


def _grid(models, data, phantom, modality: str, size: int, path: Path) -> Path:
    """Cases x (original | each model's counterfactual | the true counterfactual) of ``do(left lung -25%)``."""
    from segcft.causal.interventions import Intervention
    from segcft.evaluate import counterfactuals as cfe
    from segcft.figures import counterfactual_grid

    target = Intervention(GRID_DO, "percent", -25.0).apply(data.parents[GRID_DO])
    ok = torch.ones(len(data), dtype=torch.bool)
    for scm in models.values():
        ok &= cfe.in_support(scm, GRID_DO, target)
    idx = torch.nonzero(ok).flatten()[:4]
    sub = cfe.subset(data, torch.isin(torch.arange(len(data)), idx))
    cfs = {m: cfe.counterfactual_images(scm, sub, {GRID_DO: target[idx]}) for m, scm in models.items()}
    if phantom is not None:
        cfs["true (phantom)"] = cfe.true_counterfactuals(phantom, data, idx.tolist(), GRID_DO, target, modality, size)
    rows = [{"label": sub.cases[j], "original": sub.images[j, 0].numpy(),
             "counterfactuals": {m: images[j, 0].numpy() for m, images in cfs.items()}} for j in range(len(idx))]
    return counterfactual_grid(rows, path, title=f"do({GRID_DO} = -25%)")


def _markdown(summary: dict, structure_of: dict, figures: list[Path], package: Path, example: Path) -> str:
    methods = summary["methods"]
    lines = ["# segcft demo report", "", f"Command: `{summary['command']}` (seed {summary['seed']}, "
             f"{summary['image_size']} px, {summary['threads']} threads, {summary['seconds']['total']:.0f} s in all).",
             f"Data: `{summary['datalist']}`. Every number below is in `metrics.json` next to this report.", "",
             "## Segmentors (test Dice)", "", "| instance | " + " | ".join(next(iter(summary["segmentors"].values()))) + " |",
             "|---" * (1 + len(next(iter(summary["segmentors"].values())))) + "|"]
    for inst, dice in summary["segmentors"].items():
        lines.append(f"| {inst} | " + " | ".join(f"{v:.3f}" for v in dice.values()) + " |")
    cft, spatial = summary["cft"], summary["spatial_cft"]
    lines += ["", "## Counterfactuals: no fine-tuning, Seg-CFT and Spatial Seg-CFT", "",
              "Seg-CFT is the seeds' method: the HVAE decodes x* and is fine-tuned by the guide's soft areas under the "
              f"ELBO Lagrangian (last step: guide loss {cft['guide_loss']}, training-batch ELBO {cft['elbo']}, eps {cft['eps']}, "
              f"lambda {cft['lambda']}). Spatial Seg-CFT fine-tunes, with the same guide, a spatial mechanism that moves the "
              "intervened structures' boundaries over the factual image and leaves the HVAE as it is "
              f"(last step: guide loss {spatial['guide_loss']}). The guide's own mean relative error of the soft areas on the "
              f"real test images is {summary['guide_soft_area_error_on_test_images']}: fine-tuning cannot be more precise "
              "than its guide.", "",
              "Effectiveness is the MAPE (%) of the area the *evaluation* segmentor measures on x* against the requested "
              "value; locality is the share of |x* - x| inside the target structure dilated by 3 px, and with "
              "descendants inside the target and the structures of its causal descendants; drift is the mean "
              "change (%) of the other structures' areas; ELBO is on the test split (eps = "
              f"{summary['eps']} nats/dim bounds Seg-CFT on training data).", "",
              "| model | variable | MAPE -25% | MAPE +25% | MAPE do ~ test | locality | with descendants | drift % | test ELBO |",
              "|---|---|---|---|---|---|---|---|---|"]
    for m, r in methods.items():
        for v in structure_of:
            e, loc = r["effectiveness_mape_percent"][v], r["locality"].get(v, {})
            lines.append(f"| {m} | {v} | {e.get('-25%', '-')} | {e.get('+25%', '-')} | {e.get('test distribution', '-')} "
                         f"| {loc.get('locality', '-')} | {loc.get('locality_causal', '-')} | {loc.get('off_target_drift_percent', '-')} "
                         f"| {r['elbo_nats_per_dim']} |")
    if all("ground_truth" in r for r in methods.values()):
        lines += ["", "## Against the true counterfactuals of the phantom", "",
                  "Mean absolute pixel error (images in [-1, 1]) against the counterfactual the phantom renders from each "
                  "case's stored noise; 'unchanged' is the error of returning the input.", "",
                  "| variable | change | unchanged | " + " | ".join(methods) + " |", "|---|---|---|" + "---|" * len(methods)]
        first = next(iter(methods.values()))["ground_truth"]
        for v, changes in first.items():
            for change, cell in changes.items():
                lines.append(f"| {v} | {change} | {cell['unchanged_mae']} | "
                             + " | ".join(str(r["ground_truth"][v][change]["model_mae"]) for r in methods.values()) + " |")
        lines += ["", "Dice of the target's judged mask with its judged mask on the true counterfactual (did the boundary "
                  "move where the phantom moves it?):", "",
                  "| variable | change | unchanged | " + " | ".join(methods) + " |", "|---|---|---|" + "---|" * len(methods)]
        for v, changes in first.items():
            for change, cell in changes.items():
                lines.append(f"| {v} | {change} | {cell['dice_unchanged']} | "
                             + " | ".join(str(r["ground_truth"][v][change]["dice_model"]) for r in methods.values()) + " |")
    lines += ["", f"## Dose-response of {GRID_DO}", "",
              "The evaluation segmentor's mean change of the structure against the requested change (%):", "",
              "| model | " + " | ".join(f"{float(c):+.0f}%" for c in next(iter(methods.values()))["dose_response"][GRID_DO]) + " |",
              "|---|" + "---|" * len(next(iter(methods.values()))["dose_response"][GRID_DO])]
    for m, r in methods.items():
        lines.append(f"| {m} | " + " | ".join(f"{g:+.1f}" for g in r["dose_response"][GRID_DO].values()) + " |")
    lines += ["", "## Figures", ""] + [f"![{f.stem}]({f.relative_to(package.parent)})" for f in figures]
    lines += ["", "## Use the fine-tuned model", "", f"The Spatial Seg-CFT model is packaged in `{package}`. For example, on a test image:",
              "", "```bash", f"segcft counterfactual --model {package} --input {example} --do \"left_lung_area=*0.8\" "
              f"--out {package.parent / 'counterfactuals'}", "```", ""]
    return "\n".join(lines)
