"""``segcft bench robustness``: the segmentors' Dice on shifted copies of the test split.

A research group's radiographs come from other scanners, exposures and hospitals than the
training set's. The guide and the judge measure every counterfactual, so their errors on such
images are the floor of every figure a user sees. This benchmark copies the test split under
the shifts of :data:`SHIFTS` and reports Dice per structure for each segmentor instance of each
``segcft bench segmentor`` report given, so two trainings (e.g. before and after an option)
are compared on the same shifted images.

Shifts act on the loaded image at the segmentor's resolution, in display values ``[0, 1]``,
except ``dicom_monochrome1``: each test image is written as a 12-bit MONOCHROME1 DICOM with no
window and read back through segcft's DICOM reader, as a user's CR would be.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.metrics import DiceMetric
from monai.networks.layers import GaussianFilter

from segcft.data.datalist import load_datalist, structures_of
from segcft.data.io import read_image, write_dicom_radiograph
from segcft.data.transforms import image_pipeline
from segcft.engines.loading import load_segmentor, modality_of, segmentor_instance
from segcft.utils import InputError, write_json

#: Name -> what the shift does (reported with the figures).
SHIFTS: dict[str, str] = {
    "none": "the test split as loaded",
    "gamma_0.5": "display values raised to the power 0.5 (brighter mid-tones)",
    "gamma_2.0": "display values raised to the power 2 (darker mid-tones)",
    "low_contrast": "contrast halved about mid-grey",
    "overexposed": "values mapped to [0.4, 1] (a washed-out film)",
    "blur": "Gaussian blur, sigma 1 pixel at the segmentor's resolution",
    "noise": "Gaussian noise, SD 0.05 of the display range",
    "zoom_in": "the central 85% cropped and resized back (a tighter field of view)",
    "zoom_out": "10% border padding on each side, resized back (a wider field of view)",
    "dicom_monochrome1": "written as 12-bit MONOCHROME1 DICOM without a window and read back",
}


def _resize(t: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    if mode == "nearest":
        return F.interpolate(t.float(), size=(size, size), mode="nearest").to(t.dtype)
    return F.interpolate(t, size=(size, size), mode="area")


def _zoom(u: torch.Tensor, label: torch.Tensor, factor: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Zoom in (factor > 1: crop the centre) or out (factor < 1: pad with the border's mean), resized back."""
    size = u.shape[-1]
    if factor > 1:
        keep = round(size / factor)
        lo = (size - keep) // 2
        u, label = u[..., lo:lo + keep, lo:lo + keep], label[..., lo:lo + keep, lo:lo + keep]
    else:
        pad = round(size * (1 / factor - 1) / 2)
        fill = torch.cat([u[..., 0, :], u[..., -1, :], u[..., :, 0], u[..., :, -1]], -1).mean(-1)[..., None, None]
        u = F.pad(u - fill, (pad,) * 4) + fill
        label = F.pad(label, (pad,) * 4)
    return _resize(u, size, "area"), _resize(label, size, "nearest")


