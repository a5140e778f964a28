"""The JSRT datalist built from the real radiographs and masks."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch

from segcft.data.datalist import SPLITS, check_structure, check_variable, load_datalist
from segcft.data.io import read_label_map
from segcft.data.jsrt import build_jsrt_datalist
from segcft.data.structures import CXR_STRUCTURES
from segcft.data.transforms import image_pipeline
from segcft.utils import InputError


def test_datalist_has_all_cases_in_disjoint_splits(jsrt_datalist):
    dl = load_datalist(jsrt_datalist)
    cases = {split: {item["case"] for item in dl[split]} for split in SPLITS}
    assert sum(len(c) for c in cases.values()) == 247
    assert not (cases["training"] & cases["validation"] or cases["training"] & cases["test"] or cases["validation"] & cases["test"])
    assert 0.65 < len(cases["training"]) / 247 < 0.75 and 0.15 < len(cases["test"]) / 247 < 0.25
    assert dl["labels"] == {"0": "background", "1": "left_lung", "2": "right_lung", "3": "heart"}
    assert dl["variables"]["left_lung_area"] == {"kind": "continuous", "unit": "mm2", "structure": "left_lung", "region": None}
    assert dl["variables"]["left_lung_lower_area"]["region"] == "lower"


def test_split_is_deterministic(jsrt_root, jsrt_datalist, tmp_path):
    again = build_jsrt_datalist(jsrt_root, tmp_path, seed=0, progress=False)
    a, b = json.loads(jsrt_datalist.read_text(encoding="utf-8")), json.loads(again.read_text(encoding="utf-8"))
    assert [i["case"] for i in a["test"]] == [i["case"] for i in b["test"]]


def test_areas_match_the_masks(jsrt_root, jsrt_datalist):
    dl = load_datalist(jsrt_datalist)
    with open(jsrt_root / "cases.csv", encoding="utf-8") as f:
        table = {row["case"]: row for row in csv.DictReader(f)}
    for item in dl["test"][:15]:
        labels = read_label_map(item["label"])
        for name, index in CXR_STRUCTURES.items():
            px = int((labels == index).sum())
            assert item["parents"][f"{name}_area_px"] == px
            assert item["parents"][f"{name}_area"] == pytest.approx(px * 0.49, abs=0.01)
            # the label map gives the lungs the few pixels they share with the heart mask
            mask = read_label_map(jsrt_root / "masks" / name / f"{item['case']}.png") > 127
            assert abs(px - int(table[item["case"]][f"{name}_area_px"])) <= 0.02 * mask.sum()
        zones = sum(item["parents"][f"left_lung_{z}_area"] for z in ("upper", "middle", "lower"))
        assert zones == pytest.approx(item["parents"]["left_lung_area"], abs=0.05)
        assert item["parents"]["nodule"] == float(table[item["case"]]["nodule"])


def test_left_lung_is_on_the_image_right(jsrt_datalist):
    dl = load_datalist(jsrt_datalist)
    out = image_pipeline(128, "cxr")(dl["test"][0])
    lab = out["label"][0]
    left_col = torch.nonzero(lab == 1)[:, 1].float().mean()
    right_col = torch.nonzero(lab == 2)[:, 1].float().mean()
    assert left_col > 64 > right_col
    assert torch.allclose(out["spacing"], torch.tensor([0.7 * 4, 0.7 * 4]))
    img = out["image"][0]
    assert img[lab == 1].mean() < img[lab == 3].mean()  # lungs dark, heart bright


def _tiny_jsrt(jsrt_root, tmp_path, n=3):
    src = tmp_path / "jsrt"
    (src / "images").mkdir(parents=True)
    with open(jsrt_root / "cases.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[:n]
    with open(src / "cases.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    for row in rows:
        shutil.copy(jsrt_root / "images" / f"{row['case']}.png", src / "images")
        for organ in CXR_STRUCTURES:
            (src / "masks" / organ).mkdir(parents=True, exist_ok=True)
            shutil.copy(jsrt_root / "masks" / organ / f"{row['case']}.png", src / "masks" / organ)
    return src, [r["case"] for r in rows]


def test_missing_mask_is_named_and_nothing_is_written(jsrt_root, tmp_path):
    src, cases = _tiny_jsrt(jsrt_root, tmp_path)
    missing = src / "masks" / "heart" / f"{cases[-1]}.png"
    missing.unlink()
    out = tmp_path / "out"
    with pytest.raises(InputError, match=str(missing)):
        build_jsrt_datalist(src, out, progress=False)
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["jsrt"]


def test_mask_of_another_size_is_named(jsrt_root, tmp_path):
    from PIL import Image

    src, cases = _tiny_jsrt(jsrt_root, tmp_path)
    bad = src / "masks" / "left_lung" / f"{cases[0]}.png"
    Image.fromarray(np.zeros((256, 256), np.uint8)).save(bad)
    with pytest.raises(InputError, match=f"{bad}.*256 x 256"):
        build_jsrt_datalist(src, tmp_path / "out", progress=False)


def test_unknown_structure_and_variable_are_named(jsrt_datalist):
    dl = load_datalist(jsrt_datalist)
    assert check_structure(dl, "heart") == 3
    with pytest.raises(InputError, match="'liver'"):
        check_structure(dl, "liver")
    with pytest.raises(InputError, match="'lung_volume'"):
        check_variable(dl, "lung_volume")


def test_datalist_with_unknown_variable_or_nan_is_refused(jsrt_datalist, tmp_path):
    dl = json.loads(jsrt_datalist.read_text(encoding="utf-8"))
    dl["training"][0]["parents"]["spleen_area"] = 1.0
    (tmp_path / "a.json").write_text(json.dumps(dl), encoding="utf-8")
    with pytest.raises(InputError, match="spleen_area"):
        load_datalist(tmp_path / "a.json", check_files=False)
    del dl["training"][0]["parents"]["spleen_area"]
    dl["training"][0]["parents"]["heart_area"] = float("nan")
    (tmp_path / "b.json").write_text(json.dumps(dl), encoding="utf-8")
    with pytest.raises(InputError, match="heart_area"):
        load_datalist(tmp_path / "b.json", check_files=False)
