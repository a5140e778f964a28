"""Synthetic phantoms: areas, true counterfactuals, files on disk and input validation."""

from __future__ import annotations

import json
import math

import nibabel as nib
import numpy as np
import torch
import pydicom
import pytest

from segcft.data.datalist import SPLITS, structure_variable
from segcft.measure import regional_area_values
from segcft.data.io import read_image, read_label_map
from segcft.data.phantom import CCTAPhantom, CXRPhantom, make_phantom, phantom_from_datalist
from segcft.utils import InputError

SIZES = {"cxr": 128, "ccta": 64}
N_CASES = 10


def _items(dl: dict) -> list[dict]:
    return [item for split in SPLITS for item in dl[split]]


def _assert_areas(phantom, label: np.ndarray, parents: dict, tol: float = 0.02) -> None:
    for structure, index in phantom.structures.items():
        count = int(np.count_nonzero(label == index))
        mm2, px = parents[structure_variable(structure)], parents[structure_variable(structure, "px")]
        assert abs(count * phantom.pixel_area_mm2 - mm2) <= tol * mm2, (structure, count, mm2)
        assert abs(count - px) <= tol * px, (structure, count, px)


def _descendants(graph: dict[str, list[str]], name: str) -> set[str]:
    out, frontier = set(), {name}
    while frontier:
        frontier = {child for child, parents in graph.items() if frontier & set(parents)} - out
        out |= frontier
    return out


