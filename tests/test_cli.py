"""The ``segcft`` command line: help everywhere, one-line errors, the demo end to end."""

from __future__ import annotations

import stat
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from segcft.cli.main import app

runner = CliRunner()


@pytest.mark.parametrize(
    "args", [[], ["data"], ["data", "jsrt"], ["data", "phantom"], ["bench"], ["bench", "segmentor"], ["demo"], ["version"]]
)
def test_every_command_has_help(args):
    result = runner.invoke(app, [*args, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output


def test_user_errors_exit_2_with_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "segcft.cli.main", "data", "phantom", "--kind", "mri", "--out", str(tmp_path / "x")],
        capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: unknown phantom kind 'mri'; known kinds: ['ccta', 'cxr']"]
    assert not (tmp_path / "x").exists()


def test_phantom_command_writes_a_datalist(tmp_path):
    result = runner.invoke(app, ["data", "phantom", "--kind", "ccta", "--n", "5", "--size", "64", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "datalist.json").is_file() and len(list((tmp_path / "images").glob("*.nii.gz"))) == 5
    assert stat.S_IMODE((tmp_path / "datalist.json").stat().st_mode) & 0o044  # readable by others, not 0600


def test_demo_writes_a_report_with_figures(tmp_path):
    result = runner.invoke(app, ["demo", "--out", str(tmp_path), "--n", "10", "--seed", "1"])
    assert result.exit_code == 0, result.output
    report = (tmp_path / "report.md").read_text()
    assert "cxr_true_counterfactuals.png" in report and (tmp_path / "cxr_true_counterfactuals.png").stat().st_size > 10_000
    assert (tmp_path / "ccta_true_counterfactuals.png").is_file()
