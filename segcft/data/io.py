"""Reading and writing 2-D medical images: DICOM (CR/DX), PNG and NIfTI.

Array convention everywhere in segcft: ``(H, W)`` as displayed, row 0 at the top, column 0
at the image's left (the patient's right on a PA chest radiograph). Spacing is
``(row_mm, col_mm)``, the order of DICOM PixelSpacing. NIfTI files hold ``(x=col, y=row)``
with ``pixdim = (col_mm, row_mm)`` so that viewers display them the same way.

Radiographs are returned as display values in ``[0, 1]`` with 1 bright (MONOCHROME2):
modality LUT (rescale slope/intercept), then the VOI LUT or window, then MONOCHROME1 is
inverted. NIfTI data are returned as stored (e.g. Hounsfield units).
"""

from __future__ import annotations

import copy
import datetime
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import FileMetaDataset

from segcft.utils import InputError, atomic_path

try:  # pydicom >= 3
    from pydicom.pixels import apply_modality_lut, apply_voi_lut
except ImportError:  # pydicom 2.x, kept for the MONAI Label environment
    from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi_lut

logger = logging.getLogger(__name__)

DICOM_SUFFIXES = (".dcm", ".dicom")
PNG_SUFFIXES = (".png",)
NIFTI_SUFFIXES = (".nii", ".nii.gz")
IMAGE_SUFFIXES = DICOM_SUFFIXES + PNG_SUFFIXES + NIFTI_SUFFIXES


@dataclass
class ImageMeta:
    """What the reader learned about an image besides its pixels."""

    filename: str
    format: str
    spacing: tuple[float, float] | None
    spacing_source: str
    photometric: str = "MONOCHROME2"
    modality: str = ""
    original_shape: tuple[int, int] = (0, 0)


def image_format(path: str | os.PathLike) -> str:
    """``"dicom"``, ``"png"`` or ``"nifti"`` from the file name (or the DICOM preamble)."""
    name = str(path).lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(PNG_SUFFIXES):
        return "png"
    if name.endswith(DICOM_SUFFIXES):
        return "dicom"
    try:
        with open(path, "rb") as f:
            f.seek(128)
            if f.read(4) == b"DICM":
                return "dicom"
    except OSError as e:
        raise InputError(f"{path}: cannot open ({e.strerror})") from e
    raise InputError(f"{path}: unknown image format (expected DICOM, PNG or NIfTI)")


def _positive_pair(value) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        pair = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    if len(pair) != 2 or not all(np.isfinite(pair)) or min(pair) <= 0:
        return None
    return pair


def _window01(arr: np.ndarray, ds: pydicom.Dataset) -> np.ndarray:
    """Apply the VOI LUT or window of ``ds`` and map the result to ``[0, 1]``."""
    if "VOILUTSequence" in ds:
        out = apply_voi_lut(arr, ds).astype(np.float64)
        lut = np.asarray(ds.VOILUTSequence[0].LUTData, dtype=np.float64)
        lo, hi = float(lut.min()), float(lut.max())
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        centre = ds.WindowCenter[0] if ds["WindowCenter"].VM > 1 else ds.WindowCenter
        width = ds.WindowWidth[0] if ds["WindowWidth"].VM > 1 else ds.WindowWidth
        centre, width = float(centre), max(float(width), 1.0)
        # DICOM PS3.3 C.11.2.1.2.1, linear function, output in [0, 1]
        out = ((arr - (centre - 0.5)) / (width - 1) + 0.5).clip(0, 1)
        return out
    else:
        out = arr.astype(np.float64)
        lo, hi = float(np.percentile(out, 0.5)), float(np.percentile(out, 99.5))
    return ((out - lo) / max(hi - lo, 1e-12)).clip(0, 1)


