"""Counterfactuals of image files with a model package: what ``segcft counterfactual`` runs.

Each input is read and preprocessed exactly as the models saw their training images
(:func:`~segcft.data.transforms.image_pipeline`: pad to square, resize to the model size,
intensity window to ``[-1, 1]``). Its observed parents are measured by the package's
segmentor; values the user gives override them, and variables no segmentor measures take
the package's defaults and are reported as "assumed". An input without a valid pixel
spacing (a PNG, or a DICOM whose PixelSpacing is zero) is measured with the package's
``default_spacing_mm``, the training images' spacing at model size, and the summary says
so.

The counterfactual is computed at the model size and its *change* ``x* - x`` is brought to
the input's own grid through the affines the pipeline tracked, converted to the input's
intensity units and added to the full-resolution original. The output therefore keeps the
input's geometry, spacing and fine detail. For a decoder (the direct HVAE) the model-size
change is resampled (bilinear interpolation undoes the resize, the padding is cropped). A
spatial model instead makes its move at the input's grid: its displacement, layers and band
are resampled and the boundaries moved there, so they stay as sharp as the input's own
(``full_resolution``; ``segcft bench fullres`` measures both against a phantom's truth).
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from segcft.causal.interventions import Intervention, parse_do, resolve
from segcft.causal.scm import Counterfactual
from segcft.data.io import (
    DICOM_SUFFIXES,
    IMAGE_SUFFIXES,
    write_dicom_derived,
    write_nifti,
    write_nifti_derived,
    write_png,
)
from segcft.data.transforms import INTENSITY_WINDOWS, Pipeline, image_pipeline, spacing_of
from segcft.figures import counterfactual_grid
from segcft.serve.package import ModelPackage
from segcft.utils import InputError, staged_dir, write_json

logger = logging.getLogger(__name__)

SUMMARY = "summary.json"
PREVIEW_PIXELS = 512


def input_stem(path: str | os.PathLike) -> str:
    """The file name without its image suffix (``a.nii.gz`` -> ``a``); outputs are named after it."""
    name = Path(path).name
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


def expand_inputs(sources: Sequence[str | os.PathLike]) -> list[Path]:
    """Files as given, and each folder's DICOM, PNG and NIfTI files (by suffix) in sorted order."""
    out: list[Path] = []
    for source in map(Path, sources):
        if source.is_dir():
            files = sorted(p for p in source.iterdir() if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES))
            if not files:
                raise InputError(f"{source}: no DICOM, PNG or NIfTI files in this folder")
            out += files
        elif source.is_file():
            out.append(source)
        else:
            raise InputError(f"{source}: no such file or folder")
    return out


def check_interventions(pkg: ModelPackage, specs: Sequence[str], allow_outside_support: bool = False) -> list[Intervention]:
    """Parse the ``do()`` specs and refuse, before any image is read, what no image can make valid.

    Unknown variables, duplicates, malformed or non-finite values and non-0/1 binaries are
    refused for all; absolute (``set``) targets are checked against the support here, relative
    ones per image (their target depends on the image's factual value), unless
    ``allow_outside_support``.
    """
    if not specs:
        raise InputError("give at least one intervention, e.g. --do left_lung_area=*0.8")
    parsed = [parse_do(s) for s in specs]
    scm = pkg.scm
    probe = {v: torch.tensor([sum(scm.support[v]) / 2]) for v in scm.variables}
    anywhere = {v: (-math.inf, math.inf) for v in scm.variables}
    resolve(parsed, probe, anywhere, scm.graph.kinds)
    if not allow_outside_support:
        resolve([iv for iv in parsed if iv.op == "set"], probe, scm.support, scm.graph.kinds)
    return parsed


def check_real_image(pkg: ModelPackage, path: Path, fmt: str) -> None:
    """Refuse a real radiograph given to a model trained on the phantom: its figures would mean nothing.

    A DICOM written by segcft (a phantom case, or a counterfactual of one) says so in its
    SeriesDescription; any other DICOM is a real radiograph. PNG and NIfTI carry no such mark
    and are not checked.
    """
    phantom = (pkg.manifest.get("training_data") or {}).get("phantom")
    if phantom is None or fmt != "dicom":
        return
    series = str(getattr(pydicom.dcmread(path, stop_before_pixels=True), "SeriesDescription", ""))
    if not series.startswith("segcft"):
        raise InputError(
            f"{path}: a real radiograph, and {pkg.root} is a phantom model (trained on segcft's {phantom['kind']} phantom), "
            "whose anatomy, intensities and areas are not a radiograph's. Make a model of real radiographs with "
            "`segcft demo --data <a chest datalist, e.g. from segcft data jsrt>` and use its model/ folder")


