"""A 3-D CCTA phantom: a curved coronary vessel with analytically known cross-sections.

The centreline is a circular arc in an oblique plane, so the vessel curves through all three
axes. A plane perpendicular to the arc contains the arc's centre, which makes each voxel's
cross-sectional coordinates exact: project the voxel onto the arc's plane, its angle there
gives the arc length ``s`` and its offset from the arc gives ``(r, phi)`` in the section,
with ``phi`` measured from the outward radial direction (away from the arc's centre) towards
the arc plane's normal. The label map is that hard geometry; the image is its HU values
with a slight blur and a little noise. ``truth`` holds the areas a correct cross-section
extraction has to reproduce.
"""

from __future__ import annotations

import datetime
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pydicom
from monai.utils import optional_import

from segcft.data.structures import CCTA_STRUCTURES
from segcft.utils import atomic_path, write_json

# SimpleITK is needed only for CCTA volumes; loaded on first use, so the chest path runs where
# it is not installed (the offline device check carries no 50 MB wheel it never uses).
sitk, _ = optional_import("SimpleITK")

logger = logging.getLogger(__name__)

#: Hounsfield units of each structure and of the surrounding epicardial fat.
VESSEL_HU: dict[str, float] = {
    "background": -100.0,
    "lumen": 400.0,
    "vessel_wall": 50.0,
    "calcified_plaque": 800.0,
    "noncalcified_plaque": 40.0,
}

PLAQUE_STRUCTURES = ("calcified_plaque", "noncalcified_plaque")

# Arc geometry: an oblique plane (both basis vectors off every axis) around a non-zero centre.
_E1 = np.array([1.0, 0.4, 0.3]) / np.linalg.norm([1.0, 0.4, 0.3])
_E2 = np.array([-0.2, 1.0, 0.6]) - np.dot([-0.2, 1.0, 0.6], _E1) * _E1
_E2 /= np.linalg.norm(_E2)
_N = np.cross(_E1, _E2)
_ARC_CENTRE = np.array([-20.0, 35.0, 140.0])


@dataclass(frozen=True)
class Plaque:
    """An annular-sector plaque: ``r`` in ``[r_lumen, r_lumen + thickness]``, ``phi`` in the sector."""

    structure: str
    centre_deg: float
    width_deg: float
    thickness_mm: float


DEFAULT_PLAQUES: tuple[Plaque, ...] = (
    Plaque("calcified_plaque", centre_deg=60.0, width_deg=120.0, thickness_mm=0.8),
    Plaque("noncalcified_plaque", centre_deg=240.0, width_deg=140.0, thickness_mm=0.8),
)


def _check_plaques(plaques: Sequence[Plaque]) -> None:
    for p in plaques:
        if p.structure not in PLAQUE_STRUCTURES:
            raise ValueError(f"plaque structure must be one of {PLAQUE_STRUCTURES}, got {p.structure!r}")
        if not 0 < p.width_deg < 360 or p.thickness_mm <= 0:
            raise ValueError(f"{p}: need 0 < width_deg < 360 and thickness_mm > 0")
    for i, a in enumerate(plaques):
        for b in plaques[i + 1 :]:
            gap = abs((a.centre_deg - b.centre_deg + 180.0) % 360.0 - 180.0)
            if gap < (a.width_deg + b.width_deg) / 2:
                raise ValueError(f"plaques {a} and {b} overlap")


def _areas(r_l: float, w: float, plaques: Sequence[Plaque]) -> dict[str, dict[str, float]]:
    """Analytic cross-sectional areas (mm2) with and without the plaques."""

    def ring(dphi: float, r_in: float, r_out: float) -> float:
        return dphi / 2 * (r_out**2 - r_in**2)

    lumen = math.pi * r_l**2
    plaque_seg = {"lumen": lumen, "vessel_wall": 0.0, "calcified_plaque": 0.0, "noncalcified_plaque": 0.0}
    free = 2 * math.pi
    for p in plaques:
        dphi, r_in = math.radians(p.width_deg), r_l + p.thickness_mm
        plaque_seg[p.structure] += ring(dphi, r_l, r_in)
        plaque_seg["vessel_wall"] += ring(dphi, r_in, r_in + w)
        free -= dphi
    plaque_seg["vessel_wall"] += ring(free, r_l, r_l + w)
    no_plaque = {"lumen": lumen, "vessel_wall": ring(2 * math.pi, r_l, r_l + w)}
    no_plaque.update({k: 0.0 for k in PLAQUE_STRUCTURES})
    return {"plaque": plaque_seg, "no_plaque": no_plaque}


