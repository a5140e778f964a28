"""``segcft counterfactual``: counterfactuals of DICOM, PNG or NIfTI files with a model package."""

from __future__ import annotations

from pathlib import Path

import typer

from segcft.cli.common import user_errors
from segcft.utils import InputError


def parse_parents(pairs: list[str]) -> dict[str, float]:
    """``name=value`` factual values given by the user."""
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = None
        if not sep or not name.strip() or number is None:
            raise InputError(f"--parent {pair!r} is not name=value with a number value")
        out[name.strip()] = number
    return out


@user_errors
def counterfactual(
    model: Path = typer.Option(..., help="Model package folder (made by `segcft export`)."),
    input_: list[Path] = typer.Option(..., "--input", help="An image file (DICOM CR/DX, PNG, NIfTI) or a folder of them; repeatable."),
    do: list[str] = typer.Option(..., help="Intervention, e.g. left_lung_area=*0.8, heart_area=+15%, lumen_area=2.5; repeatable."),
    out: Path = typer.Option(..., help="Output folder: counterfactuals in the inputs' formats, figures, summary.json."),
    parent: list[str] = typer.Option([], help="Factual value name=value instead of the measured or assumed one; repeatable."),
    particles: int = typer.Option(1, min=1, help="Latent samples averaged; > 1 also writes the per-pixel variance."),
    seed: int = typer.Option(0, help="Seed of the latent samples (particles > 1)."),
    device: str = typer.Option("cpu", help="Device, e.g. cpu or cuda:0."),
    full_resolution: bool = typer.Option(True, help="A spatial model moves the boundaries at the input's own resolution; "
                                                   "--no-full-resolution adds its resampled model-size change instead."),
    allow_outside_support: bool = typer.Option(False, help="Run interventions whose target leaves the training support, "
                                                           "with a warning per input in summary.json, instead of refusing them."),
) -> None:
    """Answer "what would this image look like if ...?" for each input; outputs keep the input's geometry."""
    from segcft.serve import counterfactual_files, expand_inputs, load_model_package

    given = parse_parents(parent)
    inputs = expand_inputs(input_)
    pkg = load_model_package(model, device)
    summary = counterfactual_files(pkg, inputs, do, out, particles=particles, parents=given, seed=seed,
                                  full_resolution=full_resolution, allow_outside_support=allow_outside_support)
    typer.echo(f"wrote {summary['processed']} counterfactual(s) of {len(inputs)} input(s) to {out} (summary: {out / 'summary.json'})")
    for warning in summary["warnings"]:
        typer.echo(f"warning: {warning}", err=True)
    for failure in summary["failed"]:
        error = failure["error"]
        typer.echo(f"failed: {error if error.startswith(failure['input']) else failure['input'] + ': ' + error}", err=True)
    if summary["failed"]:
        raise typer.Exit(1)
