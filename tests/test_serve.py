"""Model packages and counterfactuals of files, on a tiny model built from chest phantoms."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.losses import DiceCELoss
from PIL import Image
from typer.testing import CliRunner

from segcft.causal.parents import fit_parent_scm
from segcft.causal.scm import build_deep_scm, training_parents
from segcft.cli.main import app
from segcft.data.datalist import load_datalist
from segcft.data.io import read_dicom, read_image, write_nifti, write_png
from segcft.data.phantom import make_phantom
from segcft.data.transforms import image_pipeline
from segcft.engines.loading import generator_config_files
from segcft.models import segmentor
from segcft.serve import counterfactual_files, load_model_package, save_model_package
from segcft.serve.counterfactual import to_input_grid
from segcft.serve.package import GENERATOR_FILE, MANIFEST, SEGMENTOR_FILE
from segcft.utils import InputError

REPO = Path(__file__).resolve().parents[1]
STAGES = [
    {"resolution": 32, "width": 8, "z_dim": 0},
    {"resolution": 8, "width": 16, "z_dim": 4},
    {"resolution": 1, "width": 16, "z_dim": 4},
]
LOG_VARS = ["heart_area", "left_lung_area", "right_lung_area"]
SEGMENTOR_ENTRY = {"network": "unet", "width": 4, "image_size": 32}


@dataclass
class Tiny:
    """A tiny chest phantom model: its datalist, deep SCM, segmentor, config and saved package."""

    datalist: Path
    dl: dict
    scm: torch.nn.Module
    segmentor: torch.nn.Module
    config: dict
    package: Path


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Tiny:
    """12 chest phantoms (DICOM, 64 px), an untrained 32 px deep SCM with fitted parent flows, a briefly trained segmentor."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("serve")
    path = make_phantom("cxr", 64).write_dataset(root / "data", 12, seed=0, progress=False)
    dl = load_datalist(path)
    variables = list(dl["graph"])
    torch.manual_seed(0)
    scm = build_deep_scm(dl, variables, dl["graph"], stages=STAGES, log_vars=LOG_VARS)
    fit_parent_scm(scm.parents, training_parents(dl, variables), steps=40, seed=0)
    scm.eval()
    pipeline = image_pipeline(32, "cxr")
    items = [pipeline(item) for split in ("training", "validation", "test") for item in dl[split]]
    x = torch.stack([i["image"].as_tensor() for i in items])
    y = torch.stack([i["label"].as_tensor() for i in items])
    net = segmentor("unet", 4, width=4)
    optimizer, loss = torch.optim.Adam(net.parameters(), 1e-2), DiceCELoss(to_onehot_y=True, softmax=True)
    for _ in range(40):
        optimizer.zero_grad()
        loss(net(x), y).backward()
        optimizer.step()
    net.eval()
    config = {"modality": "cxr", "image_size": 32, "variables": variables, "graph": dl["graph"], "log_vars": LOG_VARS,
              "preset": "cpu32", "stages": STAGES, "latents": "fixed", "hvae": {}}
    package = save_model_package(root / "package", scm, config=config, datalist=dl, segmentor_net=net,
                                 segmentor_entry=SEGMENTOR_ENTRY, provenance={"method": "none", "seed": 0})
    torch.set_num_threads(threads)
    return Tiny(path, dl, scm, net, config, package)


def _batch(dl: dict, n: int = 4) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    variables = list(dl["graph"])
    pipeline = image_pipeline(32, "cxr", with_label=False, variables=variables)
    items = [pipeline(item) for item in dl["training"][:n]]
    x = torch.stack([i["image"].as_tensor() for i in items])
    pa = {v: torch.stack([i["parents"][v] for i in items]) for v in variables}
    return x, pa, torch.stack([i["spacing"] for i in items])