def shift(name: str, u: torch.Tensor, label: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the in-memory shift ``name`` to display values ``u`` in ``[0, 1]``, ``(B, 1, H, W)``, and their labels."""
    if name == "none":
        return u, label
    if name.startswith("gamma_"):
        return u.clamp_min(0) ** float(name.split("_")[1]), label
    if name == "low_contrast":
        return 0.5 + 0.5 * (u - 0.5), label
    if name == "overexposed":
        return 0.4 + 0.6 * u, label
    if name == "blur":
        return GaussianFilter(2, sigma=1.0)(u), label
    if name == "noise":
        return (u + 0.05 * torch.randn(u.shape, generator=generator)).clamp(0, 1), label
    if name == "zoom_in":
        return _zoom(u, label, 1 / 0.85)
    if name == "zoom_out":
        return _zoom(u, label, 1 / 1.2)
    raise InputError(f"unknown shift {name!r}; known: {list(SHIFTS)}")


def _as_dicom(items: Sequence[Mapping], folder: Path) -> list[dict]:
    """The items with their images rewritten as 12-bit MONOCHROME1 DICOMs (spacing kept)."""
    out = []
    for i, item in enumerate(items):
        arr, meta = read_image(item["image"])
        spacing = meta.spacing or tuple(item.get("spacing_mm") or (1.0, 1.0))
        pixels = np.rint(np.clip(arr, 0, 1) * 4095).astype(np.uint16)
        path = write_dicom_radiograph(pixels, folder / f"{i:04d}.dcm", spacing, photometric="MONOCHROME1", modality="CR",
                                      patient_id=f"SHIFT{i:04d}", patient_name="Shifted^Copy", series_description="segcft robustness copy")
        out.append({**item, "image": str(path)})
    return out


def _load(items: Sequence[Mapping], size: int, modality: str) -> tuple[torch.Tensor, torch.Tensor]:
    pipe = image_pipeline(size, modality)
    loaded = [pipe(dict(item)) for item in items]
    images = torch.stack([d["image"].as_tensor() for d in loaded]).float()
    labels = torch.stack([d["label"].as_tensor() for d in loaded]).long()
    return images, labels


@torch.no_grad()
def _dice(net: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, classes: int, device: torch.device,
          batch_size: int = 16) -> torch.Tensor:
    metric = DiceMetric(include_background=False, reduction="mean_batch")
    for i in range(0, len(images), batch_size):
        x, y = images[i:i + batch_size].to(device), labels[i:i + batch_size].to(device)
        pred = F.one_hot(net(x).argmax(1), classes).permute(0, 3, 1, 2)
        metric(pred, F.one_hot(y[:, 0], classes).permute(0, 3, 1, 2))
    return metric.aggregate().cpu()


def bench_robustness(
    datalist: str | os.PathLike,
    segmentor_reports: Mapping[str, str | os.PathLike],
    out: str | os.PathLike,
    *,
    instances: Sequence[str] = ("guide", "eval"),
    shifts: Sequence[str] | None = None,
    device: str = "cpu",
    seed: int = 0,
    command: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Dice per structure of every (report, instance) on every shift of the test split; write and return the report.

    ``segmentor_reports`` maps a label (e.g. ``before``, ``after``) to a ``segcft bench
    segmentor`` report. Noise is drawn from ``seed``, the same for every segmentor.
    """
    shifts = list(shifts or SHIFTS)
    unknown = [s for s in shifts if s not in SHIFTS]
    if unknown:
        raise InputError(f"unknown shifts {unknown}; known: {list(SHIFTS)}")
    dl = load_datalist(datalist)
    if not dl.get("test"):
        raise InputError(f"{datalist}: the datalist has no test split")
    structures = structures_of(dl)
    names, classes = list(structures), len(structures) + 1
    modality = modality_of(dl)
    if modality != "cxr" and "dicom_monochrome1" in shifts:
        raise InputError("the dicom_monochrome1 shift is for radiographs; leave it out for CCTA")
    dev = torch.device(device)
    report: dict[str, Any] = {"benchmark": "robustness", "command": command, "datalist": str(Path(datalist).resolve()),
                              "cases": len(dl["test"]), "seed": seed, "shifts": {s: SHIFTS[s] for s in shifts}, "models": {}}
    cache: dict[int, dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        dicom_items = _as_dicom(dl["test"], Path(tmp)) if "dicom_monochrome1" in shifts else []
        for label, path in segmentor_reports.items():
            entry_out: dict[str, Any] = {"report": str(path), "instances": {}}
            for instance in instances:
                report_json, entry = segmentor_instance(path, instance)
                net, size = load_segmentor(path, instance, structures, dev)
                if size not in cache:  # each resolution's shifted copies are made once, for every model alike
                    images, labels = _load(dl["test"], size, modality)
                    generator = torch.Generator().manual_seed(seed)
                    cache[size] = {}
                    for name in shifts:
                        if name == "dicom_monochrome1":
                            cache[size][name] = _load(dicom_items, size, modality)
                        else:
                            u, y = shift(name, (images + 1) / 2, labels, generator)
                            cache[size][name] = (u.clamp(0, 1) * 2 - 1, y)
                dice = {}
                for name in shifts:
                    if progress:
                        progress(f"{label} {instance}: {name}")
                    values = _dice(net, *cache[size][name], classes, dev)
                    dice[name] = {s: round(float(v), 4) for s, v in zip(names, values)}
                entry_out["instances"][instance] = {
                    "network": entry["network"], "image_size": size, "normalise": entry.get("normalise", "fixed"),
                    "augmentation": entry.get("augmentation", "anatomy"), "dice": dice,
                    "mean_dice": {s: round(float(np.mean(list(d.values()))), 4) for s, d in dice.items()},
                }
            entry_out["config_overrides"] = report_json.get("config_overrides", {})
            report["models"][label] = entry_out
    write_json(report, out)
    return report


def robustness_table(report: Mapping[str, Any]) -> str:
    """A markdown table: mean Dice over structures per shift, one column per (model, instance), and the worst structure."""
    columns = [(label, inst) for label, m in report["models"].items() for inst in m["instances"]]
    head = "| shift | " + " | ".join(f"{label} {inst}" for label, inst in columns) + " |"
    rows = [head, "|---" * (len(columns) + 1) + "|"]
    for name in report["shifts"]:
        cells = []
        for label, inst in columns:
            e = report["models"][label]["instances"][inst]
            worst = min(e["dice"][name].items(), key=lambda kv: kv[1])
            cells.append(f"{e['mean_dice'][name]:.3f} ({worst[0]} {worst[1]:.3f})")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)
