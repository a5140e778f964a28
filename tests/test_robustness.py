"""Segmentors for other scanners: the percentile window, scanner augmentation and the robustness benchmark."""

from __future__ import annotations

import json

import pytest
import torch

from segcft.data.transforms import augmentation_transforms
from segcft.evaluate.robustness import SHIFTS, bench_robustness, shift
from segcft.models.segmentation import PercentileWindow, segmentor
from segcft.utils import InputError


def test_the_percentile_window_ignores_exposure_and_contrast_and_passes_gradients():
    x = torch.rand(3, 1, 32, 32, requires_grad=True)
    window = PercentileWindow()
    y = window(x)
    assert torch.allclose(window(0.4 * x + 0.5), y, atol=1e-4)
    assert torch.allclose(torch.quantile(y.flatten(1), torch.tensor([0.01, 0.99]), dim=1), torch.tensor([[-1.0] * 3, [1.0] * 3]), atol=1e-4)
    y.sum().backward()
    assert x.grad.abs().sum() > 0
    net = segmentor("unet", 4, width=4, normalise="percentile")
    assert isinstance(net[0], PercentileWindow) and net(x.detach()).shape == (3, 4, 32, 32)
    with pytest.raises(InputError, match="'minmax'"):
        segmentor("unet", 4, normalise="minmax")


def test_scanner_augmentation_never_flips_a_radiograph():
    names = {type(t).__name__ for t in augmentation_transforms("cxr", 64, "scanners")}
    assert {"RandGaussianSmoothd", "RandHistogramShiftd", "RandScaleIntensityd"} <= names
    assert not {"RandFlipd", "RandRotate90d"} & names
    assert "RandGaussianSmoothd" not in {type(t).__name__ for t in augmentation_transforms("cxr", 64, "anatomy")}
    with pytest.raises(InputError, match="'hospital'"):
        augmentation_transforms("cxr", 64, "hospital")


def test_each_shift_changes_the_image_and_zooms_move_the_labels_with_it():
    g = torch.Generator().manual_seed(0)
    u = torch.rand(2, 1, 40, 40)
    label = torch.zeros(2, 1, 40, 40, dtype=torch.long)
    label[..., 10:30, 10:30] = 1
    for name in SHIFTS:
        if name in ("none", "dicom_monochrome1"):
            continue
        out, lab = shift(name, u, label, g)
        assert out.shape == u.shape and lab.shape == label.shape and lab.dtype == torch.long, name
        assert (out - u).abs().mean() > 1e-3, name
    area = (label == 1).sum()
    assert (shift("zoom_in", u, label, g)[1] == 1).sum() > area > (shift("zoom_out", u, label, g)[1] == 1).sum()
    with pytest.raises(InputError, match="'rotate'"):
        shift("rotate", u, label, g)


@pytest.mark.slow
def test_robustness_bench_compares_trainings_on_the_same_shifted_copies(jsrt_subset, tmp_path):
    from segcft.evaluate.segmentor import bench_segmentor

    reports = {}
    for normalise in ("fixed", "percentile"):
        path = tmp_path / f"{normalise}.json"
        bench_segmentor(jsrt_subset, path, work_dir=tmp_path / normalise, instances=["guide"], image_size=32, epochs=1,
                        progress=False, config_overrides={"normalise": normalise, "augmentation": "scanners"})
        entry = json.loads(path.read_text(encoding="utf-8"))["instances"]["guide"]
        assert entry["normalise"] == normalise and entry["augmentation"] == "scanners"
        reports[normalise] = path
    out = tmp_path / "shifts.json"
    report = bench_robustness(jsrt_subset, reports, out, instances=["guide"], shifts=["none", "low_contrast", "dicom_monochrome1"])
    assert json.loads(out.read_text(encoding="utf-8")) == report and report["cases"] == 6
    dice = {label: m["instances"]["guide"]["dice"] for label, m in report["models"].items()}
    assert report["models"]["percentile"]["instances"]["guide"]["normalise"] == "percentile"
    for structure, value in dice["percentile"]["none"].items():  # the window undoes a contrast change inside the network
        assert dice["percentile"]["low_contrast"][structure] == pytest.approx(value, abs=2e-3)
    for label in reports:  # the 12-bit MONOCHROME1 round trip through the DICOM reader keeps the anatomy
        for structure, value in dice[label]["none"].items():
            assert dice[label]["dicom_monochrome1"][structure] == pytest.approx(value, abs=0.03)
    with pytest.raises(InputError, match="unknown shifts"):
        bench_robustness(jsrt_subset, reports, tmp_path / "bad.json", shifts=["tilt"])