def test_package_round_trip_gives_the_same_model(tiny):
    assert {p.name for p in tiny.package.iterdir()} == {MANIFEST, GENERATOR_FILE, SEGMENTOR_FILE}
    assert not [p for p in tiny.package.parent.iterdir() if p.name.startswith(".")]  # no staging left
    text = (tiny.package / MANIFEST).read_text(encoding="utf-8")
    manifest = json.loads(text)
    assert "images/" not in text and ".dcm" not in text  # no training data, only parent values
    assert manifest["format"] == 1 and manifest["variables"] == list(tiny.dl["graph"]) and manifest["stages"] == STAGES
    train = training_parents(tiny.dl, ["age", "sex"])
    assert manifest["defaults"] == {"age": float(train["age"].median()), "sex": float(train["sex"].mean() > 0.5)}
    assert manifest["structures"] == {"left_lung": 1, "right_lung": 2, "heart": 3} and manifest["regions"] == []
    assert manifest["default_spacing_mm"] == pytest.approx([358 / 32] * 2)

    pkg = load_model_package(tiny.package)
    assert not pkg.scm.training and not pkg.segmentor.training
    assert pkg.scm.support == tiny.scm.support
    x, pa, spacing = _batch(tiny.dl)
    with torch.no_grad():
        for do in ({}, ["left_lung_area=*0.9"], ["age=+5"]):
            mine = pkg.scm.counterfactual(x, pa, do, use_mean=True)
            theirs = tiny.scm.counterfactual(x, pa, do, use_mean=True)
            assert torch.equal(mine.image, theirs.image)
            assert all(torch.equal(mine.parents[k], theirs.parents[k]) for k in pa)
        assert torch.equal(pkg.segmentor(x), tiny.segmentor(x))

    measured = pkg.measure_parents(x, spacing)
    assert pkg.measured_variables == ["heart_area", "left_lung_area", "right_lung_area"]
    for name in pkg.measured_variables:  # the briefly trained segmentor is within 20 % of the truth
        assert torch.allclose(measured[name], pa[name], rtol=0.2), name
    assert torch.equal(measured["age"], torch.full((4,), manifest["defaults"]["age"]))


def test_the_manifest_says_how_counterfactuals_treat_the_latents(tiny, tmp_path):
    shutil.copytree(tiny.package, tmp_path / "pkg")
    manifest_path = tmp_path / "pkg" / "segcft_model.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    assert manifest["latents"] == "fixed" and load_model_package(tmp_path / "pkg").scm.latents == "fixed"
    manifest["latents"] = "mediated"
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")
    assert load_model_package(tmp_path / "pkg").scm.latents == "mediated"
    del manifest["latents"]  # a package written before the choice existed: its counterfactuals held the latents fixed
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")
    assert load_model_package(tmp_path / "pkg").scm.latents == "fixed"
    manifest["latents"] = "sampled"
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(InputError, match="latents must be one of"):
        load_model_package(tmp_path / "pkg")
    manifest["latents"] = "fixed"
    assert manifest.pop("hvae") == {}  # a package written before the HVAE options: the defaults
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")
    assert load_model_package(tmp_path / "pkg").scm.image.cfg.conditioning == "embed"
    manifest["hvae"] = {"likelihood": "fixed"}
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(InputError, match="unknown HVAE option.*'likelihood'"):
        load_model_package(tmp_path / "pkg")


