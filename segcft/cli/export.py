"""``segcft export``: a self-contained model package from a trained generator and a segmentor report."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer

from segcft.cli.common import parse_overrides, user_errors


@user_errors
def export(
    generator_run: Path = typer.Option(..., help="Generator bundle root with models/model.pt."),
    data: Path = typer.Option(..., help="Datalist JSON the generator was trained on."),
    segmentors: Path = typer.Option(..., help="Report of `segcft bench segmentor`; its segmentor measures the observed parents."),
    out: Path = typer.Option(..., help="Package folder to write."),
    instance: str = typer.Option("guide", help="Segmentor instance of the report: guide or eval."),
    bundle: Path = typer.Option(None, help="Generator bundle folder (default: bundles/<modality>_generator)."),
    set_: list[str] = typer.Option([], "--set", help="Generator config override KEY=VALUE (VALUE as JSON) used in training, repeatable."),
) -> None:
    """Package a trained generator and a segmentor so that `segcft counterfactual` needs no training data."""
    from segcft.serve import export_from_runs

    path = export_from_runs(
        generator_run, data, segmentors, out, instance, bundle=bundle, config_overrides=parse_overrides(set_),
        command=shlex.join(["segcft", *sys.argv[1:]]),
    )
    typer.echo(f"wrote model package {path}")
