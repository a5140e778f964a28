"""CCTA cross-sections: reformat a 3-D volume into 2-D planes perpendicular to a centreline.

Coordinates are physical millimetres in the patient frame SimpleITK uses (LPS). Each
cross-section is resampled on a ``size x size`` grid centred on a centreline point, with
in-plane axes from a rotation-minimising frame so that consecutive sections do not twist.
Sections come back in the project's ``(H, W)`` convention with spacing ``(row_mm, col_mm)``.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike
from monai.utils import optional_import

from segcft.data.io import NIFTI_SUFFIXES, write_nifti
from segcft.utils import InputError

# SimpleITK is needed only for CCTA volumes; loaded on first use, so the chest path runs where
# it is not installed (the offline device check carries no 50 MB wheel it never uses).
sitk, _ = optional_import("SimpleITK")

logger = logging.getLogger(__name__)

#: Value of image pixels outside the volume (air).
OUTSIDE_HU = -1024.0


def _check_volume(image: sitk.Image, name: str, hint: str = "") -> None:
    if image.GetDimension() != 3 or min(image.GetSize()) < 2:
        raise InputError(f"{name}: expected a 3-D volume, got size {image.GetSize()}{hint}")
    components = image.GetNumberOfComponentsPerPixel()
    if components != 1:
        raise InputError(f"{name}: expected a scalar volume, got {components} components per voxel")


def _read_dicom_series(folder: Path) -> sitk.Image:
    """The DICOM series in ``folder`` with the most files."""
    series = {
        sid: sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), sid)
        for sid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    }
    if not series:
        raise InputError(f"{folder}: no DICOM series found in this folder")
    sid = max(series, key=lambda k: len(series[k]))
    if len(series) > 1:
        logger.info(
            "%s: %d DICOM series, reading %s (%d files); others: %s",
            folder,
            len(series),
            sid,
            len(series[sid]),
            {k: len(v) for k, v in series.items() if k != sid},
        )
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(series[sid])
    return reader.Execute()


def read_volume(path: str | os.PathLike) -> sitk.Image:
    """A CCTA volume from a NIfTI file (or another format SimpleITK reads) or a DICOM series folder.

    DICOM values come back rescaled (Hounsfield units). Errors name the path.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: volume not found")
    other_file = path.is_file() and not str(path).lower().endswith(NIFTI_SUFFIXES)
    try:
        if path.is_dir():
            image = _read_dicom_series(path)
        else:
            if other_file:
                logger.info("%s: not a .nii/.nii.gz name, letting SimpleITK guess the format", path)
            image = sitk.ReadImage(str(path))
    except RuntimeError as e:  # SimpleITK reports unreadable files as RuntimeError
        lines = str(e).strip().splitlines()
        raise InputError(f"{path}: not a readable volume ({lines[-1] if lines else 'unknown error'})") from e
    _check_volume(image, str(path), " (for a DICOM series pass its folder)" if other_file else "")
    return image


# ----------------------------------------------------------------------------- centrelines


