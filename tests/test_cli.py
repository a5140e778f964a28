"""The ``segcft`` command line: help everywhere, one-line errors, the demo end to end."""

from __future__ import annotations

import json
import stat

import pytest
from typer.testing import CliRunner

from segcft.cli.main import app
from tests.conftest import run_python

runner = CliRunner()


@pytest.mark.parametrize(
    "args", [[], ["data"], ["data", "jsrt"], ["data", "phantom"], ["bench"], ["bench", "segmentor"], ["bench", "generator"], ["bench", "cft"], ["bench", "summary"], ["plot", "curves"], ["demo"], ["counterfactual"], ["export"], ["version"]]
)
def test_every_command_has_help(args):
    result = runner.invoke(app, [*args, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output


def test_user_errors_exit_2_with_one_line(tmp_path):
    result = run_python("-m", "segcft.cli.main", "data", "phantom", "--kind", "mri", "--out", str(tmp_path / "x"), check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: unknown phantom kind 'mri'; known kinds: ['ccta', 'cxr']"]
    assert not (tmp_path / "x").exists()


def test_phantom_command_writes_a_datalist(tmp_path):
    result = runner.invoke(app, ["data", "phantom", "--kind", "ccta", "--n", "5", "--size", "64", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "datalist.json").is_file() and len(list((tmp_path / "images").glob("*.nii.gz"))) == 5
    assert stat.S_IMODE((tmp_path / "datalist.json").stat().st_mode) & 0o044  # readable by others, not 0600


def test_demo_trains_everything_and_writes_a_report_and_a_model_package(tmp_path):
    args = ["demo", "--out", str(tmp_path), "--n", "20", "--seed", "1", "--segmentor-epochs", "1", "--generator-epochs", "1",
            "--cft-steps", "2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    for figure in ("counterfactuals.png", "dose_response.png", "generator_curves.png"):
        assert f"figures/{figure}" in report and (tmp_path / "figures" / figure).stat().st_size > 5_000
    metrics = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    assert list(metrics["methods"]) == ["no fine-tuning", "Seg-CFT", "Spatial Seg-CFT"]
    for entry in metrics["methods"].values():
        assert set(entry["effectiveness_mape_percent"]) == {"heart_area", "left_lung_area", "right_lung_area"}
        assert "ground_truth" in entry and entry["composition_max_abs"] < 1e-4
    assert (tmp_path / "model" / "segcft_model.json").is_file()
    assert "segcft counterfactual --model" in report


def test_plot_curves_reads_tensorboard_logs(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(tmp_path / "tb")) as writer:
        for step in range(5):
            writer.add_scalar("val_elbo", 5.0 - step, step)
            writer.add_scalar("train_loss", 1.0 / (step + 1), step)
    result = runner.invoke(app, ["plot", "curves", "--logdir", str(tmp_path / "tb"), "--out", str(tmp_path / "c.png")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "c.png").stat().st_size > 5_000
    empty = runner.invoke(app, ["plot", "curves", "--logdir", str(tmp_path / "none"), "--out", str(tmp_path / "d.png")])
    assert empty.exit_code == 2 and "no TensorBoard scalars" in empty.output
