"""``segcft bench``: benchmarks that write JSON (speed and quality targets live here, not in tests)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer

from segcft.cli.common import parse_overrides, user_errors
from segcft.utils import InputError, atomic_path

app = typer.Typer(help="Benchmarks that train/evaluate at real sizes and write JSON reports.", no_args_is_help=True)


@app.command("segmentor")
@user_errors
def segmentor(
    data: Path = typer.Option(..., help="Datalist JSON (JSRT or phantom); its modality picks the bundle."),
    out: Path = typer.Option(..., help="Report JSON to write."),
    work_dir: Path = typer.Option(Path("runs/bench_segmentor"), help="Bundle root for checkpoints, TensorBoard and metrics."),
    bundle: Path = typer.Option(None, help="Segmentor bundle folder (default: bundles/<modality>_segmentor)."),
    instances: str = typer.Option("guide,eval", help="Comma-separated instances: guide (UNet), eval (BasicUNet)."),
    image_size: int = typer.Option(None, help="Override the bundle's image size."),
    epochs: int = typer.Option(None, help="Override the bundle's maximum epochs."),
    device: str = typer.Option(None, help="Device, e.g. cpu or cuda:0 (default: the bundle's)."),
    seed: int = typer.Option(0, help="Training seed of the guide; the evaluation instance uses seed + 1."),
    reuse: bool = typer.Option(False, help="Evaluate existing model.pt checkpoints instead of training."),
    set_: list[str] = typer.Option([], "--set", help="Bundle config override KEY=VALUE (VALUE as JSON), repeatable, e.g. normalise=percentile."),
) -> None:
    """Train (or reuse) the guide and evaluation segmentors; report Dice, area MAPE/MAE and speed."""
    from segcft.evaluate.segmentor import bench_segmentor

    report = bench_segmentor(
        data, out, work_dir=work_dir, bundle=bundle, instances=[i for i in instances.split(",") if i],
        image_size=image_size, epochs=epochs, device=device, seed=seed, reuse=reuse,
        command=shlex.join(["segcft", *sys.argv[1:]]), config_overrides=parse_overrides(set_),
    )
    for name, entry in report["instances"].items():
        dice = ", ".join(f"{k} {v:.3f}" for k, v in entry["test_dice"].items())
        typer.echo(f"{name} ({entry['network']}): test Dice {dice}")
    typer.echo(f"wrote {out}")


@app.command("generator")
@user_errors
def generator(
    data: Path = typer.Option(..., help="Datalist JSON; its modality picks the generator bundle."),
    run: Path = typer.Option(..., help="Generator bundle root with models/model.pt (trained there first if missing)."),
    judge: Path = typer.Option(..., help="Report of `segcft bench segmentor` whose 'eval' segmentor judges effectiveness."),
    out: Path = typer.Option(..., help="Report JSON to write."),
    bundle: Path = typer.Option(None, help="Generator bundle folder (default: bundles/<modality>_generator)."),
    epochs: int = typer.Option(None, help="Epochs if the generator has to be trained first."),
    device: str = typer.Option("cpu", help="Device, e.g. cpu or cuda:0."),
    seed: int = typer.Option(0, help="Seed of the interventions drawn from the test split."),
    set_: list[str] = typer.Option([], "--set", help="Bundle config override KEY=VALUE (VALUE as JSON), repeatable."),
    config_file: list[Path] = typer.Option([], help="Extra generator config merged last (e.g. configs/positional.json), repeatable."),
) -> None:
    """Measure the plain generator: ELBO, composition, reversibility, effectiveness, ground truth, speed."""
    from segcft.evaluate.generator import bench_generator

    report = bench_generator(
        data, out, run_dir=run, judge_report=judge, bundle=bundle, epochs=epochs, device=device, seed=seed,
        command=shlex.join(["segcft", *sys.argv[1:]]), config_overrides=parse_overrides(set_), config_files=config_file,
    )
    typer.echo(f"ELBO {report['elbo_nats_per_dim']} nats/dim ({report['bits_per_dim']} bits/dim), composition {report['composition_max_abs']:.2e}")
    typer.echo("dose-response slope (judged / requested change): "
               + ", ".join(f"{k} {v}" for k, v in report["dose_response"]["slope"].items()))
    typer.echo(f"wrote {out}")


@app.command("cft")
@user_errors
def cft(
    data: Path = typer.Option(..., help="Datalist JSON (JSRT or phantom)."),
    generator: Path = typer.Option(..., help="Base generator bundle root (models/model.pt), as trained by the generator bundle."),
    segmentors: Path = typer.Option(..., help="Report of `segcft bench segmentor`: its guide guides, its eval segmentor judges."),
    out: Path = typer.Option(..., help="Report JSON; a .md table, a .png figure and <stem>_curves.png are written beside it."),
    methods: str = typer.Option("none,reg,seg,pos-seg", help="Comma-separated methods: none, reg, seg, pos-seg (the seeds' losses), local-seg, local-pos-seg (with --locality terms), and spatial-reg, spatial-seg, spatial-pos-seg (the same guides fine-tuning a spatial mechanism)."),
    steps: int = typer.Option(900, help="Fine-tuning iterations per method."),
    lr: float = typer.Option(1e-4, help="Learning rate of the fine-tuning (after a 20-step linear warm-up); at 3e-4 the steps alone push the JSRT ELBO out of its bound."),
    guide_weight: float = typer.Option(50.0, help="Weight of the guide's loss against the ELBO term of the Lagrangian."),
    lagrange_lr: float = typer.Option(0.3, help="Ascent rate of the Lagrange multiplier lambda."),
    damping: float = typer.Option(10.0, help="Damping of the Lagrangian: the penalty per nat/dim of ELBO above eps, on top of lambda."),
    lagrange_init: float = typer.Option(0.0, help="lambda at the first step (>= 0): a constraint already in force when the guide starts."),
    relative_targets: bool = typer.Option(True, help="Guide targets as the requested relative change of its factual measurement (--no-relative-targets: the requested value itself)."),
    guide_views: float = typer.Option(0.0, help="If > 0, the guide measures x and x* of each step under one random rotation, shift and noise, at this share (<= 1) of the guide segmentor's training jitter (docs/concepts.md)."),
    ema_decay: float = typer.Option(0.995, help="If > 0, each fine-tuned model is the EMA of its weights with this decay; 0 keeps the last iterate, which on JSRT left the ELBO bound on 5 of 8 runs."),
    eps_slack: float = typer.Option(0.02, help="eps = base model's training ELBO (nats/dim) + this slack."),
    regressor_epochs: int = typer.Option(40, help="Training epochs of the Reg-CFT regressor."),
    device: str = typer.Option("cpu", help="Device, e.g. cpu or cuda:0."),
    seed: int = typer.Option(0, help="Seed of fine-tuning, interventions and figures."),
    set_: list[str] = typer.Option([], "--set", help="Generator config override KEY=VALUE (VALUE as JSON), repeatable."),
    config_file: list[Path] = typer.Option([], help="Extra generator config merged last (e.g. configs/positional.json), repeatable."),
    spatial: list[str] = typer.Option([], help="Spatial recipe override KEY=VALUE (VALUE as JSON), e.g. steps=300 or max_intensity=0.1, repeatable (docs/concepts.md)."),
    locality: list[str] = typer.Option(["local"], help="Locality terms of the local- methods: a recipe name (seeds, local), then KEY=VALUE overrides (hold_weight, pixel_weight, entropy_weight, band), repeatable."),
) -> None:
    """Compare no fine-tuning, Reg-CFT, Seg-CFT and Positional Seg-CFT on the same base model and interventions."""
    from segcft.cft.recipe import locality_terms, spatial_recipe
    from segcft.evaluate.cft import bench_cft, curves_path, method_traces

    report = bench_cft(
        data, out, generator_run=generator, segmentor_report=segmentors, methods=[m for m in methods.split(",") if m],
        steps=steps, lr=lr, guide_weight=guide_weight, lagrange_lr=lagrange_lr, damping=damping, lagrange_init=lagrange_init, relative_targets=relative_targets,
        guide_views=guide_views, ema_decay=ema_decay, eps_slack=eps_slack, regressor_epochs=regressor_epochs, device=device, seed=seed,
        command=shlex.join(["segcft", *sys.argv[1:]]), config_overrides=parse_overrides(set_), config_files=config_file,
        spatial=spatial_recipe(parse_overrides(spatial)), locality=locality_terms(locality),
    )
    typer.echo(f"wrote {out}, {Path(out).with_suffix('.md')}, {Path(out).with_suffix('.png')}"
               + (f" and {curves_path(out)}" if method_traces(report) else ""))


@app.command("summary")
@user_errors
def summary(
    report: list[str] = typer.Option(..., help="A `segcft bench cft` report, FILE or FILE:METHODS (e.g. run.json:none), repeatable."),
    out: Path = typer.Option(..., help="Summary JSON; a .md table (each instance's figures, then the means) and, per pair, a paired-difference .png are written beside it."),
    pair: list[str] = typer.Option(["seg,reg", "seg,none"], help="Methods A,B to compare per instance, repeatable."),
) -> None:
    """Mean and SD over base models and seeds of several CFT reports, and how often one method beats another."""
    from segcft.evaluate.summary import parse_source, summarize_cft

    pairs = []
    for p in pair:
        a, sep, b = p.partition(",")
        if not sep or not a or not b:
            raise InputError(f"--pair {p!r} is not A,B (e.g. seg,reg)")
        pairs.append((a, b))
    result = summarize_cft([parse_source(r) for r in report], out, pairs=pairs, command=shlex.join(["segcft", *sys.argv[1:]]))
    figures = "".join(f", {c['figure']}" for c in result["comparisons"].values())
    typer.echo(f"{len(result['instances'])} instance(s); wrote {out}, {Path(out).with_suffix('.md')}{figures}")


@app.command("report")
@user_errors
def report(
    manifest: Path = typer.Option(Path("docs/results.yaml"), help="The results manifest: which reports make which table and claim."),
    out: Path = typer.Option(Path("docs/results.md"), help="The results page, written beside the manifest (its links are relative to it)."),
) -> None:
    """The headline results page, generated from the reports its manifest names, with one overview figure per table."""
    from segcft.evaluate.report import build_results

    text = build_results(manifest, out)
    typer.echo(f"wrote {out} ({text.count(chr(10))} lines) and its overview figures in {out.parent / 'figures'}")


@app.command("fullres")
@user_errors
def fullres(
    model: Path = typer.Option(..., help="A spatial model package (e.g. runs/demo/model)."),
    data: Path = typer.Option(..., help="The phantom datalist the model was trained on: its test cases are rendered at --size."),
    out: Path = typer.Option(..., help="Report JSON; a figure of the first case (.png) is written beside it."),
    size: int = typer.Option(256, help="Size at which the phantom renders each case and its true counterfactual."),
    cases: int = typer.Option(8, min=1, help="Test cases to use."),
    seed: int = typer.Option(0, help="Seed of the counterfactual runs."),
    device: str = typer.Option("cpu", help="Device, e.g. cpu or cuda:0."),
) -> None:
    """Counterfactuals at an input's own resolution against the phantom's truth: boundaries moved there, or the change resampled."""
    from segcft.serve.resolution import bench_resolution

    report = bench_resolution(model, data, out, size=size, cases=cases, seed=seed, device=device,
                              command=shlex.join(["segcft", *sys.argv[1:]]))
    typer.echo(f"wrote {out} and {out.with_suffix('.png')}; {report['refused']} intervention(s) refused")


@app.command("robustness")
@user_errors
def robustness(
    data: Path = typer.Option(..., help="Datalist JSON (radiographs); its test split is shifted."),
    segmentors: list[str] = typer.Option(..., help="LABEL=REPORT of `segcft bench segmentor`, repeatable (e.g. before=a.json)."),
    out: Path = typer.Option(..., help="Report JSON; a .md table and a .png figure are written beside it."),
    shifts: str = typer.Option("", help="Comma-separated shifts of segcft.evaluate.robustness.SHIFTS (default: all)."),
    instances: str = typer.Option("guide,eval", help="Comma-separated segmentor instances."),
    device: str = typer.Option("cpu", help="Device, e.g. cpu or cuda:0."),
    seed: int = typer.Option(0, help="Seed of the noise shift."),
) -> None:
    """Guide and judge Dice on shifted copies of the test split (gamma, contrast, exposure, blur, noise, zoom, DICOM)."""
    from segcft.evaluate.robustness import bench_robustness, robustness_table
    from segcft.figures import robustness as robustness_figure

    reports = {}
    for pair in segmentors:
        label, sep, path = pair.partition("=")
        if not sep or not label or not path:
            raise InputError(f"--segmentors {pair!r} is not LABEL=REPORT")
        reports[label] = path
    report = bench_robustness(data, reports, out, instances=[i for i in instances.split(",") if i],
                              shifts=[s for s in shifts.split(",") if s] or None, device=device, seed=seed,
                              command=shlex.join(["segcft", *sys.argv[1:]]))
    table = robustness_table(report)
    with atomic_path(out.with_suffix(".md")) as tmp:
        tmp.write_text(f"# Robustness of the segmentors\n\n`{report['command']}`\n\nMean Dice over structures "
                       f"(worst structure) on {report['cases']} test cases per shift.\n\n{table}\n", encoding="utf-8")
    worst = {f"{label} {inst}": {s: min(d.values()) for s, d in e["dice"].items()}
             for label, m in report["models"].items() for inst, e in m["instances"].items()}
    robustness_figure(worst, out.with_suffix(".png"), title=f"{Path(data).parent.name}: shifted test split")
    typer.echo(table)
    typer.echo(f"wrote {out}, {out.with_suffix('.md')} and {out.with_suffix('.png')}")


@app.command("speed")
@user_errors
def speed(
    data: Path = typer.Option(..., help="Datalist JSON; its test images are the batches."),
    run: Path = typer.Option(..., help="Generator bundle root with models/model.pt."),
    out: Path = typer.Option(..., help="Report JSON to write."),
    device: str = typer.Option("cpu", help="Device, e.g. cpu or cuda:0."),
    batch_size: int = typer.Option(16, min=1, help="Images per step."),
    repeats: int = typer.Option(3, min=1, help="Timed steps per measure, after one warm-up step."),
    set_: list[str] = typer.Option([], "--set", help="Generator config override KEY=VALUE (VALUE as JSON), repeatable."),
    config_file: list[Path] = typer.Option([], help="Extra generator config merged last, repeatable."),
) -> None:
    """Training and counterfactual images/s of a trained generator in float32 and bfloat16, with peak memory and a device check."""
    from segcft.evaluate.speed import bench_speed

    report = bench_speed(data, run, out, device=device, overrides=parse_overrides(set_), config_files=config_file,
                         batch_size=batch_size, repeats=repeats, command=shlex.join(["segcft", *sys.argv[1:]]))
    modes = ", ".join(f"{m} {r['train_images_per_second']} train / {r['counterfactual_images_per_second']} cf images/s"
                      for m, r in report["modes"].items())
    typer.echo(f"wrote {out}: {modes}; {len(report['device_check']['mismatches'])} device mismatch(es)")