@pytest.fixture(scope="module", params=["cxr", "ccta"])
def kind(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def written(kind, tmp_path_factory):
    """A dataset on disk: (phantom, output folder, datalist dict)."""
    phantom = make_phantom(kind, SIZES[kind])
    out = tmp_path_factory.mktemp(f"phantom_{kind}")
    path = phantom.write_dataset(out, N_CASES, seed=7)
    return phantom, out, json.loads(path.read_text(encoding="utf-8"))


def test_parents_match_rendered_areas(kind):
    phantom = make_phantom(kind, SIZES[kind])
    rng = np.random.default_rng(0)
    for _ in range(5):
        noise = phantom.sample_noise(rng)
        parents = phantom.parents_from_noise(noise)
        image, label = phantom.render(noise, parents)
        assert image.dtype == (np.uint16 if kind == "cxr" else np.int16)
        assert label.dtype == np.uint8 and label.shape == (phantom.size, phantom.size)
        _assert_areas(phantom, label, parents, tol=0.01)


def test_written_files_match_parents(written):
    phantom, out, dl = written
    assert len(_items(dl)) == N_CASES
    for item in _items(dl):
        label = read_label_map(out / item["label"])
        image, meta = read_image(out / item["image"])
        assert image.shape == label.shape == (phantom.size, phantom.size)
        assert meta.spacing == pytest.approx(phantom.spacing, rel=1e-5)
        _assert_areas(phantom, label, item["parents"])


def test_datalist_layout_recreates_the_phantom(written):
    phantom, out, dl = written
    assert [len(dl[s]) for s in SPLITS] == [7, 1, 2]
    assert dl["graph"] == phantom.graph
    assert dl["phantom"] == {"kind": phantom.kind, "size": phantom.size, "seed": 7}
    assert dl["spacing_mm"] == pytest.approx(list(phantom.spacing))
    assert dl["image_size"] == [phantom.size, phantom.size]
    assert {r["structure"] for r in dl["regions"]} <= set(phantom.structures)
    item = dl["training"][0]
    assert set(item) == {"case", "image", "label", "parents", "noise"}
    assert item["image"] == f"images/{item['case']}{phantom.image_suffix}"
    again = phantom_from_datalist(dl)
    assert type(again) is type(phantom) and again.size == phantom.size
    _, label, _ = again.counterfactual(item["noise"], {})
    np.testing.assert_array_equal(label, read_label_map(out / item["label"]))


def test_null_intervention_reproduces_the_file_bit_for_bit(written):
    phantom, out, dl = written
    for item in _items(dl)[:3]:
        image, label, parents = phantom.counterfactual(item["noise"], {})
        assert parents == {k: item["parents"][k] for k in parents}
        regional = regional_area_values(torch.from_numpy(label), phantom.structures, phantom.regions, phantom.spacing)
        assert regional and regional == {k: item["parents"][k] for k in regional}
        path = out / item["image"]
        if phantom.kind == "cxr":
            stored = pydicom.dcmread(path).pixel_array
        else:
            stored = np.asarray(nib.load(path).dataobj).T
        assert stored.dtype == image.dtype
        np.testing.assert_array_equal(stored, image)


@pytest.mark.parametrize("where", [0.0, 0.5, 1.0])
def test_do_area_renders_the_target(kind, where):
    phantom = make_phantom(kind, SIZES[kind])
    noise = phantom.sample_noise(np.random.default_rng(1))
    for structure, index in phantom.structures.items():
        name = structure_variable(structure)
        lo, hi = phantom.support[name]
        target = lo + where * (hi - lo)
        _, label, parents = phantom.counterfactual(noise, {name: target})
        assert parents[name] == target
        area = np.count_nonzero(label == index) * phantom.pixel_area_mm2
        assert abs(area - target) <= 0.02 * target, (name, area, target)
        _assert_areas(phantom, label, parents)


def test_all_areas_at_their_extremes_render(kind):
    phantom = make_phantom(kind, SIZES[kind])
    noise = phantom.sample_noise(np.random.default_rng(2))
    names = [structure_variable(s) for s in phantom.structures]
    for end in (0, 1):
        _, label, parents = phantom.counterfactual(noise, {n: phantom.support[n][end] for n in names})
        _assert_areas(phantom, label, parents)
        assert not label[[0, -1]].any() and not label[:, [0, -1]].any()  # inside the field of view


def test_interventions_change_descendants_only(kind):
    phantom = make_phantom(kind, SIZES[kind])
    noise = phantom.sample_noise(np.random.default_rng(3))
    factual = phantom.parents_from_noise(noise)
    for name in phantom.graph:
        lo, hi = phantom.support[name]
        value = (1.0 - factual[name]) if phantom.variables[name]["kind"] == "binary" else lo + 0.9 * (hi - lo)
        cf = phantom.parents_from_noise(noise, {name: value})
        below = _descendants(phantom.graph, name)
        for other in phantom.graph:
            if other == name:
                assert cf[other] == value
            elif other in below:
                assert cf[other] != factual[other], (name, other)
            else:
                assert cf[other] == factual[other], (name, other)


def test_named_interventions():
    cxr = CXRPhantom(128)
    noise = cxr.sample_noise(np.random.default_rng(4))
    f = cxr.parents_from_noise(noise)
    cf = cxr.parents_from_noise(noise, {"heart_area": f["heart_area"] + 3000.0})
    assert cf["left_lung_area"] < f["left_lung_area"]  # a larger heart compresses the left lung
    assert all(cf[k] == f[k] for k in ("right_lung_area", "age", "sex"))
    cf = cxr.parents_from_noise(noise, {"left_lung_area": 9000.0})
    assert all(cf[k] == f[k] for k in ("heart_area", "age", "sex", "right_lung_area"))

    ccta = CCTAPhantom(64)
    noise = ccta.sample_noise(np.random.default_rng(4))
    f = ccta.parents_from_noise(noise)
    cf = ccta.parents_from_noise(noise, {"calcified_plaque_area": 4.4})
    assert cf["lumen_area"] < f["lumen_area"]  # more plaque, narrower lumen
    assert all(cf[k] == f[k] for k in ("vessel_wall_area", "age", "noncalcified_plaque_area"))
    cf = ccta.parents_from_noise(noise, {"lumen_area": 4.0})
    assert all(cf[k] == f[k] for k in ("calcified_plaque_area", "noncalcified_plaque_area", "vessel_wall_area", "age"))


def test_mm2_parents_do_not_depend_on_image_size(kind):
    small, large = make_phantom(kind, 64), make_phantom(kind, 128)
    noise = small.sample_noise(np.random.default_rng(5))
    a, b = small.parents_from_noise(noise), large.parents_from_noise(noise)
    for name in small.graph:
        assert a[name] == b[name]
    area = structure_variable(next(iter(small.structures)))
    assert a[f"{area}_px"] == pytest.approx(b[f"{area}_px"] / 4)  # half the size: 4x the pixel area


def test_chest_polarity_and_laterality():
    phantom = CXRPhantom(128)
    rng = np.random.default_rng(6)
    for _ in range(3):
        image, label, _ = phantom.counterfactual(phantom.sample_noise(rng), {})
        lungs = (label == phantom.structures["left_lung"]) | (label == phantom.structures["right_lung"])
        assert image[lungs].mean() < image[label == phantom.structures["heart"]].mean() - 500
        cols = np.arange(phantom.size)[None, :].repeat(phantom.size, 0)
        assert cols[label == phantom.structures["left_lung"]].mean() > phantom.size / 2  # patient's left: image right
        assert cols[label == phantom.structures["right_lung"]].mean() < phantom.size / 2


def test_plaques_sit_at_their_angles():
    phantom = CCTAPhantom(64)
    rng = np.random.default_rng(7)
    for _ in range(3):
        noise = phantom.sample_noise(rng)
        _, label, _ = phantom.counterfactual(noise, {})
        rows, cols = np.nonzero(label == phantom.structures["lumen"])
        centre = rows.mean(), cols.mean()
        for name, key in (("calcified_plaque", "calcified_angle_deg"), ("noncalcified_plaque", "noncalcified_angle_deg")):
            r, c = np.nonzero(label == phantom.structures[name])
            angle = math.degrees(math.atan2(-(r.mean() - centre[0]), c.mean() - centre[1]))
            assert abs((angle - noise[key] + 180) % 360 - 180) < 20, (name, angle, noise[key])


def test_monochrome1_reads_back_like_monochrome2(tmp_path):
    phantom = CXRPhantom(64)
    m2 = phantom.write_dataset(tmp_path / "m2", 2, seed=3)
    m1 = phantom.write_dataset(tmp_path / "m1", 2, seed=3, photometric="MONOCHROME1")
    for item in _items(json.loads(m2.read_text(encoding="utf-8"))):
        a, meta_a = read_image(m2.parent / item["image"])
        b, meta_b = read_image(m1.parent / item["image"])
        assert (meta_a.photometric, meta_b.photometric) == ("MONOCHROME2", "MONOCHROME1")
        np.testing.assert_allclose(a, b, atol=1e-6)
        ds = pydicom.dcmread(m1.parent / item["image"])
        assert ds.PatientID == item["case"] and ds.PatientSex in ("M", "F") and ds.PatientAge.endswith("Y")


def test_same_seed_same_data(tmp_path):
    phantom = CXRPhantom(64)
    paths = [phantom.write_dataset(tmp_path / name, 3, seed=11) for name in ("a", "b")]
    other = phantom.write_dataset(tmp_path / "c", 3, seed=12)
    a, b, c = (json.loads(p.read_text(encoding="utf-8")) for p in (*paths, other))
    for split in SPLITS:
        assert a[split] == b[split]
    for x, y in zip(_items(a), _items(b)):
        pa = pydicom.dcmread(paths[0].parent / x["image"]).pixel_array
        pb = pydicom.dcmread(paths[1].parent / y["image"]).pixel_array
        np.testing.assert_array_equal(pa, pb)
    assert [i["noise"] for i in _items(a)] != [i["noise"] for i in _items(c)]


def test_ccta_same_seed_same_pixels(tmp_path):
    phantom = CCTAPhantom(64)
    paths = [phantom.write_dataset(tmp_path / name, 2, seed=5) for name in ("a", "b")]
    for item in _items(json.loads(paths[0].read_text(encoding="utf-8"))):
        a, b = (np.asarray(nib.load(p.parent / item["image"]).dataobj) for p in paths)
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "kind, do, named",
    [
        ("cxr", {"lung_area": 1000.0}, "lung_area"),
        ("cxr", {"heart_area": float("nan")}, "heart_area"),
        ("cxr", {"heart_area": float("inf")}, "heart_area"),
        ("cxr", {"left_lung_area": -5.0}, "left_lung_area"),
        ("cxr", {"right_lung_area": 1e6}, "right_lung_area"),
        ("cxr", {"heart_area_px": 1000.0}, "heart_area_px"),
        ("cxr", {"sex": 0.5}, "sex"),
        ("cxr", {"age": 200.0}, "age"),
        ("ccta", {"lumen_area": -1.0}, "lumen_area"),
        ("ccta", {"calcified_plaque_area": 0.1}, "calcified_plaque_area"),
        ("ccta", {"vessel_wall_area_px": 10.0}, "vessel_wall_area_px"),
        ("ccta", {"plaque": 2.0}, "plaque"),
    ],
)
def test_bad_interventions_name_the_variable(kind, do, named):
    phantom = make_phantom(kind, SIZES[kind])
    noise = phantom.sample_noise(np.random.default_rng(0))
    with pytest.raises(InputError, match=named):
        phantom.counterfactual(noise, do)


