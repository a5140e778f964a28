"""Entry point of the ``segcft`` console command."""

from __future__ import annotations

import typer

from segcft import __version__
from segcft.cli import bench, data, plot
from segcft.cli.counterfactual import counterfactual
from segcft.cli.demo import demo
from segcft.cli.export import export

app = typer.Typer(
    help="Segmentor-guided counterfactual image synthesis for medical imaging (MONAI).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(data.app, name="data")
app.add_typer(bench.app, name="bench")
app.add_typer(plot.app, name="plot")
app.command("demo")(demo)
app.command("counterfactual")(counterfactual)
app.command("export")(export)


@app.command()
def version() -> None:
    """Print the segcft version."""
    typer.echo(__version__)


if __name__ == "__main__":
    app()
