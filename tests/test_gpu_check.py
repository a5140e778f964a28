"""The prepared device check (scripts/gpu_check.sh) runs here on CPU at tiny budgets, so it cannot rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_device_check_runs_every_stage_on_cpu_and_writes_its_reports(jsrt_subset, tmp_path):
    env = {**os.environ, "DEVICE": "cpu", "SIZE": "64", "PRESET": "cpu64", "BUDGET": "tiny", "DATALIST": str(jsrt_subset),
           "OUT": str(tmp_path / "out"), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8"}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh")], cwd=REPO, env=env, capture_output=True, text=True,
                          encoding="utf-8", errors="replace")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    reports = {name: json.loads((tmp_path / "out" / f"{name}.json").read_text(encoding="utf-8")) for name in ("segmentor", "generator", "cft", "speed")}
    assert reports["generator"]["precision"] == {"amp": False, "channels_last": False}
    assert reports["cft"]["methods"]["seg"]["finetune"]["precision"] == {"amp": False, "channels_last": False}
    speed = reports["speed"]
    assert set(speed["modes"]) == {"float32", "bfloat16"} and speed["device"] == "cpu"
    assert all(m["train_images_per_second"] > 0 and m["counterfactual_images_per_second"] > 0 for m in speed["modes"].values())
    assert speed["device_check"]["modules_checked"] > 10 and speed["device_check"]["mismatches"] == []


def test_the_device_check_names_a_tensor_on_another_device():
    import pytest
    import torch

    from segcft.evaluate.speed import DeviceCheck

    net = torch.nn.Sequential(torch.nn.Linear(2, 2))
    check = DeviceCheck(net)
    with pytest.raises(Exception):  # noqa: B017 - the forward itself fails on a meta tensor; the hook ran first
        net(torch.zeros(1, 2, device="meta"))
    assert check.mismatches == ["0: input on meta, weights on cpu"]
    check.remove()
    net(torch.zeros(1, 2))
    assert len(check.mismatches) == 1


def test_the_chest_path_runs_without_simpleitk(jsrt_root, tmp_path):
    """The device carries no SimpleITK wheel (scripts/prepare_device.sh): only CCTA may need it."""
    code = ("import sys; sys.modules['SimpleITK'] = None; sys.modules['itk'] = None\n"
            "from segcft.cli.main import app; sys.argv = ['segcft', *sys.argv[1:]]; app()")
    proc = subprocess.run([sys.executable, "-c", code, "data", "jsrt", "--src", str(jsrt_root), "--out", str(tmp_path)],
                          capture_output=True, text=True, encoding="utf-8", errors="replace", env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(json.loads((tmp_path / "datalist.json").read_text(encoding="utf-8"))["test"]) > 0
    blocked = subprocess.run([sys.executable, "-c", "import sys; sys.modules['SimpleITK'] = None\n"
                              "from segcft.data.ccta import read_volume; read_volume(sys.argv[1])", str(tmp_path)],
                             capture_output=True, text=True, encoding="utf-8", errors="replace")
    assert blocked.returncode != 0 and "SimpleITK" in blocked.stderr