def test_error_messages_are_helpful(tmp_path):
    phantom = CXRPhantom(64)
    noise = phantom.sample_noise(np.random.default_rng(0))
    with pytest.raises(InputError, match=r"known variables: .*heart_area"):
        phantom.parents_from_noise(noise, {"lung": 1.0})
    with pytest.raises(InputError, match=r"left_lung_area = -5.0 .*\[7000, 22000\]"):
        phantom.parents_from_noise(noise, {"left_lung_area": -5.0})
    with pytest.raises(InputError, match=r"intervene on 'heart_area'"):
        phantom.parents_from_noise(noise, {"heart_area_px": 1.0})
    with pytest.raises(InputError, match="lacks"):
        phantom.parents_from_noise({"u_age": 0.5})
    with pytest.raises(InputError, match="unknown phantom kind 'mri'"):
        make_phantom("mri", 64)
    with pytest.raises(InputError, match="phantom"):
        phantom_from_datalist({"name": "jsrt"})
    with pytest.raises(InputError, match="too coarse"):
        make_phantom("ccta", 32)
    with pytest.raises(InputError, match="photometric"):
        make_phantom("ccta", 64).write_dataset(tmp_path, 1, seed=0, photometric="MONOCHROME1")
    assert not (tmp_path / "datalist.json").exists()