def make_vessel_volume(
    spacing_mm: float = 0.2,
    lumen_radius_mm: float = 1.6,
    wall_thickness_mm: float = 0.5,
    plaque: Sequence[Plaque] = DEFAULT_PLAQUES,
    plaque_segment: tuple[float, float] = (1 / 3, 2 / 3),
    arc_radius_mm: float = 25.0,
    arc_angle_deg: float = 90.0,
    centreline_step_mm: float = 0.5,
    noise_hu: float = 10.0,
    blur_mm: float = 0.2,
    seed: int = 0,
) -> tuple[sitk.Image, sitk.Image, np.ndarray, dict]:
    """A curved vessel: ``(image int16 HU, label uint8, centreline (N, 3) mm LPS, truth)``.

    The volume is the bounding box of the vessel (identity direction, non-zero origin); the
    tube extends a little beyond both ends of the returned centreline so that every
    centreline point has a complete cross-section. Plaques are present where the arc length
    lies in ``plaque_segment`` (fractions of the centreline length). ``truth`` is JSON-ready:
    geometry, the plaque segment in mm of arc length and the analytic areas in mm2 of each
    structure on the plaque and the plaque-free segments.
    """
    _check_plaques(plaque)
    if min(spacing_mm, lumen_radius_mm, wall_thickness_mm, arc_radius_mm, centreline_step_mm) <= 0:
        raise ValueError("spacing, radii, thickness and centreline step must be positive")
    if not 0 < arc_angle_deg < 360 or not 0 <= plaque_segment[0] < plaque_segment[1] <= 1:
        raise ValueError("need 0 < arc_angle_deg < 360 and 0 <= plaque_segment[0] < plaque_segment[1] <= 1")
    R, angle = arc_radius_mm, math.radians(arc_angle_deg)
    r_out = lumen_radius_mm + max((p.thickness_mm for p in plaque), default=0.0) + wall_thickness_mm
    if r_out >= R / 2:
        raise ValueError("the vessel is too thick for the arc radius")
    length = R * angle
    seg_mm = (plaque_segment[0] * length, plaque_segment[1] * length)
    extend = (r_out + 1.0) / R  # radians of tube beyond each end of the centreline

    def arc(theta: np.ndarray) -> np.ndarray:
        return _ARC_CENTRE + R * (np.cos(theta)[:, None] * _E1 + np.sin(theta)[:, None] * _E2)

    margin = r_out + 2 * spacing_mm
    dense = arc(np.linspace(-extend, angle + extend, 2000))
    origin = np.floor((dense.min(0) - margin) / spacing_mm) * spacing_mm
    size = np.ceil((dense.max(0) + margin - origin) / spacing_mm).astype(int) + 1
    logger.debug("vessel volume %s voxels at %.3g mm", size.tolist(), spacing_mm)

    labels = np.zeros(size[::-1], dtype=np.uint8)  # (z, y, x)
    xs = origin[0] + spacing_mm * np.arange(size[0])
    ys = origin[1] + spacing_mm * np.arange(size[1])
    chunk = max(1, 2_000_000 // int(size[0] * size[1]))
    for k0 in range(0, size[2], chunk):
        zs = origin[2] + spacing_mm * np.arange(k0, min(k0 + chunk, size[2]))
        d = np.stack(np.meshgrid(xs, ys, zs, indexing="ij"), -1) - _ARC_CENTRE  # (x, y, z, 3)
        a, b, v = d @ _E1, d @ _E2, d @ _N
        theta = np.arctan2(b, a)
        u = np.hypot(a, b) - R
        r = np.hypot(u, v)
        phi = np.degrees(np.arctan2(v, u))
        s = R * theta
        inside = (theta >= -extend) & (theta <= angle + extend)
        r_in = np.full(r.shape, lumen_radius_mm)
        lab = np.zeros(r.shape, dtype=np.uint8)
        on_segment = inside & (s >= seg_mm[0]) & (s <= seg_mm[1])
        for p in plaque:
            in_sector = on_segment & (np.abs((phi - p.centre_deg + 180.0) % 360.0 - 180.0) <= p.width_deg / 2)
            r_in[in_sector] = lumen_radius_mm + p.thickness_mm
            lab[in_sector & (r < r_in)] = CCTA_STRUCTURES[p.structure]
        lab[inside & (r >= r_in) & (r < r_in + wall_thickness_mm)] = CCTA_STRUCTURES["vessel_wall"]
        lab[inside & (r < lumen_radius_mm)] = CCTA_STRUCTURES["lumen"]
        labels[k0 : k0 + len(zs)] = lab.transpose(2, 1, 0)

    hu_lut = np.full(256, VESSEL_HU["background"], dtype=np.float32)
    for name, idx in CCTA_STRUCTURES.items():
        hu_lut[idx] = VESSEL_HU[name]
    label_img = sitk.GetImageFromArray(labels)
    label_img.SetOrigin(origin.tolist())
    label_img.SetSpacing([spacing_mm] * 3)
    hu = sitk.GetImageFromArray(hu_lut[labels])
    hu.CopyInformation(label_img)
    if blur_mm > 0:
        hu = sitk.SmoothingRecursiveGaussian(hu, blur_mm)
    arr = sitk.GetArrayFromImage(hu)
    arr += np.random.default_rng(seed).normal(0.0, noise_hu, arr.shape).astype(np.float32)
    image = sitk.GetImageFromArray(np.clip(np.rint(arr), -32768, 32767).astype(np.int16))
    image.CopyInformation(label_img)

    n_points = int(math.floor(length / centreline_step_mm + 1e-9)) + 1
    centreline = arc(np.arange(n_points) * centreline_step_mm / R)
    truth = {
        "arc_radius_mm": R,
        "arc_length_mm": length,
        "lumen_radius_mm": lumen_radius_mm,
        "wall_thickness_mm": wall_thickness_mm,
        "plaques": [asdict(p) for p in plaque],
        "plaque_segment_mm": list(seg_mm),
        "centreline_step_mm": centreline_step_mm,
        "areas_mm2": _areas(lumen_radius_mm, wall_thickness_mm, plaque),
        "hu": dict(VESSEL_HU),
    }
    return image, label_img, centreline, truth


def _write_dicom_series(image: sitk.Image, folder: Path) -> None:
    """Write a 3-D int16 HU image as a CT DICOM series, one file per slice, replacing ``folder``.

    The slices go to a temporary folder first, which then replaces ``folder`` so that readers
    never see a half-written or mixed series.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        now = datetime.datetime.now()
        direction = image.GetDirection()
        series_tags = {
            "0008|0060": "CT",
            "0008|0008": "DERIVED\\SECONDARY",
            "0008|0020": now.strftime("%Y%m%d"),
            "0008|0030": now.strftime("%H%M%S"),
            "0008|103e": "segcft vessel phantom",
            "0010|0010": "Phantom^Vessel",
            "0010|0020": "PHANTOM",
            "0020|000d": pydicom.uid.generate_uid(),
            "0020|000e": pydicom.uid.generate_uid(),
            "0020|0052": pydicom.uid.generate_uid(),
            "0020|0011": "1",
            "0020|0037": "\\".join(f"{direction[i]:.6f}" for i in (0, 3, 6, 1, 4, 7)),
            "0018|0050": f"{image.GetSpacing()[2]:.6f}",
        }
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        for k in range(image.GetSize()[2]):
            sl = image[:, :, k]
            for tag, value in series_tags.items():
                sl.SetMetaData(tag, value)
            sl.SetMetaData("0008|0018", pydicom.uid.generate_uid())
            sl.SetMetaData("0020|0013", str(k + 1))
            position = image.TransformIndexToPhysicalPoint((0, 0, k))
            sl.SetMetaData("0020|0032", "\\".join(f"{x:.6f}" for x in position))
            writer.SetFileName(str(tmp / f"slice_{k:04d}.dcm"))
            writer.Execute(sl)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_vessel_volume(
    out_dir: str | os.PathLike,
    *,
    dicom: bool = False,
    spacing_mm: float = 0.2,
    lumen_radius_mm: float = 1.6,
    wall_thickness_mm: float = 0.5,
    plaque: Sequence[Plaque] = DEFAULT_PLAQUES,
    plaque_segment: tuple[float, float] = (1 / 3, 2 / 3),
    arc_radius_mm: float = 25.0,
    arc_angle_deg: float = 90.0,
    centreline_step_mm: float = 0.5,
    noise_hu: float = 10.0,
    blur_mm: float = 0.2,
    seed: int = 0,
) -> dict[str, Path]:
    """Make a vessel phantom and write it to ``out_dir``; returns the written paths by role.

    ``image.nii.gz`` (int16 HU), ``label.nii.gz`` (uint8), ``centreline.csv`` (x,y,z in mm,
    LPS), ``truth.json`` and, with ``dicom=True``, the image as a CT series in ``dicom/``.
    """
    image, label, centreline, truth = make_vessel_volume(
        spacing_mm=spacing_mm,
        lumen_radius_mm=lumen_radius_mm,
        wall_thickness_mm=wall_thickness_mm,
        plaque=plaque,
        plaque_segment=plaque_segment,
        arc_radius_mm=arc_radius_mm,
        arc_angle_deg=arc_angle_deg,
        centreline_step_mm=centreline_step_mm,
        noise_hu=noise_hu,
        blur_mm=blur_mm,
        seed=seed,
    )
    out = Path(out_dir)
    paths = {
        "image": out / "image.nii.gz",
        "label": out / "label.nii.gz",
        "centreline": out / "centreline.csv",
        "truth": out / "truth.json",
    }
    for key, img in (("image", image), ("label", label)):
        with atomic_path(paths[key]) as tmp:
            sitk.WriteImage(img, str(tmp), useCompression=True)
    with atomic_path(paths["centreline"]) as tmp:
        lines = ["x,y,z"] + [",".join(f"{c:.6f}" for c in p) for p in centreline]
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    write_json(truth, paths["truth"])
    if dicom:
        paths["dicom"] = out / "dicom"
        _write_dicom_series(image, paths["dicom"])
    return paths
