"""Readers, writers and the MONAI loading pipeline on real files."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import torch

from segcft.data.io import read_dicom, read_image, read_label_map, read_nifti, write_dicom_radiograph, write_nifti, write_png
from segcft.data.transforms import image_pipeline
from segcft.utils import InputError, atomic_path


def _rg1_copy(rg1_path, tmp_path, name, **changes):
    ds = pydicom.dcmread(rg1_path)
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    path = tmp_path / name
    ds.save_as(path)
    return path


def test_rg1_polarity_spacing_and_size(rg1_path):
    out = image_pipeline(128, "cxr", with_label=False)({"image": str(rg1_path)})
    img = out["image"]
    assert tuple(img.shape) == (1, 128, 128)
    assert img.meta["photometric"] == "MONOCHROME1"
    # lung fields (lateral thirds of the chest) are darker than the mediastinum after inversion
    mid = img[0, 40:90]
    mediastinum = mid[:, 56:72].mean()
    assert mid[:, 25:45].mean() < mediastinum - 0.2 and mid[:, 85:105].mean() < mediastinum - 0.2
    # RG1_UNCR's PixelSpacing is [0, 0]: it is not trusted, and the metadata says so
    assert img.meta["spacing_source"] == "assumed"
    assert torch.allclose(out["spacing"], torch.tensor([1955 / 128, 1955 / 128]))


def test_rg1_with_valid_spacing_is_tracked_through_padding_and_resize(rg1_path, tmp_path):
    path = _rg1_copy(rg1_path, tmp_path, "spaced.dcm", PixelSpacing=[0.15, 0.15])
    out = image_pipeline(64, "cxr", with_label=False)({"image": str(path)})
    assert out["image"].meta["spacing_source"] == "PixelSpacing"
    # padded to 1955 x 1955 then resized to 64: spacing grows by 1955/64
    assert torch.allclose(out["spacing"], torch.tensor([0.15 * 1955 / 64] * 2), rtol=1e-5)


def test_imager_pixel_spacing_is_used_when_pixel_spacing_is_absent(rg1_path, tmp_path):
    path = _rg1_copy(rg1_path, tmp_path, "imager.dcm", PixelSpacing=None, ImagerPixelSpacing=[0.2, 0.1])
    _, meta = read_dicom(path)
    assert meta.spacing == (0.2, 0.1) and meta.spacing_source == "ImagerPixelSpacing"


def test_monochrome1_and_monochrome2_give_the_same_display_image(rg1_path, tmp_path):
    ds = pydicom.dcmread(rg1_path)
    top = 2**ds.BitsStored - 1
    inverted = (top - ds.pixel_array).astype(np.uint16)
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = inverted.tobytes()
    ds.WindowCenter = top - float(ds.WindowCenter)  # the same window on inverted values
    path = tmp_path / "mono2.dcm"
    ds.save_as(path)
    a, _ = read_dicom(rg1_path)
    b, _ = read_dicom(path)
    assert np.abs(a - b).max() < 1e-3


def test_rescale_and_window_are_applied(tmp_path):
    pixels = np.array([[0, 1000], [2000, 4095]], dtype=np.uint16)
    path = write_dicom_radiograph(pixels, tmp_path / "r.dcm", (0.5, 0.5))
    ds = pydicom.dcmread(path)
    ds.RescaleSlope, ds.RescaleIntercept = 2, -1000  # modality values: -1000, 1000, 3000, 7190
    ds.WindowCenter, ds.WindowWidth = 1000, 2000  # window [0, 2000] in modality units
    ds.save_as(path)
    img, meta = read_dicom(path)
    assert img[0, 0] == 0.0 and img[1, 1] == 1.0 and img[1, 0] == 1.0
    assert abs(img[0, 1] - 0.5) < 1e-3
    assert meta.spacing == (0.5, 0.5)


def test_written_monochrome1_dicom_reads_back_as_display_image(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 4096, size=(20, 30)).astype(np.uint16)
    m2, _ = read_dicom(write_dicom_radiograph(pixels, tmp_path / "m2.dcm", (0.4, 0.3)))
    m1, meta = read_dicom(write_dicom_radiograph(pixels, tmp_path / "m1.dcm", (0.4, 0.3), photometric="MONOCHROME1"))
    assert meta.photometric == "MONOCHROME1" and meta.spacing == (0.4, 0.3)
    assert np.abs(m1 - m2).max() < 1e-6


def test_png_and_nifti_round_trip_in_display_orientation(tmp_path):
    arr = np.zeros((20, 30), dtype=np.uint8)
    arr[2, 25] = 255  # top right
    img, meta = read_image(write_png(arr, tmp_path / "a.png"))
    assert img.shape == (20, 30) and img[2, 25] == 1.0 and meta.spacing is None
    hu = np.arange(600, dtype=np.float32).reshape(20, 30)
    back, meta = read_nifti(write_nifti(hu, tmp_path / "a.nii.gz", (0.2, 0.1)))
    assert np.array_equal(back, hu) and meta.spacing == (0.2, 0.1)


def test_truncated_dicom_names_the_file(rg1_path, tmp_path):
    data = rg1_path.read_bytes()
    bad = tmp_path / "truncated.dcm"
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(InputError, match="truncated.dcm"):
        read_image(bad)
    with pytest.raises(InputError, match="truncated.dcm"):
        image_pipeline(64, "cxr", with_label=False)({"image": str(bad)})


def test_missing_file_and_unknown_format_name_the_file(tmp_path):
    with pytest.raises(InputError, match="nothere.dcm"):
        read_image(tmp_path / "nothere.dcm")
    junk = tmp_path / "notes.txt"
    junk.write_text("hello " * 40, encoding="utf-8")
    with pytest.raises(InputError, match="notes.txt"):
        read_image(junk)


def test_label_map_of_another_size_names_both_files(tmp_path):
    write_png(np.zeros((40, 40), np.uint8), tmp_path / "img.png")
    write_png(np.zeros((40, 39), np.uint8), tmp_path / "lab.png")
    pipeline = image_pipeline(32, "cxr")
    with pytest.raises(InputError, match=r"lab\.png.*img\.png"):
        pipeline({"image": str(tmp_path / "img.png"), "label": str(tmp_path / "lab.png")})


def test_label_map_is_resized_with_nearest_neighbour(tmp_path):
    img = (np.random.default_rng(1).random((60, 40)) * 255).astype(np.uint8)
    lab = np.zeros((60, 40), np.uint8)
    lab[10:30, 5:15], lab[35:55, 20:35] = 1, 3
    write_png(img, tmp_path / "img.png")
    write_png(lab, tmp_path / "lab.png")
    out = image_pipeline(30, "cxr", default_spacing=(0.5, 0.5))(
        {"image": str(tmp_path / "img.png"), "label": str(tmp_path / "lab.png")}
    )
    assert out["label"].dtype == torch.long and set(out["label"].unique().tolist()) == {0, 1, 3}
    assert -1.0 <= float(out["image"].min()) and float(out["image"].max()) <= 1.0
    assert torch.allclose(out["spacing"], torch.tensor([1.0, 1.0]))  # 60 px at 0.5 mm -> 30 px at 1 mm
    assert read_label_map(tmp_path / "lab.png").dtype == np.uint8


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half", encoding="utf-8")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_pipeline_runs_on_cuda(rg1_path):
    out = image_pipeline(64, "cxr", with_label=False, device="cuda")({"image": str(rg1_path)})
    assert out["image"].device.type == "cuda"


def test_pipeline_keeps_tensors_on_the_configured_device(rg1_path):
    out = image_pipeline(64, "cxr", with_label=False, device="cpu")({"image": str(rg1_path)})
    assert out["image"].device.type == "cpu"
