"""Build a segcft datalist from the JSRT chest radiographs with SCR organ masks.

The source folder is read in place (it is research-use data and is never copied): the
datalist refers to its images by relative path, and only the derived label maps are
written to the output folder. Label map: 0 background, 1 left lung, 2 right lung,
3 heart; where the SCR heart and lung masks overlap (a few dozen pixels), the lung wins.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from segcft.data.datalist import area_variables, case_split, make_datalist, region_variables, variable, write_datalist
from segcft.data.io import read_label_map, read_png, write_png
from segcft.data.structures import CXR_REGIONS, CXR_STRUCTURES
from segcft.measure import hard_areas, regional_area_values
from segcft.utils import InputError, staged_dir

#: Pixel spacing of the 512 x 512 JSRT images (2048 px at 0.175 mm, downsampled by 4).
JSRT_SPACING_MM = (0.7, 0.7)
#: Mask painting order: later structures win where masks overlap.
PAINT_ORDER = ("heart", "left_lung", "right_lung")


def compose_label_map(masks: dict[str, np.ndarray]) -> np.ndarray:
    """One uint8 label map from binary masks, painted in :data:`PAINT_ORDER`."""
    shape = next(iter(masks.values())).shape
    labels = np.zeros(shape, dtype=np.uint8)
    for name in PAINT_ORDER:
        labels[masks[name]] = CXR_STRUCTURES[name]
    return labels


def _read_mask(path: Path, shape: tuple[int, int], image: Path) -> np.ndarray:
    if not path.is_file():
        raise InputError(f"{path}: mask not found")
    mask = read_label_map(path)
    if mask.shape != shape:
        raise InputError(f"{path}: mask is {mask.shape[0]} x {mask.shape[1]} but image {image} is {shape[0]} x {shape[1]}")
    return mask > 127


def _read_cases(src: Path) -> list[dict[str, str]]:
    table = src / "cases.csv"
    if not table.is_file():
        raise InputError(f"{table}: not found (is {src} a JSRT folder with images/, masks/, cases.csv?)")
    with open(table, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for column in ("case", "nodule"):
        if rows and column not in rows[0]:
            raise InputError(f"{table}: missing column {column!r}")
    if not rows:
        raise InputError(f"{table}: no cases")
    return rows


def jsrt_variables() -> dict[str, dict]:
    """Variables of the JSRT datalist: structure areas, lung-zone areas and the nodule flag."""
    variables = {"nodule": variable("binary", None, None, description="lung nodule present (JPCLN)")}
    variables.update(area_variables(CXR_STRUCTURES))
    variables.update(region_variables(CXR_REGIONS))
    return variables


def measure_parents(labels: np.ndarray, spacing: tuple[float, float]) -> dict[str, float]:
    """Structure areas (mm^2 and px) and lung-zone areas (mm^2) of one label map."""
    lab = torch.from_numpy(labels.astype(np.int64))[None]
    parents = {}
    for name, area in hard_areas(lab, CXR_STRUCTURES, spacing).items():
        parents[f"{name}_area"] = round(float(area["mm2"][0]), 3)
        parents[f"{name}_area_px"] = float(area["px"][0])
    parents.update(regional_area_values(lab[0], CXR_STRUCTURES, CXR_REGIONS, spacing))
    return parents


def build_jsrt_datalist(src: str | os.PathLike, out: str | os.PathLike, seed: int = 0, progress: bool = True) -> Path:
    """Write ``out/datalist.json`` and ``out/labels/*.png`` for the JSRT folder ``src``."""
    src, out = Path(src).resolve(), Path(out).resolve()
    rows = _read_cases(src)
    with staged_dir(out) as stage:
        items = _build_items(src, out, stage, rows, progress)
        split = case_split(list(items), seed=seed)
        datalist = make_datalist(
            "jsrt",
            CXR_STRUCTURES,
            jsrt_variables(),
            {name: [items[c] for c in cases] for name, cases in split.items()},
            description=(
                "JSRT chest radiographs (Shiraishi et al., AJR 2000) with SCR masks (van Ginneken et al., "
                "MedIA 2006); research use, read in place from the source folder"
            ),
            modality="CR",
            source=str(src),
            spacing_mm=list(JSRT_SPACING_MM),
            regions=[dataclasses.asdict(spec) for spec in CXR_REGIONS],
            split_seed=seed,
        )
        write_datalist(datalist, stage / "datalist.json")
    return out / "datalist.json"


def _build_items(src: Path, out: Path, stage: Path, rows: list[dict[str, str]], progress: bool) -> dict[str, dict]:
    """Label maps written under ``stage``, and datalist items with paths relative to ``out``."""
    items = {}
    for row in tqdm(rows, desc="JSRT cases", disable=not progress):
        case = row["case"]
        image_path = src / "images" / f"{case}.png"
        if not image_path.is_file():
            raise InputError(f"{image_path}: image not found (listed in {src / 'cases.csv'})")
        image, _ = read_png(image_path)
        masks = {name: _read_mask(src / "masks" / name / f"{case}.png", image.shape, image_path) for name in CXR_STRUCTURES}
        labels = compose_label_map(masks)
        write_png(labels, stage / "labels" / f"{case}.png")
        items[case] = {
            "case": case,
            "image": os.path.relpath(image_path, out),
            "label": f"labels/{case}.png",
            "spacing_mm": list(JSRT_SPACING_MM),
            "parents": {"nodule": float(row["nodule"]), **measure_parents(labels, JSRT_SPACING_MM)},
        }
    return items
