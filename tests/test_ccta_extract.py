"""CCTA cross-section extraction checked against the analytic 3-D vessel phantom."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from segcft.data.ccta import (
    centreline_frames,
    extract_cross_sections,
    read_centreline,
    read_volume,
    resample_centreline,
    write_cross_sections,
)
from segcft.data.io import read_label_map, read_nifti
from segcft.data.phantom.vessel3d import make_vessel_volume, write_vessel_volume
from segcft.data.structures import CCTA_STRUCTURES
from segcft.utils import InputError

SIZE, SPACING = 64, 0.1
CENTRE = (SIZE - 1) / 2


@pytest.fixture(scope="module")
def phantom():
    image, label, centreline, truth = make_vessel_volume(seed=3)
    assert np.prod(image.GetSize()) < 4_000_000
    return image, label, centreline, truth


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    return write_vessel_volume(tmp_path_factory.mktemp("vessel"), dicom=True, seed=3)


def _segments(centreline: np.ndarray, truth: dict) -> dict[str, np.ndarray]:
    """Centreline points well inside the plaque segment and the plaque-free segment before it."""
    s = np.arange(len(centreline)) * truth["centreline_step_mm"]
    s0, s1 = truth["plaque_segment_mm"]
    return {
        "plaque": centreline[(s > s0 + 1) & (s < s1 - 1)],
        "no_plaque": centreline[(s > 1) & (s < s0 - 1)],
    }


@pytest.mark.parametrize("segment", ["plaque", "no_plaque"])
def test_areas_match_truth(phantom, segment):
    image, label, centreline, truth = phantom
    res = extract_cross_sections(image, _segments(centreline, truth)[segment], SIZE, SPACING, label=label)
    assert res["image"].shape == res["label"].shape == (len(res["points"]), SIZE, SIZE)
    assert res["image"].dtype == np.float32 and res["label"].dtype == np.uint8
    assert res["spacing"] == (SPACING, SPACING)
    for name, idx in CCTA_STRUCTURES.items():
        expected = truth["areas_mm2"][segment][name]
        areas = (res["label"] == idx).sum((1, 2)) * SPACING**2
        if expected == 0:
            assert areas.max() == 0, name
            continue
        rel = areas / expected - 1
        assert abs(areas.mean() / expected - 1) <= 0.05, (name, areas.mean(), expected)
        assert np.abs(rel).max() <= 0.08, (name, rel)


def test_lumen_centred_and_bright(phantom):
    image, label, centreline, truth = phantom
    res = extract_cross_sections(image, centreline[5:-5], SIZE, SPACING, label=label, step_mm=0.7)
    assert np.allclose(np.linalg.norm(np.diff(res["points"], axis=0), axis=1), 0.7, atol=1e-3)
    lumen = res["label"] == CCTA_STRUCTURES["lumen"]
    rows, cols = np.mgrid[:SIZE, :SIZE]
    n = lumen.sum((1, 2))
    assert np.abs((lumen * rows).sum((1, 2)) / n - CENTRE).max() <= 1.0
    assert np.abs((lumen * cols).sum((1, 2)) / n - CENTRE).max() <= 1.0
    # Hounsfield units: the blur lowers the lumen's rim, not its core.
    assert abs(np.median(res["image"][lumen]) - 400) <= 15
    core_r = (truth["lumen_radius_mm"] - 0.6) / SPACING
    core = (rows - CENTRE) ** 2 + (cols - CENTRE) ** 2 <= core_r**2
    assert abs(res["image"][:, core].mean() - 400) <= 10


def test_in_plane_axes_follow_frame(phantom):
    """Columns run along the normal, rows along the binormal, as documented."""
    image, _, centreline, _ = phantom
    tangent, normal, binormal = centreline_frames(centreline)
    i = len(centreline) // 2
    for axis, offset in ((normal, (0, 10)), (binormal, (10, 0))):
        marker = sitk.Image(image.GetSize(), sitk.sitkUInt8)
        marker.CopyInformation(image)
        marker[marker.TransformPhysicalPointToIndex((centreline[i] + 1.0 * axis[i]).tolist())] = 1
        sec = extract_cross_sections(image, centreline, SIZE, SPACING, label=marker)["label"][i]
        r, c = np.argwhere(sec == 1).mean(0)
        assert abs(r - CENTRE - offset[0]) <= 1.5 and abs(c - CENTRE - offset[1]) <= 1.5


def _check_frames(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t, n, b = centreline_frames(points)
    eye = np.stack([t, n, b], axis=1)  # (N, 3 vectors, 3)
    assert np.allclose(eye @ eye.transpose(0, 2, 1), np.eye(3), atol=1e-9)
    assert np.allclose(np.linalg.det(eye), 1.0)
    # Rotation-minimising: the normal turns no more than the tangent between points.
    turn_t = np.arccos(np.clip((t[1:] * t[:-1]).sum(1), -1, 1))
    turn_n = np.arccos(np.clip((n[1:] * n[:-1]).sum(1), -1, 1))
    assert (turn_n <= turn_t + 1e-6).all()
    return t, n, b


def test_frames_orthonormal_right_handed_no_twist(phantom):
    centreline = phantom[2]
    t, n, _ = _check_frames(centreline)
    grad = np.gradient(centreline, axis=0)
    assert np.allclose(t, grad / np.linalg.norm(grad, axis=1, keepdims=True))
    # On a planar arc a twist-free normal keeps its angle to the plane's normal.
    plane_normal = np.linalg.svd(centreline - centreline.mean(0))[2][-1]
    assert np.ptp(n @ plane_normal) < 1e-6
    theta = np.linspace(0, 4 * np.pi, 200)
    _check_frames(np.stack([10 * np.cos(theta), 10 * np.sin(theta), 3 * theta], axis=1))  # helix


def test_resample_centreline_equidistant():
    pts = np.array([[0.0, 0, 0], [3, 0, 0], [3, 0, 0], [3, 4, 0]])
    out = resample_centreline(pts, 0.5)
    assert len(out) == 15 and np.allclose(np.linalg.norm(np.diff(out, axis=0), axis=1), 0.5)
    assert np.allclose(out[[0, 6, 14]], [[0, 0, 0], [3, 0, 0], [3, 4, 0]])


def test_read_volume_same_extraction(phantom, written):
    image, label, centreline, truth = phantom
    assert np.allclose(read_centreline(written["centreline"]), centreline, atol=1e-5)
    assert json.loads(written["truth"].read_text(encoding="utf-8"))["areas_mm2"] == truth["areas_mm2"]
    points = _segments(centreline, truth)["plaque"][::3]
    ref = extract_cross_sections(image, points, SIZE, SPACING, label=label)
    nifti_label = read_volume(written["label"])
    for path in (written["image"], written["dicom"]):
        volume = read_volume(path)
        assert volume.GetSize() == image.GetSize()
        res = extract_cross_sections(volume, points, SIZE, SPACING, label=nifti_label)
        assert np.allclose(res["image"], ref["image"], atol=0.05), path
        assert (res["label"] != ref["label"]).mean() < 1e-3, path


def test_write_cross_sections(phantom, tmp_path):
    image, label, centreline, _ = phantom
    res = extract_cross_sections(image, centreline[30:33], SIZE, SPACING, label=label)
    paths = write_cross_sections(res, tmp_path, "lad")
    assert [p.name for p in paths[:2]] == ["lad_0000_image.nii.gz", "lad_0000_label.nii.gz"]
    assert len(paths) == 6 and not list(tmp_path.glob(".*"))
    img, meta = read_nifti(paths[2])
    assert meta.spacing == pytest.approx((SPACING, SPACING))
    assert np.array_equal(img, np.rint(res["image"][1]))
    assert np.array_equal(read_label_map(paths[3]), res["label"][1])


def test_bad_inputs(phantom, tmp_path):
    image, _, centreline, _ = phantom
    missing = tmp_path / "nope.nii.gz"
    with pytest.raises(InputError, match="nope.nii.gz"):
        read_volume(missing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no DICOM series"):
        read_volume(tmp_path / "empty")
    junk = tmp_path / "junk.nii.gz"
    junk.write_text("not an image", encoding="utf-8")
    with pytest.raises(InputError, match="junk.nii.gz"):
        read_volume(junk)
    flat = tmp_path / "flat.nii.gz"
    sitk.WriteImage(sitk.Image(8, 8, sitk.sitkInt16), str(flat))
    with pytest.raises(InputError, match="flat.nii.gz.*3-D"):
        read_volume(flat)

    bad_csv = tmp_path / "line.csv"
    bad_csv.write_text("x,y,z\n1,2,3\n4,five,6\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"line\.csv:3"):
        read_centreline(bad_csv)
    no_header = tmp_path / "nohead.csv"
    no_header.write_text("1,2,3\n4,5,6\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"nohead\.csv:1: expected a header"):
        read_centreline(no_header)
    bad_json = tmp_path / "pts.json"
    bad_json.write_text(json.dumps({"points": [[1, 2, 3], [1, 2]]}), encoding="utf-8")
    with pytest.raises(InputError, match=r"pts\.json: point 1"):
        read_centreline(bad_json)

    outside = centreline[:4].copy()
    outside[2] += 500.0
    with pytest.raises(InputError, match="point 2 .* outside the volume"):
        extract_cross_sections(image, outside, SIZE, SPACING)
    with pytest.raises(InputError, match="size"):
        extract_cross_sections(image, centreline, 4, SPACING)
    with pytest.raises(InputError, match="spacing"):
        extract_cross_sections(image, centreline, SIZE, 0.0)
    with pytest.raises(InputError, match="at least 2 points"):
        extract_cross_sections(image, centreline[:1], SIZE, SPACING)