def test_a_percentile_normalised_segmentor_travels_in_the_package(tiny, tmp_path):
    net = segmentor("unet", 4, width=4, normalise="percentile").eval()
    entry = {**SEGMENTOR_ENTRY, "normalise": "percentile"}
    path = save_model_package(tmp_path / "pkg", tiny.scm, config=tiny.config, datalist=tiny.dl, segmentor_net=net,
                              segmentor_entry=entry, provenance={})
    manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    assert manifest["segmentor"]["normalise"] == "percentile"
    x = _batch(tiny.dl)[0]
    with torch.no_grad():
        assert torch.equal(load_model_package(path).segmentor(x), net(x))
    del manifest["segmentor"]["normalise"]  # a package written before the option: the fixed window, whose weights do not fit
    (path / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(InputError, match=SEGMENTOR_FILE):
        load_model_package(path)


def test_regional_variables_are_measured_on_the_segmentors_partition(tiny, tmp_path):
    variables = ["heart_area", "left_lung_upper_area", "left_lung_middle_area", "left_lung_lower_area"]
    graph = {v: [] for v in variables}
    torch.manual_seed(0)
    scm = build_deep_scm(tiny.dl, variables, graph, stages=STAGES, log_vars=variables)
    config = {**tiny.config, "variables": variables, "graph": graph, "log_vars": variables}
    save_model_package(tmp_path / "pos", scm, config=config, datalist=tiny.dl, segmentor_net=tiny.segmentor,
                       segmentor_entry=SEGMENTOR_ENTRY, provenance={})
    pkg = load_model_package(tmp_path / "pos")
    assert [r["structure"] for r in pkg.manifest["regions"]] == ["left_lung"] and pkg.manifest["defaults"] == {}
    x, _, spacing = _batch(tiny.dl)
    measured = pkg.measure_parents(x, spacing)
    whole = load_model_package(tiny.package).measure_parents(x, spacing)["left_lung_area"]
    bands = measured["left_lung_upper_area"] + measured["left_lung_middle_area"] + measured["left_lung_lower_area"]
    assert torch.allclose(bands, whole) and (measured["left_lung_lower_area"] > 0).all()


def test_export_from_a_generator_run_and_a_segmentor_report(tiny, tmp_path):
    overrides = {"image_size": 32, "stages": STAGES, "device": "cpu", "bundle_root": str(tmp_path / "gen"),
                 "datalist": str(tiny.datalist)}
    parser = ConfigParser()
    parser.read_config(generator_config_files(REPO / "bundles" / "cxr_generator", tiny.dl))
    parser.update(overrides)
    ema = parser.get_parsed_content("ema")
    ema.module.load_state_dict(tiny.scm.state_dict())
    (tmp_path / "gen" / "models").mkdir(parents=True)
    torch.save(ema.state_dict(), tmp_path / "gen" / "models" / "model.pt")
    (tmp_path / "seg" / "models" / "guide").mkdir(parents=True)
    torch.save(tiny.segmentor.state_dict(), tmp_path / "seg" / "models" / "guide" / "model.pt")
    report = tmp_path / "segmentors.json"
    report.write_text(json.dumps({"work_dir": str(tmp_path / "seg"), "instances": {"guide": SEGMENTOR_ENTRY}}), encoding="utf-8")

    args = ["export", "--generator-run", str(tmp_path / "gen"), "--data", str(tiny.datalist), "--segmentors", str(report),
            "--out", str(tmp_path / "pkg"), "--set", "image_size=32", "--set", f"stages={json.dumps(STAGES)}"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    pkg = load_model_package(tmp_path / "pkg")
    assert pkg.manifest["provenance"]["method"] == "none" and pkg.manifest["provenance"]["segmentor_instance"] == "guide"
    assert pkg.manifest["image_size"] == 32 and pkg.manifest["variables"] == tiny.config["variables"]
    x, pa, _ = _batch(tiny.dl)
    with torch.no_grad():
        assert torch.equal(pkg.scm.counterfactual(x, pa, ["heart_area=*1.1"], use_mean=True).image,
                           tiny.scm.counterfactual(x, pa, ["heart_area=*1.1"], use_mean=True).image)

    result = CliRunner().invoke(app, [*args, "--instance", "judge"])
    assert result.exit_code == 2 and "no 'judge' segmentor instance" in result.stderr


def test_broken_packages_are_refused_naming_the_file(tiny, tmp_path):
    with pytest.raises(InputError, match=f"{tmp_path / 'none'}: not a segcft model package"):
        load_model_package(tmp_path / "none")
    cases = {
        MANIFEST: (lambda p: p.write_text("{not json", encoding="utf-8"), "not valid JSON"),
        GENERATOR_FILE: (lambda p: p.write_bytes(b"\x00garbage" * 10), "cannot read the weights"),
        SEGMENTOR_FILE: (lambda p: p.unlink(), "not found; the model package is incomplete"),
    }
    for name, (damage, message) in cases.items():
        broken = tmp_path / name
        shutil.copytree(tiny.package, broken)
        damage(broken / name)
        with pytest.raises(InputError, match=f"{broken / name}: {message}"):
            load_model_package(broken)
    future = tmp_path / "future"
    shutil.copytree(tiny.package, future)
    manifest = json.loads((future / MANIFEST).read_text(encoding="utf-8"))
    (future / MANIFEST).write_text(json.dumps({**manifest, "format": 2}), encoding="utf-8")
    with pytest.raises(InputError, match="package format 2 is not supported"):
        load_model_package(future)
    (future / MANIFEST).write_text(json.dumps({**manifest, "log_vars": ["heart_area"]}), encoding="utf-8")
    with pytest.raises(InputError, match=f"{future / GENERATOR_FILE}: the weights do not fit"):
        load_model_package(future)


def test_changes_map_back_through_padding_and_resize(tmp_path):
    rows, cols = np.mgrid[0:100, 0:60]
    ramp = (rows / 100 * 0.5 + cols / 60 * 0.3).astype(np.float32)
    write_nifti(ramp, tmp_path / "ramp.nii.gz", (0.5, 0.7))
    pipeline = image_pipeline(32, "cxr", with_label=False)
    loaded = pipeline({"image": str(tmp_path / "ramp.nii.gz")}, end=1)
    model = pipeline(loaded, start=1)
    back = to_input_grid((model["image"][0] + 1) / 2, model["image"].affine, loaded["image"].affine, (100, 60)).numpy()
    assert back.shape == (100, 60)
    # a linear ramp survives area downsampling and bilinear upsampling away from the padding;
    # an offset of one model pixel would cost 0.016 along the rows
    assert np.abs(back - ramp)[3:-3, 4:-4].max() < 0.006


def test_png_and_nifti_inputs_keep_their_format_geometry_and_values(tiny, tmp_path):
    image, meta = read_dicom(tiny.dl["test"][0]["image"])
    crop = image[4:60, 10:50]  # not square: padding and cropping matter
    write_png(np.rint(crop * 255).astype(np.uint8), tmp_path / "in" / "a.png")
    write_png(np.rint(crop * 65535).astype(np.uint16), tmp_path / "in" / "b.png")
    write_nifti(crop, tmp_path / "in" / "c.nii.gz", meta.spacing)
    pkg = load_model_package(tiny.package)
    inputs = [tmp_path / "in" / n for n in ("a.png", "b.png", "c.nii.gz")]
    summary = counterfactual_files(pkg, inputs, ["age=*1"], tmp_path / "out", progress=False)
    assert summary["processed"] == 3 and summary["failed"] == []
    for name, step in (("a.png", 1 / 255), ("b.png", 1 / 65535), ("c.nii.gz", 0)):
        row = next(r for r in summary["results"] if r["input"].endswith(name))
        out, _ = read_image(row["outputs"]["counterfactual"])
        original, _ = read_image(tmp_path / "in" / name)
        assert out.shape == (56, 40) and np.abs(out - original).max() <= 1e-3 + step, name  # null intervention
        assert row["factual_parents"]["age"]["source"] == "assumed"
        assert row["factual_parents"]["heart_area"]["source"] == "measured"
    png = next(r for r in summary["results"] if r["input"].endswith("a.png"))
    assert png["spacing_source"].startswith("package default") and png["model_spacing_mm"] == pytest.approx([358 / 32] * 2)
    assert Image.open(tmp_path / "out" / "b_counterfactual.png").mode.startswith("I")  # 16 bits stay 16 bits
    nifti_in, nifti_out = nib.load(tmp_path / "in" / "c.nii.gz"), nib.load(tmp_path / "out" / "c_counterfactual.nii.gz")
    assert np.allclose(nifti_out.affine, nifti_in.affine) and nifti_out.shape == nifti_in.shape


def test_given_parents_particles_and_per_file_support_failures(tiny, tmp_path):
    pkg = load_model_package(tiny.package)
    case = tiny.dl["test"][0]
    summary = counterfactual_files(pkg, [case["image"]], ["heart_area=*1.05"], tmp_path / "out", particles=3,
                                   parents={"age": 40, "sex": 0}, progress=False)
    row = summary["results"][0]
    assert row["factual_parents"]["age"] == {"value": 40.0, "source": "given"}
    assert row["counterfactual_parents"]["heart_area"] == pytest.approx(row["factual_parents"]["heart_area"]["value"] * 1.05, rel=1e-4)
    variance = nib.load(row["outputs"]["variance"]).get_fdata()
    assert variance.shape == (64, 64) and variance.max() > 0 and variance.min() >= 0
    assert Path(row["outputs"]["figure"]).stat().st_size > 5_000

    missing = tmp_path / "missing.dcm"
    summary = counterfactual_files(pkg, [case["image"], missing], ["heart_area=*3"], tmp_path / "far", progress=False)
    assert summary["processed"] == 0 and "outside its allowed range" in summary["failed"][0]["error"]
    assert summary["failed"][1] == {"input": str(missing), "error": f"{missing}: file not found"}
    assert sorted(p.name for p in (tmp_path / "far").iterdir()) == ["summary.json"]


@pytest.mark.parametrize(
    "do, parents, named",
    [
        (["spleen_area=*0.8"], {}, "unknown variable 'spleen_area'"),
        (["heart_area~0.8"], {}, "cannot parse the intervention 'heart_area~0.8'"),
        (["heart_area=nan"], {}, "'heart_area' must be finite"),
        (["heart_area=100"], {}, "on 'heart_area' gives 100, outside its allowed range"),
        (["sex=2"], {}, "'sex' is binary"),
        (["heart_area=*0.9", "heart_area=+5%"], {}, "'heart_area' is intervened on twice"),
        (["heart_area=*0.9"], {"spleen_area": 3.0}, "parent 'spleen_area' is not a variable"),
        (["heart_area=*0.9"], {"sex": 0.5}, "parent 'sex' is binary"),
        (["heart_area=*0.9"], {"age": "old"}, "parent 'age' must be a number, got 'old'"),
    ],
)
def test_bad_requests_are_refused_before_any_file_is_read(tiny, tmp_path, do, parents, named):
    pkg = load_model_package(tiny.package)
    with pytest.raises(InputError, match=re.escape(named)):
        counterfactual_files(pkg, [tmp_path / "never_read.dcm"], do, tmp_path / "out", parents=parents, progress=False)
    assert not (tmp_path / "out").exists()
