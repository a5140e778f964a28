"""``segcft counterfactual`` as users run it: DICOM folders, a real MONOCHROME1 CR, bad inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from monai.transforms import LoadImage
from typer.testing import CliRunner

from segcft.cli.main import app
from segcft.data.io import read_dicom
from tests.conftest import run_python
from tests.test_serve import tiny  # noqa: F401  (the session fixture: a tiny chest model package)

runner = CliRunner()


@pytest.mark.parametrize("command", ["counterfactual", "export"])
def test_help(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output


def test_dicom_folder_end_to_end_with_a_corrupt_file(tiny, tmp_path):
    # the two cases with the largest left lungs: do(left_lung_area=*0.8) stays inside the support
    items = sorted(tiny.dl["training"], key=lambda i: -i["parents"]["left_lung_area"])[:2]
    folder = tmp_path / "in"
    folder.mkdir()
    for item in items:
        shutil.copy(item["image"], folder)
    (folder / "broken.dcm").write_bytes(b"DICM" + bytes(range(256)) * 4)
    (folder / "notes.txt").write_text("not an image", encoding="utf-8")
    out = tmp_path / "out"
    proc = run_python("-m", "segcft.cli.main", "counterfactual", "--model", str(tiny.package), "--input", str(folder),
                      "--do", "left_lung_area=*0.8", "--particles", "2", "--out", str(out), check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    failures = [line for line in proc.stderr.splitlines() if line.startswith("failed:")]
    assert len(failures) == 1 and "broken.dcm: not a readable DICOM image" in failures[0]
    assert f"wrote 2 counterfactual(s) of 3 input(s) to {out}" in proc.stdout

    stems = [Path(i["image"]).stem for i in items]
    expected = {f"{s}_{kind}" for s in stems for kind in ("counterfactual.dcm", "figure.png", "variance.nii.gz")}
    assert {p.name for p in out.iterdir()} == expected | {"summary.json"}  # nothing of broken.dcm, nothing partial
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["processed"] == 2 and [Path(f["input"]).name for f in summary["failed"]] == ["broken.dcm"]

    for item, row in zip(sorted(items, key=lambda i: i["image"]), summary["results"]):
        source, derived = pydicom.dcmread(item["image"]), pydicom.dcmread(row["outputs"]["counterfactual"])
        assert list(derived.ImageType) == ["DERIVED", "SECONDARY"]
        assert derived.SOPClassUID == source.SOPClassUID == pydicom.uid.DigitalXRayImageStorageForPresentation
        assert derived.SOPInstanceUID != source.SOPInstanceUID and derived.SeriesInstanceUID != source.SeriesInstanceUID
        assert derived.file_meta.MediaStorageSOPInstanceUID == derived.SOPInstanceUID
        for ref in (derived.SourceImageSequence[0], derived.ReferencedImageSequence[0]):
            assert (ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID) == (source.SOPClassUID, source.SOPInstanceUID)
        assert (derived.PatientID, derived.StudyInstanceUID) == (source.PatientID, source.StudyInstanceUID)
        assert list(derived.PixelSpacing) == list(source.PixelSpacing)
        assert list(derived.ImagerPixelSpacing) == list(source.ImagerPixelSpacing)
        assert "do(left_lung_area=*0.8)" in derived.SeriesDescription and "do(left_lung_area=*0.8)" in derived.DerivationDescription
        assert derived.PhotometricInterpretation == "MONOCHROME2" and derived.BitsStored == 12

        before, after = LoadImage(image_only=True)(item["image"]), LoadImage(image_only=True)(row["outputs"]["counterfactual"])
        assert after.shape == before.shape and np.allclose(after.pixdim, before.pixdim)
        (x, meta), (x_cf, meta_cf) = read_dicom(item["image"]), read_dicom(row["outputs"]["counterfactual"])
        assert x_cf.shape == x.shape and meta_cf.spacing == meta.spacing
        assert np.abs(x_cf - x).max() > 0.01  # the image changed

        factual = row["factual_parents"]
        assert factual["left_lung_area"]["source"] == "measured" and factual["sex"]["source"] == "assumed"
        assert row["counterfactual_parents"]["left_lung_area"] == pytest.approx(0.8 * factual["left_lung_area"]["value"], rel=1e-4)
        assert row["counterfactual_parents"]["heart_area"] == factual["heart_area"]["value"]  # not a descendant


@pytest.fixture(scope="module")
def jsrt_model(jsrt_subset, tmp_path_factory):
    """The real-image chain at CI size: `segcft demo --data` on 34 JSRT cases, one epoch or step per stage."""
    root = tmp_path_factory.mktemp("jsrt_chain")
    subset = json.loads(jsrt_subset.read_text(encoding="utf-8"))
    run_python("-m", "segcft.cli.main", "demo", "--data", str(jsrt_subset), "--out", str(root / "demo"),
               "--segmentor-epochs", "1", "--generator-epochs", "1", "--cft-steps", "1", "--spatial-steps", "1")
    # a one-epoch segmentor finds few lung pixels on a real CR, and a zero area cannot be abducted
    # (log-modelled): the lungs are given as the training medians
    medians = {v: float(np.median([i["parents"][v] for i in subset["training"]])) for v in ("left_lung_area", "right_lung_area")}
    return root / "demo" / "model", medians


def test_the_real_image_chain_gives_a_derived_dicom_of_a_real_cr_at_its_own_size(jsrt_model, rg1_path, tmp_path):
    model, given = jsrt_model
    manifest = json.loads((model / "segcft_model.json").read_text(encoding="utf-8"))
    assert manifest["training_data"]["phantom"] is None and manifest["spatial"] is not None
    out = tmp_path / "out"
    result = runner.invoke(app, ["counterfactual", "--model", str(model), "--input", str(rg1_path),
                                 "--do", "left_lung_area=*0.9", "--out", str(out)] + [f"--parent={v}={a}" for v, a in given.items()])
    assert result.exit_code == 0, result.output
    source, derived = pydicom.dcmread(rg1_path), pydicom.dcmread(out / "RG1_UNCR_counterfactual.dcm")
    assert derived.SOPClassUID == pydicom.uid.ComputedRadiographyImageStorage and derived.Modality == "CR"
    assert (derived.Rows, derived.Columns) == (1955, 1841) and derived.PatientID == source.PatientID == "9RG1"
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    row = summary["results"][0]
    assert summary["resolution"] == "input" and row["counterfactual_parents"]["left_lung_area"] == pytest.approx(0.9 * given["left_lung_area"], rel=1e-4)
    # the one-epoch segmentor's heart may fall outside the support: named, not silently used
    assert "left_lung_area" not in row["outside_support"] + row["counterfactual_outside_support"]
    assert len(row["warnings"]) == len(row["outside_support"]) + len(row["counterfactual_outside_support"])
    assert all(f"factual {v} " in w for v, w in zip(row["outside_support"], row["warnings"]))


def test_real_monochrome1_cr_null_intervention_returns_the_input(jsrt_model, rg1_path, tmp_path):
    model, given = jsrt_model
    out = tmp_path / "out"
    result = runner.invoke(app, ["counterfactual", "--model", str(model), "--input", str(rg1_path),
                                 "--do", "nodule=1", "--out", str(out)] + [f"--parent={v}={a}" for v, a in given.items()]
                           + ["--parent=nodule=1"])
    assert result.exit_code == 0, result.output
    derived_path = out / "RG1_UNCR_counterfactual.dcm"
    x, _ = read_dicom(rg1_path)  # MONOCHROME1, inverted to display values by the reader
    x_cf, meta = read_dicom(derived_path)
    assert meta.photometric == "MONOCHROME2" and x_cf.shape == x.shape
    assert np.abs(x_cf - x).max() < 2e-3 and np.abs(x_cf - x).mean() < 5e-4  # 12-bit quantisation and float error
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    row = summary["results"][0]
    assert summary["do"] == ["nodule=1"] and row["spacing_source"].startswith("package default")  # RG1's PixelSpacing is [0, 0]
    assert row["factual_parents"]["heart_area"]["source"] == "measured"
    for v, a in given.items():
        assert row["factual_parents"][v] == {"value": pytest.approx(a, rel=1e-6), "source": "given"}


def test_an_intervention_outside_the_support_is_refused_or_run_with_a_warning(jsrt_model, rg1_path, tmp_path):
    model, given = jsrt_model
    args = ["counterfactual", "--model", str(model), "--input", str(rg1_path), "--do", "left_lung_area=*3"]
    args += [f"--parent={v}={a}" for v, a in given.items()]
    refused = runner.invoke(app, [*args, "--out", str(tmp_path / "refused")])
    assert refused.exit_code == 1 and "outside its allowed range" in refused.stderr
    allowed = runner.invoke(app, [*args, "--out", str(tmp_path / "allowed"), "--allow-outside-support"])
    assert allowed.exit_code == 0, allowed.output
    summary = json.loads((tmp_path / "allowed" / "summary.json").read_text(encoding="utf-8"))
    assert summary["allow_outside_support"] and "left_lung_area" in summary["results"][0]["counterfactual_outside_support"]
    assert sum("counterfactual left_lung_area" in w for w in summary["warnings"]) == 1
    assert "warning:" in allowed.stderr and (tmp_path / "allowed" / "RG1_UNCR_counterfactual.dcm").is_file()


def test_a_phantom_model_refuses_a_real_radiograph_and_says_what_to_use(tiny, rg1_path, tmp_path):
    result = runner.invoke(app, ["counterfactual", "--model", str(tiny.package), "--input", str(rg1_path),
                                 "--do", "age=*1", "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "a real radiograph" in result.stderr and "phantom model" in result.stderr and "segcft demo --data" in result.stderr
    assert not (tmp_path / "out" / "RG1_UNCR_counterfactual.dcm").exists()


def test_missing_input_unknown_variable_and_malformed_do_exit_2_with_one_line(tiny, tmp_path):
    case = tiny.dl["test"][0]["image"]
    model = ["--model", str(tiny.package)]
    base = ["counterfactual", "--out", str(tmp_path / "out")]
    cases = [
        ([*model, "--input", case, "--do", "spleen_area=*0.8"],
         "error: cannot intervene on unknown variable 'spleen_area'; known variables: "
         "['age', 'heart_area', 'left_lung_area', 'right_lung_area', 'sex']\n"),
        ([*model, "--input", case, "--do", "heart_area=*"], "error: cannot parse the intervention 'heart_area=*'"),
        ([*model, "--input", str(tmp_path / "missing.dcm"), "--do", "heart_area=*0.9"],
         f"error: {tmp_path / 'missing.dcm'}: no such file or folder"),
        ([*model, "--input", case, "--do", "heart_area=*0.9", "--parent", "age"], "error: --parent 'age' is not name=value"),
        (["--model", str(tmp_path), "--input", case, "--do", "heart_area=*0.9"], f"error: {tmp_path}: not a segcft model package"),
    ]
    for args, line in cases:
        result = runner.invoke(app, [*base, *args])
        assert result.exit_code == 2, (args, result.output)
        assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith(line), result.stderr
    assert not (tmp_path / "out").exists()
