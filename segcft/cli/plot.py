"""``segcft plot``: figures from training runs and fine-tuning reports."""

from __future__ import annotations

from pathlib import Path

import typer

from segcft.cli.common import user_errors

app = typer.Typer(help="Figures from training runs and fine-tuning reports.", no_args_is_help=True)


@app.command("curves")
@user_errors
def curves(
    logdir: Path = typer.Option(..., help="Folder with TensorBoard event files (e.g. <bundle_root>/eval/tensorboard)."),
    out: Path = typer.Option(..., help="PNG to write."),
    tag: list[str] = typer.Option([], help="Only these scalar tags (repeatable); default: all."),
) -> None:
    """Plot training curves (loss, ELBO, KL, validation metrics...) from TensorBoard logs."""
    from segcft.figures import training_curves

    typer.echo(f"wrote {training_curves(logdir, out, tag or None)}")


@app.command("cft-curves")
@user_errors
def cft_curves(
    report: list[str] = typer.Option(..., help="`segcft bench cft` report, FILE or FILE:METHODS (e.g. run.json:seg), repeatable; one base model."),
    out: Path = typer.Option(..., help="PNG to write."),
) -> None:
    """Plot the fine-tuning traces (factual ELBO against eps, lambda, guide loss) of several CFT runs on one base model."""
    from segcft.evaluate.summary import cft_traces, parse_source
    from segcft.figures import cft_curves as draw

    traces, eps = cft_traces([parse_source(spec) for spec in report])
    typer.echo(f"wrote {draw(traces, eps, out)}")