def check_given_parents(pkg: ModelPackage, parents: Mapping[str, float]) -> dict[str, float]:
    """User-given factual values: known variables, finite, 0/1 for binaries, inside the model's support."""
    out = {}
    kinds = pkg.scm.graph.kinds
    for name, value in parents.items():
        if name not in kinds:
            raise InputError(f"parent {name!r} is not a variable of this model; its variables are {pkg.variables}")
        try:
            value = float(value)
        except (TypeError, ValueError) as e:
            raise InputError(f"parent {name!r} must be a number, got {value!r}") from e
        lo, hi = pkg.scm.support[name]
        if kinds[name] == "binary" and value not in (0.0, 1.0):
            raise InputError(f"parent {name!r} is binary: give 0 or 1, got {value:g}")
        if not (math.isfinite(value) and lo <= value <= hi):
            raise InputError(f"parent {name!r} = {value:g} is outside the model's range [{lo:.6g}, {hi:.6g}]")
        out[name] = value
    return out


def model_to_input(model_affine: torch.Tensor, input_affine: torch.Tensor) -> torch.Tensor:
    """The 3 x 3 homogeneous map from input pixel ``(row, col)`` to model pixel index, from the tracked affines."""
    def plane(affine: torch.Tensor) -> torch.Tensor:  # the (row, col) part of a 4 x 4 affine, homogeneous
        a = torch.as_tensor(affine, dtype=torch.float64).cpu()
        return a[[0, 1, 3]][:, [0, 1, 3]]

    return torch.linalg.inv(plane(model_affine)) @ plane(input_affine)