def read_dicom(path: str | os.PathLike) -> tuple[np.ndarray, ImageMeta]:
    """A single-frame grayscale DICOM radiograph as display values in ``[0, 1]``."""
    try:
        ds = pydicom.dcmread(path)
        raw = ds.pixel_array
    except Exception as e:  # pydicom raises many types for corrupt or truncated files
        raise InputError(f"{path}: not a readable DICOM image ({type(e).__name__}: {e})") from e
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise InputError(f"{path}: PhotometricInterpretation {photometric} is not a grayscale radiograph")
    if raw.ndim != 2:
        raise InputError(f"{path}: expected one 2-D frame, got pixel data of shape {raw.shape}")
    arr = apply_modality_lut(raw, ds).astype(np.float64)
    img = _window01(arr, ds)
    if photometric == "MONOCHROME1":
        img = 1.0 - img
    spacing, source = None, "none"
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        pair = _positive_pair(ds.get(keyword))
        if pair is not None:
            spacing, source = pair, keyword
            break
        if keyword in ds:
            logger.warning("%s: ignoring invalid %s %s", path, keyword, list(ds.get(keyword)))
    meta = ImageMeta(
        filename=str(path),
        format="dicom",
        spacing=spacing,
        spacing_source=source,
        photometric=photometric,
        modality=str(ds.get("Modality", "")),
        original_shape=tuple(raw.shape),
    )
    return img.astype(np.float32), meta


def read_png(path: str | os.PathLike) -> tuple[np.ndarray, ImageMeta]:
    """An 8- or 16-bit grayscale PNG, scaled by its bit depth to ``[0, 1]``."""
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im)
    except Exception as e:
        raise InputError(f"{path}: not a readable PNG image ({type(e).__name__}: {e})") from e
    if arr.ndim == 3:  # RGB(A) screenshot of a grayscale image: take luminance
        arr = arr[..., :3].mean(-1)
    scale = 65535.0 if arr.dtype == np.uint16 or arr.max() > 255 else 255.0
    img = (arr.astype(np.float32) / scale).clip(0, 1)
    return img, ImageMeta(str(path), "png", None, "none", original_shape=tuple(arr.shape[:2]))


def read_nifti(path: str | os.PathLike) -> tuple[np.ndarray, ImageMeta]:
    """A 2-D NIfTI image (or a 3-D one with one slice) as stored, in ``(H, W)`` order."""
    try:
        nii = nib.load(str(path))
        data = np.asarray(nii.dataobj, dtype=np.float32)
    except Exception as e:
        raise InputError(f"{path}: not a readable NIfTI image ({type(e).__name__}: {e})") from e
    data = np.squeeze(data)
    if data.ndim != 2:
        raise InputError(f"{path}: expected a 2-D image, got shape {data.shape}")
    zooms = [float(f"{z:.6g}") for z in nii.header.get_zooms()]  # stored as float32
    spacing = _positive_pair((zooms[1], zooms[0]))
    meta = ImageMeta(
        str(path), "nifti", spacing, "NIfTI pixdim" if spacing else "none", original_shape=data.T.shape
    )
    return np.ascontiguousarray(data.T), meta


def read_image(path: str | os.PathLike) -> tuple[np.ndarray, ImageMeta]:
    """Read a DICOM, PNG or NIfTI image; errors name the file."""
    if not Path(path).is_file():
        raise InputError(f"{path}: file not found")
    fmt = image_format(path)
    return {"dicom": read_dicom, "png": read_png, "nifti": read_nifti}[fmt](path)


def read_label_map(path: str | os.PathLike) -> np.ndarray:
    """An integer label map from PNG or NIfTI, ``(H, W)`` ``uint8``."""
    if not Path(path).is_file():
        raise InputError(f"{path}: label map not found")
    fmt = image_format(path)
    if fmt == "png":
        try:
            with Image.open(path) as im:
                arr = np.asarray(im)
        except Exception as e:
            raise InputError(f"{path}: not a readable PNG label map ({type(e).__name__}: {e})") from e
    elif fmt == "nifti":
        arr = np.rint(read_nifti(path)[0])
    else:
        raise InputError(f"{path}: label maps must be PNG or NIfTI")
    if arr.ndim != 2 or arr.min() < 0 or arr.max() > 255:
        raise InputError(f"{path}: a label map must be 2-D with labels 0..255")
    return arr.astype(np.uint8)


