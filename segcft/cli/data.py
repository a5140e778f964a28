"""``segcft data``: build datalists from JSRT and from the synthetic phantoms."""

from __future__ import annotations

from pathlib import Path

import typer

from segcft.cli.common import user_errors

app = typer.Typer(help="Build datalists from real data (JSRT) and from synthetic phantoms.", no_args_is_help=True)


@app.command("jsrt")
@user_errors
def jsrt(
    src: Path = typer.Option(..., help="JSRT folder with images/, masks/<organ>/ and cases.csv."),
    out: Path = typer.Option(..., help="Output folder for datalist.json and the derived label maps."),
    seed: int = typer.Option(0, help="Seed of the case-level 70/10/20 split."),
) -> None:
    """Build a datalist from a JSRT folder (read in place, never copied)."""
    from segcft.data.jsrt import build_jsrt_datalist

    path = build_jsrt_datalist(src, out, seed=seed)
    typer.echo(f"wrote {path}")


@app.command("phantom")
@user_errors
def phantom(
    kind: str = typer.Option(..., help="Phantom kind: cxr (chest radiograph, DICOM) or ccta (coronary cross-section, NIfTI)."),
    n: int = typer.Option(200, min=1, help="Number of samples."),
    size: int = typer.Option(128, min=16, help="Image side in pixels."),
    seed: int = typer.Option(0, help="Seed of the exogenous noise; the same seed gives the same pixel data, parents and noise."),
    out: Path = typer.Option(..., help="Output folder."),
    monochrome1: bool = typer.Option(False, help="Store chest phantoms as MONOCHROME1 (inverted), as many CR systems do."),
) -> None:
    """Write synthetic data from a known causal model, with its exogenous noise, and its datalist."""
    from segcft.data.phantom import make_phantom

    ph = make_phantom(kind, size)
    kwargs = {"photometric": "MONOCHROME1"} if monochrome1 and kind == "cxr" else {}
    path = ph.write_dataset(out, n, seed, **kwargs)
    typer.echo(f"wrote {path}")
