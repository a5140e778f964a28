"""The segmentor bundles, run as users run them: ``python -m monai.bundle run`` with tiny configs."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import pytest

from segcft.data.phantom import make_phantom
from tests.conftest import run_python

REPO = Path(__file__).resolve().parents[1]
TINY = ["--image_size", "32", "--width", "4", "--batch_size", "4", "--progress", "False", "--device", "cpu"]


def bundle_run(config: Path, *args: str) -> subprocess.CompletedProcess:
    return run_python("-m", "monai.bundle", "run", "--config_file", str(config), *args)


@pytest.fixture(scope="module")
def cxr_data(tmp_path_factory) -> Path:
    return make_phantom("cxr", 64).write_dataset(tmp_path_factory.mktemp("cxr"), 14, seed=0, progress=False)


@pytest.fixture(scope="module")
def ccta_data(tmp_path_factory) -> Path:
    return make_phantom("ccta", 64).write_dataset(tmp_path_factory.mktemp("ccta"), 14, seed=0, progress=False)


@pytest.fixture(scope="module")
def cxr_trained(cxr_data, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cxr_bundle")
    bundle_run(REPO / "bundles/cxr_segmentor/configs/train.json", "--bundle_root", str(root), "--datalist", str(cxr_data), "--epochs", "1", *TINY)
    return root


def test_training_writes_best_latest_and_final_checkpoints(cxr_trained):
    names = {p.name for p in (cxr_trained / "models" / "guide").iterdir()}
    assert {"model.pt", "final.pt", "checkpoint_epoch=1.pt"} <= names
    assert any((cxr_trained / "eval" / "guide" / "tensorboard").iterdir())


def test_resume_continues_the_epoch_count(cxr_data, cxr_trained, tmp_path):
    root = tmp_path / "resume"
    shutil.copytree(cxr_trained, root)
    proc = bundle_run(REPO / "bundles/cxr_segmentor/configs/train.json", "--bundle_root", str(root), "--datalist", str(cxr_data), "--epochs", "2", *TINY)
    log = proc.stdout + proc.stderr
    assert "Epoch: 2/2" in log and "Epoch: 1/2" not in log
    assert (root / "models" / "guide" / "checkpoint_epoch=2.pt").is_file()


def test_evaluate_writes_per_structure_metrics(cxr_data, cxr_trained):
    bundle_run(REPO / "bundles/cxr_segmentor/configs/evaluate.json", "--bundle_root", str(cxr_trained), "--datalist", str(cxr_data), *TINY)
    out = cxr_trained / "eval" / "guide"
    with open(out / "test_dice_summary.csv", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter=","))
    assert [r[0] for r in rows[1:4]] == ["class0", "class1", "class2"]  # left lung, right lung, heart
    assert (out / "test_area_ape_raw.csv").is_file() and (out / "metrics.csv").is_file()


def test_inference_on_rg1_and_a_folder_with_a_bad_file(cxr_data, cxr_trained, rg1_path, tmp_path):
    folder = tmp_path / "inputs"
    folder.mkdir()
    for dcm in sorted((cxr_data.parent / "images").glob("*.dcm"))[:3]:
        shutil.copy(dcm, folder)
    shutil.copy(rg1_path, folder)
    (folder / "corrupt.dcm").write_bytes(rg1_path.read_bytes()[:4000])
    out = tmp_path / "out"
    bundle_run(
        REPO / "bundles/cxr_segmentor/configs/inference.json", "--bundle_root", str(cxr_trained),
        "--input", str(folder), "--output_dir", str(out), *TINY,
    )
    with open(out / "areas.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["case"] for r in rows) == sorted(["RG1_UNCR", "cxr_00000", "cxr_00001", "cxr_00002"])
    rg1 = next(r for r in rows if r["case"] == "RG1_UNCR")
    assert rg1["spacing_source"] == "assumed"
    phantom_row = next(r for r in rows if r["case"] == "cxr_00000")
    assert phantom_row["spacing_source"] == "PixelSpacing"
    assert "left_lung_lower_area" in phantom_row
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["processed"] == 4 and [Path(f["image"]).name for f in summary["failed"]] == ["corrupt.dcm"]
    assert "corrupt.dcm" in summary["failed"][0]["error"]
    label = nib.load(out / "labels" / "RG1_UNCR.nii.gz")
    assert label.shape == (32, 32) and label.get_fdata().max() <= 3
    assert not list(out.rglob(".*tmp*"))  # nothing half-written


def test_ccta_bundle_trains_and_infers_on_nifti(ccta_data, tmp_path):
    root = tmp_path / "ccta"
    bundle_run(REPO / "bundles/ccta_segmentor/configs/train.json", "--bundle_root", str(root), "--datalist", str(ccta_data), "--epochs", "1", *TINY)
    out = tmp_path / "out"
    bundle_run(
        REPO / "bundles/ccta_segmentor/configs/inference.json", "--bundle_root", str(root),
        "--input", str(ccta_data.parent / "images"), "--output_dir", str(out), "--output_format", "png", *TINY,
    )
    with open(out / "areas.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 14 and {"lumen_area", "calcified_plaque_q1_area", "noncalcified_plaque_q4_area"} <= set(rows[0])
    assert len(list((out / "labels").glob("*.png"))) == 14


def test_bench_segmentor_writes_a_report(ccta_data, tmp_path):
    out = tmp_path / "bench.json"
    run_python(
        "-m", "segcft.cli.main", "bench", "segmentor", "--data", str(ccta_data), "--out", str(out),
        "--work-dir", str(tmp_path / "work"), "--instances", "guide", "--image-size", "32", "--epochs", "1", "--device", "cpu",
    )
    report = json.loads(out.read_text(encoding="utf-8"))
    guide = report["instances"]["guide"]
    assert set(guide["test_dice"]) == {"lumen", "vessel_wall", "calcified_plaque", "noncalcified_plaque"}
    assert set(guide["test_area_mae_mm2"]) == set(guide["test_dice"])
    assert guide["epochs_run"] == 1 and guide["inference_images_per_second"] > 0
    assert report["cases"] == {"training": 10, "validation": 1, "test": 3}