def _points_array(points: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise InputError(f"{name}: expected points of shape (N, 3), got {arr.shape}")
    if len(arr) < 2:
        raise InputError(f"{name}: need at least 2 points, got {len(arr)}")
    bad = np.flatnonzero(~np.isfinite(arr).all(1))
    if bad.size:
        raise InputError(f"{name}: point {bad[0]} is not finite: {arr[bad[0]].tolist()}")
    return arr


def _read_centreline_csv(path: Path) -> np.ndarray:
    with open(path, newline="", encoding="utf-8") as f:
        rows = [
            (n, row)
            for n, row in enumerate(csv.reader(f), start=1)
            if row and not row[0].lstrip().startswith("#")
        ]
    if not rows:
        raise InputError(f"{path}: empty centreline file")
    header_line, header = rows[0]
    names = [h.strip().lower() for h in header]
    if not {"x", "y", "z"} <= set(names):
        raise InputError(f"{path}:{header_line}: expected a header with columns x,y,z, got {header}")
    cols = [names.index(c) for c in "xyz"]
    points = []
    for n, row in rows[1:]:
        try:
            points.append([float(row[c]) for c in cols])
        except (IndexError, ValueError):
            raise InputError(f"{path}:{n}: expected numbers in columns x,y,z, got {row}") from None
        if not np.isfinite(points[-1]).all():
            raise InputError(f"{path}:{n}: non-finite coordinate {row}")
    return np.array(points, dtype=np.float64).reshape(-1, 3)


def _read_centreline_json(path: Path) -> np.ndarray:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from e
    if isinstance(data, dict) and "points" in data:
        data = data["points"]
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a list of points (or an object with a 'points' list)")
    points = []
    for i, item in enumerate(data):
        try:
            xyz = [item[c] for c in "xyz"] if isinstance(item, dict) else list(item)
            if len(xyz) != 3:
                raise ValueError
            points.append([float(v) for v in xyz])
        except (KeyError, TypeError, ValueError):
            msg = f"{path}: point {i} must be [x, y, z] or {{'x', 'y', 'z'}}, got {item!r}"
            raise InputError(msg) from None
    return np.array(points, dtype=np.float64).reshape(-1, 3)


def read_centreline(path: str | os.PathLike) -> np.ndarray:
    """Centreline points ``(N, 3)`` in mm (LPS) from CSV (header ``x,y,z``), JSON or ``.npy``.

    JSON holds a list of ``[x, y, z]`` or ``{"x", "y", "z"}`` items, optionally as
    ``{"points": [...]}``. CSV lines starting with ``#`` are comments; extra columns are
    ignored. Errors name the file and the line (CSV) or point (JSON).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: centreline file not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            points = _read_centreline_json(path)
        elif suffix == ".npy":
            try:
                points = np.load(path, allow_pickle=False)
            except ValueError as e:
                raise InputError(f"{path}: not a readable .npy array ({e})") from e
        else:
            points = _read_centreline_csv(path)
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read centreline ({e})") from e
    return _points_array(points, str(path))


def resample_centreline(points: ArrayLike, step_mm: float) -> np.ndarray:
    """Points every ``step_mm`` of arc length along the polyline, from its first point.

    The last point lies within ``step_mm`` of the polyline's end, so spacing is exact.
    """
    if not step_mm > 0:
        raise InputError(f"centreline step must be positive, got {step_mm}")
    pts = _points_array(points, "centreline")
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    keep = np.concatenate([[True], seg > 1e-9])  # drop repeated points
    pts, seg = pts[keep], seg[seg > 1e-9]
    if seg.size == 0:
        raise InputError("centreline has zero length")
    s = np.concatenate([[0.0], np.cumsum(seg)])
    s_new = np.arange(0.0, s[-1] + 1e-9, step_mm)
    return np.stack([np.interp(s_new, s, pts[:, k]) for k in range(3)], axis=1)


def centreline_frames(points: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit ``(tangent, normal, binormal)``, each ``(N, 3)``, along the centreline.

    Tangents are central differences. Normals follow the rotation-minimising frame of the
    double reflection method (Wang et al., ACM TOG 2008), so they do not twist around the
    curve; the first normal is the coordinate axis least aligned with the first tangent,
    made perpendicular. ``binormal = tangent x normal``: each frame is right-handed.
    """
    pts = _points_array(points, "centreline")
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    if (seg <= 1e-9).any():
        i = int(np.argmax(seg <= 1e-9))
        raise InputError(f"centreline points {i} and {i + 1} coincide")
    t = np.gradient(pts, axis=0)
    norm = np.linalg.norm(t, axis=1)
    if (norm <= 1e-12).any():
        raise InputError(f"centreline reverses on itself at point {int(np.argmax(norm <= 1e-12))}")
    t /= norm[:, None]
    n = np.empty_like(t)
    axis = np.eye(3)[np.argmin(np.abs(t[0]))]
    n[0] = axis - axis.dot(t[0]) * t[0]
    n[0] /= np.linalg.norm(n[0])
    for i in range(len(pts) - 1):
        v1 = pts[i + 1] - pts[i]
        c1 = v1.dot(v1)
        r_l = n[i] - (2 / c1) * v1.dot(n[i]) * v1
        t_l = t[i] - (2 / c1) * v1.dot(t[i]) * v1
        v2 = t[i + 1] - t_l
        c2 = v2.dot(v2)
        r = r_l - (2 / c2) * v2.dot(r_l) * v2 if c2 > 1e-24 else r_l
        r -= r.dot(t[i + 1]) * t[i + 1]  # remove round-off drift
        n[i + 1] = r / np.linalg.norm(r)
    return t, n, np.cross(t, n)


# ----------------------------------------------------------------------------- cross-sections


def _outside_points(volume: sitk.Image, points: np.ndarray) -> np.ndarray:
    """Indices of points outside the volume's extent (voxel centres +/- half a voxel)."""
    direction = np.array(volume.GetDirection()).reshape(3, 3)
    to_index = np.linalg.inv(direction * np.array(volume.GetSpacing()))
    index = (points - np.array(volume.GetOrigin())) @ to_index.T
    size = np.array(volume.GetSize())
    return np.flatnonzero(((index < -0.5) | (index > size - 0.5)).any(1))


def extract_cross_sections(
    volume: sitk.Image,
    points: ArrayLike,
    size: int,
    spacing_mm: float,
    label: sitk.Image | None = None,
    step_mm: float | None = None,
) -> dict:
    """Resample ``size x size`` planes perpendicular to the centreline, one per point.

    ``points`` are ``(N, 3)`` physical coordinates (mm, LPS); with ``step_mm`` they are first
    resampled every ``step_mm`` of arc length. Frames come from :func:`centreline_frames`
    of the points used. In each section the **columns** run along the normal and the
    **rows** along the binormal (row 0 at the top), so the tangent points into the screen:
    the view looks downstream. The centreline point is at the grid centre, pixel
    ``((size - 1) / 2, (size - 1) / 2)`` (between pixels when ``size`` is even).

    The image is linearly interpolated (float32, ``-1024`` HU outside the volume), the label
    nearest-neighbour (uint8, 0 outside). Returns ``{"image": (N, size, size), "label":
    (N, size, size) or None, "points": (N, 3), "tangents": (N, 3), "spacing": (row_mm, col_mm)}``.
    """
    if int(size) != size or size < 8:
        raise InputError(f"cross-section size must be an integer >= 8, got {size}")
    if not spacing_mm > 0:
        raise InputError(f"cross-section spacing must be positive, got {spacing_mm}")
    _check_volume(volume, "volume")
    pts = _points_array(points, "centreline")
    outside = _outside_points(volume, pts)
    if outside.size:
        i = int(outside[0])
        raise InputError(
            f"centreline point {i} {pts[i].round(3).tolist()} is outside the volume"
            f" ({outside.size} of {len(pts)} points are outside)"
        )
    if label is not None:
        _check_volume(label, "label")
        if label.GetPixelID() != sitk.sitkUInt8:
            stats = sitk.MinimumMaximumImageFilter()
            stats.Execute(label)
            if stats.GetMinimum() < 0 or stats.GetMaximum() > 255:
                lo, hi = stats.GetMinimum(), stats.GetMaximum()
                raise InputError(f"label: values must lie in 0..255, got {lo:g}..{hi:g}")
            label = sitk.Cast(label, sitk.sitkUInt8)
    if step_mm is not None:
        pts = resample_centreline(pts, step_mm)
    tangent, normal, binormal = centreline_frames(pts)

    size = int(size)
    centre = (size - 1) / 2 * spacing_mm

    def resampler(interpolator: int, default: float, pixel_type: int) -> sitk.ResampleImageFilter:
        f = sitk.ResampleImageFilter()
        f.SetSize((size, size, 1))
        f.SetOutputSpacing((spacing_mm,) * 3)
        f.SetInterpolator(interpolator)
        f.SetDefaultPixelValue(default)
        f.SetOutputPixelType(pixel_type)
        return f

    jobs = [(volume, resampler(sitk.sitkLinear, OUTSIDE_HU, sitk.sitkFloat32), np.float32)]
    if label is not None:
        jobs.append((label, resampler(sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8), np.uint8))
    stacks = [np.empty((len(pts), size, size), dtype=dtype) for *_, dtype in jobs]
    for i in range(len(pts)):
        # x = cols, y = rows, z; a cyclic shift of the right-handed (t, n, b), so det = +1
        axes = np.column_stack([normal[i], binormal[i], tangent[i]])
        origin = pts[i] - centre * (normal[i] + binormal[i])
        for (image, f, _), stack in zip(jobs, stacks):
            f.SetOutputDirection(axes.ravel().tolist())
            f.SetOutputOrigin(origin.tolist())
            stack[i] = sitk.GetArrayFromImage(f.Execute(image))[0]
    logger.debug("extracted %d cross-sections of %dx%d at %.3g mm", len(pts), size, size, spacing_mm)
    return {
        "image": stacks[0],
        "label": stacks[1] if label is not None else None,
        "points": pts,
        "tangents": tangent,
        "spacing": (float(spacing_mm), float(spacing_mm)),
    }


def write_cross_sections(result: dict, out_dir: str | os.PathLike, prefix: str) -> list[Path]:
    """Write each section as 2-D NIfTI: ``{prefix}_{i:04d}_image.nii.gz`` (int16 HU, rounded)
    and, with a label, ``{prefix}_{i:04d}_label.nii.gz`` (uint8). Returns the paths in order."""
    if not prefix or Path(prefix).name != prefix:
        raise InputError(f"cross-section prefix must be a plain file name prefix, got {prefix!r}")
    out, spacing = Path(out_dir), result["spacing"]
    image = np.clip(np.rint(result["image"]), -32768, 32767).astype(np.int16)
    label = result.get("label")
    paths = []
    for i in range(len(image)):
        paths.append(write_nifti(image[i], out / f"{prefix}_{i:04d}_image.nii.gz", spacing))
        if label is not None:
            lab = label[i].astype(np.uint8)
            paths.append(write_nifti(lab, out / f"{prefix}_{i:04d}_label.nii.gz", spacing))
    return paths