def to_input_grid(values: torch.Tensor, model_affine: torch.Tensor, input_affine: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Resample an ``(S, S)`` (or ``(C, S, S)``) map at model size onto the input's ``(H, W)`` pixel grid (bilinear).

    Both affines map pixel indices ``(row, col)`` to mm, as MONAI tracked them through the
    padding and the resize, so input pixel ``p`` lies at model index
    ``inv(model_affine) @ input_affine @ p``.
    """
    m = model_to_input(model_affine, input_affine).float()
    size = values.shape[-1]
    rows = torch.arange(shape[0], dtype=torch.float32)[:, None]
    cols = torch.arange(shape[1], dtype=torch.float32)[None, :]
    q_row = m[0, 0] * rows + m[0, 1] * cols + m[0, 2]
    q_col = m[1, 0] * rows + m[1, 1] * cols + m[1, 2]
    grid = torch.stack([(2 * q_col + 1) / size - 1, (2 * q_row + 1) / size - 1], -1)[None]  # x = col, y = row
    stack = values.detach().float().cpu().reshape(1, -1, *values.shape[-2:])
    out = F.grid_sample(stack, grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
    return out.reshape(*values.shape[:-2], *out.shape[-2:])


def counterfactual_files(
    pkg: ModelPackage,
    inputs: Sequence[str | os.PathLike],
    do: Sequence[str],
    out_dir: str | os.PathLike,
    particles: int = 1,
    parents: Mapping[str, float] | None = None,
    seed: int = 0,
    progress: bool = True,
    full_resolution: bool = True,
    allow_outside_support: bool = False,
) -> dict[str, Any]:
    """Write the counterfactual of ``do`` for every input file; return (and write) the summary.

    Per input, named after its stem: ``<stem>_counterfactual<suffix>`` in the input's format
    and at its original geometry (DICOM inputs give a derived DICOM in the same study),
    ``<stem>_figure.png`` (original, counterfactual, difference, and the uncertainty with
    ``particles > 1``) and, with ``particles > 1``, ``<stem>_variance.nii.gz`` (the per-pixel
    variance, in the input's intensity units squared, on the input's grid). An input that
    cannot be read or whose intervention leaves the model's support is recorded under
    ``failed`` and skipped. Each input's files appear together or not at all. A spatial model
    moves the boundaries at the input's own resolution unless ``full_resolution`` is False
    (then, as for a decoder, the model-size change is resampled onto the input).

    Every result says which factual and counterfactual parents lie outside the model's
    training support. An intervention whose target leaves it is refused, unless
    ``allow_outside_support``: then it runs, and the result carries a warning naming it.
    """
    if particles < 1:
        raise InputError(f"particles must be at least 1, got {particles}")
    interventions = check_interventions(pkg, do, allow_outside_support)
    given = check_given_parents(pkg, parents or {})
    inputs = [Path(p) for p in inputs]
    stems: dict[str, Path] = {}
    for path in inputs:
        other = stems.setdefault(input_stem(path), path)
        if other != path:
            raise InputError(f"inputs {other} and {path} share the name {input_stem(path)!r}, after which outputs are named")
    out_dir = Path(out_dir)
    pipeline = image_pipeline(pkg.image_size, pkg.modality, with_label=False, device=pkg.device)
    description = "segcft counterfactual do(" + ", ".join(re.sub(r"\s+", "", s) for s in do) + ")"
    results, failed = [], []
    for path in tqdm(inputs, desc="counterfactuals", unit="image", disable=not progress):
        try:
            results.append(_counterfactual_file(pkg, pipeline, path, interventions, given, particles, seed, out_dir, description,
                                                full_resolution, allow_outside_support))
        except InputError as e:
            failed.append({"input": str(path), "error": str(e)})
    summary = {
        "model": str(pkg.root),
        "do": list(do),
        "particles": particles,
        "seed": seed,
        "resolution": "input" if full_resolution and pkg.scm.mechanism == "spatial" else "model, resampled",
        "given_parents": given,
        "allow_outside_support": allow_outside_support,
        "processed": len(results),
        "warnings": [f"{r['input']}: {w}" for r in results for w in r["warnings"]],
        "results": results,
        "failed": failed,
    }
    write_json(summary, out_dir / SUMMARY)
    return summary


def _counterfactual_file(
    pkg: ModelPackage,
    pipeline: Pipeline,
    path: Path,
    interventions: Sequence[Intervention],
    given: Mapping[str, float],
    particles: int,
    seed: int,
    out_dir: Path,
    description: str,
    full_resolution: bool = True,
    allow_outside_support: bool = False,
) -> dict[str, Any]:
    """One input: measure, counterfactual at model size, change mapped back (or made at the input's grid), outputs written together."""
    loaded = pipeline({"image": str(path)}, end=1)  # the first transform loads at full resolution
    original = loaded["image"]
    fmt = original.meta["format"]
    if fmt == "dicom" and pkg.modality != "cxr":
        raise InputError(f"{path}: DICOM inputs are read as radiographs; this {pkg.modality} model needs NIfTI images")
    check_real_image(pkg, path, fmt)
    model_in = pipeline(loaded, start=1)
    x = model_in["image"].as_tensor()[None].float()
    spacing, spacing_source = model_in["spacing"], original.meta["spacing_source"]
    if spacing_source == "assumed":
        spacing, spacing_source = torch.tensor(pkg.default_spacing), "package default (training images)"
        logger.warning("%s: using the package's pixel spacing %s mm at model size", path, pkg.default_spacing)
    measured = pkg.measure_parents(x, spacing[None])
    pa = {v: torch.tensor([given[v]], device=pkg.device) if v in given else measured[v] for v in pkg.variables}
    support = pkg.scm.support
    if allow_outside_support:  # targets resolved without the support's bounds; the result names what left it
        do: Any = resolve(list(interventions), pa, {v: (-math.inf, math.inf) for v in support}, pkg.scm.graph.kinds)
    else:
        do = interventions
    torch.manual_seed(seed)
    with torch.no_grad():
        cf = pkg.scm.counterfactual(x, pa, do, particles=particles, use_mean=particles == 1)

    a_min, a_max = INTENSITY_WINDOWS[pkg.modality]
    scale = (a_max - a_min) / 2  # model units -> input units
    shape = tuple(original.shape[-2:])
    base = original[0].as_tensor().float().numpy()
    change = _change_on_input_grid(pkg, x, cf, torch.from_numpy(base) / scale, model_in["image"].affine, original.affine, shape,
                                   full_resolution) * scale
    result = base + change
    if fmt in ("dicom", "png"):
        result = np.clip(result, 0.0, 1.0)
    variance = None
    if cf.variance is not None:
        variance = to_input_grid(cf.variance[0, 0] * scale**2, model_in["image"].affine, original.affine, shape).numpy()

    stem = input_stem(path)
    suffix = _output_suffix(path, fmt)
    names = {"counterfactual": f"{stem}_counterfactual{suffix}", "figure": f"{stem}_figure.png"}
    if variance is not None:
        names["variance"] = f"{stem}_variance.nii.gz"
    with staged_dir(out_dir) as stage:
        _write_like_input(path, fmt, result, stage / names["counterfactual"], description)
        step = max(1, -(-max(base.shape) // PREVIEW_PIXELS))  # a figure is for the eye: no more pixels than a screen shows
        row = {"label": stem, "original": base[::step, ::step], "counterfactuals": {"counterfactual": result[::step, ::step]}}
        if variance is not None:
            row["uncertainty"] = np.sqrt(np.clip(variance, 0, None))[::step, ::step]
            write_nifti(variance.astype(np.float32), stage / names["variance"], tuple(spacing_of(original).tolist()))
        counterfactual_grid([row], stage / names["figure"], title=description)

    defaults = pkg.defaults
    sources = {v: "given" if v in given else "assumed" if v in defaults else "measured" for v in pkg.variables}
    outside = {name: [v for v in pkg.variables if not support[v][0] <= float(values[v][0]) <= support[v][1]]
               for name, values in (("factual", pa), ("counterfactual", cf.parents))}
    warnings = [f"{name} {v} = {float(values[v][0]):.6g} is outside the training support [{support[v][0]:.6g}, {support[v][1]:.6g}]"
                for name, values in (("factual", pa), ("counterfactual", cf.parents)) for v in outside[name]]
    return {
        "input": str(path),
        "outputs": {k: str(out_dir / n) for k, n in names.items()},
        "shape": list(shape),
        "model_spacing_mm": [round(float(s), 6) for s in spacing],
        "spacing_source": spacing_source,
        "factual_parents": {v: {"value": round(float(pa[v][0]), 4), "source": sources[v]} for v in pkg.variables},
        "counterfactual_parents": {v: round(float(cf.parents[v][0]), 4) for v in pkg.variables},
        "outside_support": outside["factual"],
        "counterfactual_outside_support": outside["counterfactual"],
        "warnings": warnings,
    }


def _change_on_input_grid(pkg: ModelPackage, x: torch.Tensor, cf: Counterfactual, image: torch.Tensor, model_affine: torch.Tensor,
                          input_affine: torch.Tensor, shape: Sequence[int], full_resolution: bool) -> np.ndarray:
    """``x* - x`` on the input's grid, in model intensity units (``image``: the input, in those units up to an offset).

    A spatial model with ``full_resolution`` moves the boundaries at the input's own grid
    (:meth:`~segcft.models.spatial.SpatialMechanism.full_resolution_change`); otherwise the
    model-size change is resampled (bilinear), which is all a decoder's ``x*`` allows.
    """
    def resample(values: torch.Tensor) -> torch.Tensor:
        return to_input_grid(values, model_affine, input_affine, shape)

    if full_resolution and cf.mechanism is not None:
        ratio = 1.0 / math.sqrt(abs(float(torch.linalg.det(model_to_input(model_affine, input_affine)[:2, :2]))))
        return pkg.scm.spatial.full_resolution_change(cf.mechanism, resample, ratio, image).numpy()
    return resample((cf.image - x)[0, 0]).numpy()


def _output_suffix(path: Path, fmt: str) -> str:
    name = path.name.lower()
    if fmt == "dicom":
        return path.suffix if name.endswith(DICOM_SUFFIXES) else ".dcm"
    if fmt == "png":
        return ".png"
    return ".nii.gz" if name.endswith(".nii.gz") else ".nii"


def _write_like_input(source: Path, fmt: str, values: np.ndarray, dest: Path, description: str) -> None:
    """The counterfactual in the input's format: derived DICOM, PNG of the input's bit depth, or NIfTI on its grid."""
    if fmt == "dicom":
        write_dicom_derived(pydicom.dcmread(source, stop_before_pixels=True), values, dest, description)
    elif fmt == "png":
        with Image.open(source) as im:
            stored = np.asarray(im)
        sixteen = stored.dtype == np.uint16 or stored.max() > 255  # as read_png decides
        top, dtype = (65535, np.uint16) if sixteen else (255, np.uint8)
        write_png(np.rint(values * top).astype(dtype), dest)
    else:
        write_nifti_derived(source, values, dest)
