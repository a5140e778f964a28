"""``segcft plot``: figures from training runs."""

from __future__ import annotations

from pathlib import Path

import typer

from segcft.cli.common import user_errors

app = typer.Typer(help="Figures from training runs.", no_args_is_help=True)


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