# ----------------------------------------------------------------------------- writers


def write_png(arr: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a ``uint8`` or ``uint16`` array as a grayscale PNG, atomically."""
    if arr.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"PNG needs uint8 or uint16, got {arr.dtype}")
    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")
    return Path(path)


def write_nifti(arr: np.ndarray, path: str | os.PathLike, spacing: tuple[float, float]) -> Path:
    """Write an ``(H, W)`` array as a 2-D NIfTI image with ``pixdim = (col_mm, row_mm)``."""
    affine = np.diag([float(spacing[1]), float(spacing[0]), 1.0, 1.0])
    img = nib.Nifti1Image(np.ascontiguousarray(arr.T), affine)
    img.header.set_xyzt_units("mm")
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return Path(path)


def _new_dataset(sop_class: str) -> pydicom.Dataset:
    """An empty dataset of ``sop_class`` with its file meta and a new SOP Instance UID."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    return ds


def _save_dicom(ds: pydicom.Dataset, path: str | os.PathLike) -> Path:
    """Write ``ds`` as a DICOM file, atomically; pydicom 3 and 2.x spell the call differently."""
    with atomic_path(path) as tmp:
        try:
            ds.save_as(tmp, enforce_file_format=True)
        except TypeError:  # pydicom 2.x
            ds.save_as(tmp, write_like_original=False)
    return Path(path)


def write_dicom_radiograph(
    pixels: np.ndarray,
    path: str | os.PathLike,
    spacing: tuple[float, float],
    *,
    photometric: str = "MONOCHROME2",
    modality: str = "DX",
    bits_stored: int = 12,
    patient_id: str = "PHANTOM",
    patient_name: str = "Phantom^Chest",
    patient_sex: str = "O",
    patient_age_years: int | None = None,
    series_description: str = "segcft chest phantom",
    study_uid: str | None = None,
    instance_number: int = 1,
) -> Path:
    """Write an unsigned-integer ``(H, W)`` radiograph as a DX (or CR) DICOM file.

    ``pixels`` are MONOCHROME2 stored values (bright = high). With ``photometric =
    "MONOCHROME1"`` they are stored inverted, as many CR systems do; readers undo it.
    """
    if pixels.ndim != 2 or not np.issubdtype(pixels.dtype, np.integer):
        raise ValueError("pixels must be a 2-D integer array")
    top = 2**bits_stored - 1
    if pixels.min() < 0 or pixels.max() > top:
        raise ValueError(f"pixel values must lie in [0, {top}] for {bits_stored} bits stored")
    stored = (top - pixels) if photometric == "MONOCHROME1" else pixels
    sop_class = (
        pydicom.uid.DigitalXRayImageStorageForPresentation
        if modality == "DX"
        else pydicom.uid.ComputedRadiographyImageStorage
    )
    ds = _new_dataset(sop_class)
    now = datetime.datetime.now()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid or pydicom.uid.generate_uid()
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.Modality = modality
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PatientID, ds.PatientName, ds.PatientSex = patient_id, patient_name, patient_sex
    if patient_age_years is not None:
        ds.PatientAge = f"{int(patient_age_years):03d}Y"
    ds.StudyDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.SeriesDescription = series_description
    ds.SeriesNumber, ds.InstanceNumber = 1, instance_number
    ds.BodyPartExamined, ds.ViewPosition = "CHEST", "PA"
    ds.PatientOrientation = ["L", "F"]
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelSpacing = [f"{spacing[0]:.6g}", f"{spacing[1]:.6g}"]
    ds.ImagerPixelSpacing = ds.PixelSpacing
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
    ds.WindowCenter, ds.WindowWidth = (top + 1) / 2, top + 1
    ds.PixelData = stored.astype(np.uint16).tobytes()
    return _save_dicom(ds, path)


#: Attributes copied from the source of a derived image when present: patient, study and
#: acquisition context, and the pixel spacing (the derived image keeps the source's grid).
_DERIVED_KEEP = (
    "SpecificCharacterSet",
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex", "PatientAge",
    "PatientSize", "PatientWeight",
    "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName",
    "StudyDescription",
    "BodyPartExamined", "ViewPosition", "PatientOrientation", "Laterality", "ImageLaterality",
    "PixelSpacing", "ImagerPixelSpacing", "PixelSpacingCalibrationType", "PixelSpacingCalibrationDescription",
    "InstanceNumber",
)


def _derived_sop_class(source: pydicom.Dataset) -> pydicom.uid.UID:
    """CR stays CR; DX (for presentation or processing) becomes DX for presentation; else Secondary Capture."""
    sop = str(source.get("SOPClassUID", ""))
    if sop == pydicom.uid.ComputedRadiographyImageStorage:
        return pydicom.uid.ComputedRadiographyImageStorage
    if sop in (pydicom.uid.DigitalXRayImageStorageForPresentation, pydicom.uid.DigitalXRayImageStorageForProcessing):
        return pydicom.uid.DigitalXRayImageStorageForPresentation
    return pydicom.uid.SecondaryCaptureImageStorage


def write_dicom_derived(source: pydicom.Dataset, pixels01: np.ndarray, path: str | os.PathLike, description: str) -> Path:
    """Write ``pixels01`` (display values in ``[0, 1]``, bright = high) as an image derived from ``source``.

    The new instance keeps the source's patient, study (``StudyInstanceUID``) and spacing
    attributes and its grid (``Rows`` x ``Columns``), gets new series and instance UIDs,
    ``ImageType`` DERIVED\\SECONDARY, a ``SourceImageSequence`` and ``ReferencedImageSequence``
    pointing at the source, and ``description`` as its derivation and series description.
    Pixels are 12-bit unsigned MONOCHROME2 with a window over the whole range, so
    :func:`read_dicom` returns ``pixels01`` to within 1/4095.
    """
    rows, cols = int(source.Rows), int(source.Columns)
    if pixels01.shape != (rows, cols):
        raise ValueError(f"pixels are {pixels01.shape}, the source image is {(rows, cols)}")
    top = 2**12 - 1
    sop_class = _derived_sop_class(source)
    ds = _new_dataset(sop_class)
    for keyword in _DERIVED_KEEP:
        if keyword in source:
            ds[keyword] = copy.deepcopy(source[keyword])
    now = datetime.datetime.now()
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, ds.file_meta.MediaStorageSOPInstanceUID
    if "StudyInstanceUID" not in ds:
        ds.StudyInstanceUID = pydicom.uid.generate_uid()
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.SeriesNumber = None  # type 2: present, unknown
    ds.SeriesDescription = description[:64]  # LO holds 64 characters
    ds.Modality = source.get("Modality", "OT")
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.DerivationDescription = description[:1024]
    ds.InstanceCreationDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.Manufacturer = "segcft"
    reference = pydicom.Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    ds.SourceImageSequence = [reference]
    ds.ReferencedImageSequence = [copy.deepcopy(reference)]
    if sop_class == pydicom.uid.DigitalXRayImageStorageForPresentation:
        ds.PresentationIntentType = "FOR PRESENTATION"
    if sop_class == pydicom.uid.SecondaryCaptureImageStorage:
        ds.ConversionType = "WSD"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
    ds.WindowCenter, ds.WindowWidth = (top + 1) / 2, top + 1  # display = stored / 4095 (PS3.3 C.11.2.1.2.1)
    ds.PresentationLUTShape = "IDENTITY"
    ds.PixelData = np.rint(np.clip(pixels01, 0.0, 1.0) * top).astype("<u2").tobytes()
    return _save_dicom(ds, path)


def write_nifti_derived(source: str | os.PathLike, arr: np.ndarray, path: str | os.PathLike) -> Path:
    """Write an ``(H, W)`` array on the grid of the 2-D NIfTI image ``source`` (its affine and header kept)."""
    src = nib.load(str(source))
    data = np.ascontiguousarray(np.asarray(arr, dtype=np.float32).T).reshape(src.shape)
    img = type(src)(data, src.affine, src.header)
    img.set_data_dtype(np.float32)
    img.header.set_slope_inter(1.0, 0.0)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return Path(path)
