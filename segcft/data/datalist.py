"""The segcft datalist: MONAI's decathlon layout plus a description of structures and variables.

A datalist is one JSON file::

    {
      "name": "jsrt", "description": "...", "modality": "CR",
      "labels": {"0": "background", "1": "left_lung", ...},          # decathlon style
      "structures": [{"name": "left_lung", "label": 1}, ...],
      "variables": {"left_lung_area": {"kind": "continuous", "unit": "mm2",
                                       "structure": "left_lung", "region": null}, ...},
      "regions": [{"structure": "left_lung", "kind": "bands", "regions": [...]}, ...],
      "graph": {"heart_area": ["age", "sex"], ...},                 # optional causal DAG
      "training": [{"case": "...", "image": "images/x.dcm", "label": "labels/x.png",
                    "parents": {"left_lung_area": 17890.5, ...}}, ...],
      "validation": [...], "test": [...]
    }

Paths in items are relative to the datalist's folder. Every item's parents must be
declared in ``variables``.
"""

from __future__ import annotations

import copy
import random
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from segcft.utils import InputError, read_json, write_json

SPLITS = ("training", "validation", "test")
VARIABLE_KINDS = ("continuous", "binary", "categorical")


def structure_variable(structure: str, unit: str = "mm2") -> str:
    """Name of a structure's area variable: ``left_lung_area`` (mm^2) or ``left_lung_area_px``."""
    return f"{structure}_area" if unit == "mm2" else f"{structure}_area_px"


def variable(
    kind: str, unit: str | None = None, structure: str | None = None, region: str | None = None, **extra: Any
) -> dict[str, Any]:
    """A variable description (kind, unit, which structure and region it measures)."""
    if kind not in VARIABLE_KINDS:
        raise ValueError(f"variable kind must be one of {VARIABLE_KINDS}, got {kind!r}")
    return {"kind": kind, "unit": unit, "structure": structure, "region": region, **extra}


def area_variables(structures: Mapping[str, int]) -> dict[str, dict[str, Any]]:
    """The mm^2 and pixel area variables of every structure."""
    out = {}
    for name in structures:
        out[structure_variable(name, "mm2")] = variable("continuous", "mm2", name)
        out[structure_variable(name, "px")] = variable("continuous", "px", name)
    return out


def region_variables(specs) -> dict[str, dict[str, Any]]:
    """The mm^2 variables of every region of the given :class:`~segcft.measure.RegionSpec` partitions."""
    return {
        name: variable("continuous", "mm2", spec.structure, region)
        for spec in specs
        for region, name in zip(spec.regions, spec.variable_names())
    }


def make_datalist(
    name: str,
    structures: Mapping[str, int],
    variables: Mapping[str, Mapping[str, Any]],
    splits: Mapping[str, list[dict[str, Any]]],
    **fields: Any,
) -> dict[str, Any]:
    """Assemble and validate a datalist dictionary."""
    labels = {"0": "background", **{str(i): s for s, i in structures.items()}}
    dl = {
        "name": name,
        **fields,
        "labels": labels,
        "structures": [{"name": s, "label": int(i)} for s, i in structures.items()],
        "variables": dict(variables),
        **{split: list(splits.get(split, [])) for split in SPLITS},
    }
    validate(dl, "<new datalist>")
    return dl


def write_datalist(datalist: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Validate and write a datalist atomically."""
    validate(datalist, str(path))
    return write_json(datalist, path)


def validate(dl: Mapping[str, Any], where: str) -> None:
    """Check the structure of a datalist; raise :class:`InputError` naming the bad field."""
    for key in ("structures", "variables", *SPLITS):
        if key not in dl:
            raise InputError(f"{where}: datalist has no {key!r} field")
    labels = [s["label"] for s in dl["structures"]]
    if len(set(labels)) != len(labels) or 0 in labels:
        raise InputError(f"{where}: structure labels must be distinct and non-zero, got {labels}")
    names = {s["name"] for s in dl["structures"]}
    for vname, v in dl["variables"].items():
        if v.get("kind") not in VARIABLE_KINDS:
            raise InputError(f"{where}: variable {vname!r} has kind {v.get('kind')!r}")
        if v.get("structure") is not None and v["structure"] not in names:
            raise InputError(f"{where}: variable {vname!r} measures unknown structure {v['structure']!r}")
    for child, parents in dl.get("graph", {}).items():
        for var in (child, *parents):
            if var not in dl["variables"]:
                raise InputError(f"{where}: graph names unknown variable {var!r}")
    seen: dict[str, str] = {}
    for split in SPLITS:
        for i, item in enumerate(dl[split]):
            case = item.get("case", f"#{i}")
            if "image" not in item:
                raise InputError(f"{where}: {split}[{i}] ({case}) has no 'image'")
            if case in seen:
                raise InputError(f"{where}: case {case!r} is in both {seen[case]} and {split}")
            seen[case] = split
            for vname, value in item.get("parents", {}).items():
                if vname not in dl["variables"]:
                    raise InputError(f"{where}: {split}[{i}] ({case}) has unknown variable {vname!r}")
                if value is None or not math.isfinite(float(value)):
                    raise InputError(f"{where}: {split}[{i}] ({case}) variable {vname!r} is {value}")


def load_datalist(path: str | os.PathLike, *, check_files: bool = True) -> dict[str, Any]:
    """Read a datalist, make item paths absolute and check that the files exist."""
    path = Path(path)
    dl = read_json(path, "datalist")
    validate(dl, str(path))
    dl = copy.deepcopy(dl)
    root = path.parent.resolve()
    for split in SPLITS:
        for item in dl[split]:
            for key in ("image", "label"):
                if key in item and item[key] is not None:
                    item[key] = str((root / item[key]).resolve())
                    if check_files and not Path(item[key]).is_file():
                        raise InputError(f"{path}: {item.get('case', '?')} {key} file {item[key]} not found")
    return dl


def structures_of(dl: Mapping[str, Any]) -> dict[str, int]:
    """``{structure name: label index}`` of a datalist."""
    return {s["name"]: int(s["label"]) for s in dl["structures"]}


def check_structure(dl: Mapping[str, Any], name: str) -> int:
    """The label of structure ``name``; an unknown name raises an error listing the known ones."""
    structures = structures_of(dl)
    if name not in structures:
        raise InputError(f"unknown structure {name!r}; this datalist has {sorted(structures)}")
    return structures[name]


def check_variable(dl: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The description of variable ``name``; an unknown name raises an error listing the known ones."""
    if name not in dl["variables"]:
        raise InputError(f"unknown variable {name!r}; this datalist has {sorted(dl['variables'])}")
    return dl["variables"][name]


def case_split(cases: list[str], fractions: tuple[float, float, float] = (0.7, 0.1, 0.2), seed: int = 0) -> dict[str, list[str]]:
    """A deterministic case-level split: the same cases and seed always give the same split."""
    order = sorted(cases)
    random.Random(seed).shuffle(order)
    n = len(order)
    n_train = round(fractions[0] * n)
    n_val = round(fractions[1] * n)
    return {
        "training": sorted(order[:n_train]),
        "validation": sorted(order[n_train : n_train + n_val]),
        "test": sorted(order[n_train + n_val :]),
    }
