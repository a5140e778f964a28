"""Inference inputs and outputs that survive bad files.

Inputs are loaded up front, one by one: a file that fails to load is reported by name and
the rest are processed. The writer is an Ignite handler that saves each predicted label
map atomically and, when the run completes, writes one CSV of structure and regional areas
per case (and the list of files that failed).
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events

from segcft.data.datalist import SPLITS, load_datalist
from segcft.data.io import IMAGE_SUFFIXES, write_nifti, write_png
from segcft.measure import RegionSpec, hard_areas, partition, region_areas
from segcft.utils import InputError, atomic_path, write_json

logger = logging.getLogger(__name__)


def list_inputs(source: str | os.PathLike, split: str = "test") -> list[dict]:
    """Items to run on: one image file, a folder of DICOM/PNG/NIfTI files, or a datalist's split."""
    source = Path(source)
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES))
        if not files:
            raise InputError(f"{source}: no DICOM, PNG or NIfTI files in this folder")
        return [{"image": str(p), "case": _case_name(p)} for p in files]
    if source.suffix == ".json":
        if split not in SPLITS:
            raise InputError(f"unknown split {split!r}; known: {list(SPLITS)}")
        return [{k: v for k, v in item.items() if k in ("image", "case", "spacing_mm")} for item in load_datalist(source)[split]]
    if source.is_file():
        return [{"image": str(source), "case": _case_name(source)}]
    raise InputError(f"{source}: no such file or folder")


def _case_name(path: Path) -> str:
    name = path.name
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def load_inference_inputs(
    source: str | os.PathLike, transform: Callable[[dict], dict], split: str = "test"
) -> tuple[list[dict], list[dict]]:
    """Apply ``transform`` to every input; return the loaded items and ``{image, error}`` failures."""
    loaded, failed = [], []
    for item in list_inputs(source, split):
        try:
            loaded.append(transform(item))
        except InputError as e:
            logger.error("skipping %s: %s", item["image"], e)
            failed.append({"image": item["image"], "error": str(e)})
    if not loaded:
        raise InputError(f"{source}: none of the {len(failed)} input(s) could be read; first error: {failed[0]['error']}")
    return loaded, failed


class SegmentationWriter:
    """Write predicted label maps and an areas CSV from an evaluator's output.

    Each decollated item needs ``case``, ``spacing`` and ``image``; each output ``pred``:
    ``(C, H, W)`` probabilities or logits, or a ``(1, H, W)`` label map.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        structures: Mapping[str, int],
        regions: Sequence[RegionSpec | Mapping] = (),
        output_format: str = "nifti",
        failed: Sequence[Mapping] = (),
    ) -> None:
        if output_format not in ("nifti", "png"):
            raise InputError(f"output_format must be 'nifti' or 'png', got {output_format!r}")
        self.output_dir = Path(output_dir)
        self.structures = dict(structures)
        self.regions = [r if isinstance(r, RegionSpec) else RegionSpec.from_dict(r) for r in regions]
        self.output_format = output_format
        self.failed = list(failed)
        self.rows: list[dict] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.write_batch)
        engine.add_event_handler(Events.COMPLETED, self.write_summary)

    def write_batch(self, engine: Engine) -> None:
        # MONAI engines decollate: batch and output are lists with one dict per item
        for item, output in zip(engine.state.batch, engine.state.output):
            pred = output["pred"]
            labels = pred.argmax(0) if pred.shape[0] > 1 else pred[0].round()
            labels = labels.to(torch.long).cpu()[None]
            spacing = tuple(float(s) for s in item["spacing"])
            self._write_label_map(item["case"], labels[0].numpy().astype(np.uint8), spacing)
            self.rows.append(self._areas_row(item["case"], item["image"].meta, labels, spacing))

    def _write_label_map(self, case: str, labels: np.ndarray, spacing: tuple[float, float]) -> None:
        if self.output_format == "png":
            write_png(labels, self.output_dir / "labels" / f"{case}.png")
        else:
            write_nifti(labels, self.output_dir / "labels" / f"{case}.nii.gz", spacing)

    def _areas_row(self, case: str, meta: Mapping, labels: torch.Tensor, spacing: tuple[float, float]) -> dict:
        row: dict = {
            "case": case,
            "image": meta["filename_or_obj"],
            "row_spacing_mm": spacing[0],
            "col_spacing_mm": spacing[1],
            "spacing_source": meta["spacing_source"],  # "assumed": the mm2 columns are not physical
        }
        for name, area in hard_areas(labels, self.structures, spacing).items():
            row[f"{name}_area_px"] = int(area["px"][0])
            row[f"{name}_area"] = round(float(area["mm2"][0]), 3)
        for spec in self.regions:
            occupancy = (labels[0] == self.structures[spec.structure]).float()[None]
            maps = partition(labels, self.structures, spec)
            for name, area in region_areas(occupancy, maps, spec, spacing).items():
                row[name] = round(float(area["mm2"][0]), 3)
        return row

    def write_summary(self, engine: Engine) -> None:
        if self.rows:
            with atomic_path(self.output_dir / "areas.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=list(self.rows[0]))
                writer.writeheader()
                writer.writerows(self.rows)
        write_json({"processed": len(self.rows), "failed": self.failed}, self.output_dir / "summary.json")
        for failure in self.failed:
            logger.error("not processed: %s (%s)", failure["image"], failure["error"])
