"""The CFT bundles at CI size: a generator bundle's train.json with a CFT config on top, as users run them."""

from __future__ import annotations

import csv
import dataclasses
import inspect
import json
import logging
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow

from segcft.causal.parents import fit_parent_scm
from segcft.causal.scm import training_parents
from segcft.cft.engine import CFTTrainer
from segcft.cft.recipe import RECIPE
from segcft.cli import bench as cli_bench
from segcft.cft.factory import intervention_sampler, make_guide
from segcft.data.datalist import load_datalist
from segcft.data.phantom import make_phantom
from segcft.engines.generator import ema_model
from segcft.evaluate.cft import bench_cft, finetune
from segcft.models import segmentor
from segcft.utils import InputError

REPO = Path(__file__).resolve().parents[1]
STAGES = [{"resolution": 32, "width": 8, "z_dim": 0}, {"resolution": 8, "width": 16, "z_dim": 4}, {"resolution": 1, "width": 16, "z_dim": 4}]
CXR_GRAPH = {"age": [], "sex": [], "heart_area": ["age", "sex"], "left_lung_area": ["age", "sex", "heart_area"],
             "right_lung_area": ["age", "sex"], "left_lung_lower_area": ["left_lung_area"]}
CXR_AREAS = ["heart_area", "left_lung_area", "right_lung_area"]
SEGMENTOR = {"guide_network": "unet", "segmentor_width": 4, "segmentor_image_size": 32}
REPORT_KEYS = {"split", "cases", "variables", "effectiveness_metric", "noise_floor", "elbo_nats_per_dim", "bits_per_dim",
               "composition_max_abs", "reversibility", "effectiveness", "locality", "realism_frechet"}

pytestmark = pytest.mark.usefixtures("one_thread")


def config_files(modality: str, config: str) -> list[str]:
    """The generator's train.json (plus phantom.json for the chest phantom), then the CFT config."""
    generator = [f"{modality}_generator/configs/train.json"] + (["cxr_generator/configs/phantom.json"] if modality == "cxr" else [])
    return [str(REPO / "bundles" / f) for f in (*generator, f"{modality}_cft/configs/{config}")]


def run_workflow(modality: str, config: str, setup: dict, run: Path, **overrides) -> ConfigWorkflow:
    """Run a CFT config in this process, as ``python -m monai.bundle run`` would, with bundle root ``run``."""
    wf = ConfigWorkflow(
        config_file=config_files(modality, config), meta_file=str(REPO / "bundles" / f"{modality}_cft/configs/metadata.json"),
        logging_file=False, workflow_type=None, **setup["overrides"], bundle_root=str(run), **overrides,
    )
    wf.initialize()
    wf.run()
    wf.finalize()
    return wf


def make_setup(root: Path, modality: str, classes: int, model: dict) -> dict:
    """A phantom, a base generator built by the generator bundle's config, and untrained segmentors, saved as bundle runs."""
    torch.manual_seed(0)
    data = make_phantom(modality, 64).write_dataset(root / "data", 16, seed=0, progress=False)
    generator = {"datalist": str(data), "image_size": 32, "stages": STAGES, "batch_size": 4, "progress": False, "device": "cpu", **model}
    parser = ConfigParser()
    parser.read_config(config_files(modality, "train.json")[:-1])
    parser.update(generator)
    scm = parser.get_parsed_content("scm")
    fit_parent_scm(scm.parents, training_parents(load_datalist(data), scm.variables), steps=5, seed=0)
    (root / "base" / "models").mkdir(parents=True)
    torch.save(ema_model(scm).state_dict(), root / "base" / "models" / "model.pt")
    for instance, network in (("guide", "unet"), ("eval", "basicunet")):
        (root / "seg" / "models" / instance).mkdir(parents=True)
        torch.save(segmentor(network, classes, width=4).state_dict(), root / "seg" / "models" / instance / "model.pt")
    overrides = {**generator, **SEGMENTOR, "base_run": str(root / "base"), "segmentor_run": str(root / "seg")}
    return {"root": root, "data": data, "scm": scm, "overrides": overrides}


@pytest.mark.parametrize("bundle", ["cxr_cft", "ccta_cft"])
def test_bundle_defaults_are_the_benchmarks(bundle):
    """A bundle run at its defaults fine-tunes like one method of `segcft bench cft` (the bundle READMEs say so)."""
    recipe = dataclasses.asdict(RECIPE)
    config = json.loads((REPO / "bundles" / bundle / "configs" / "train.json").read_text(encoding="utf-8"))
    assert {k: config["cft_ema_decay" if k == "ema_decay" else k] for k in recipe} == recipe
    # bench_cft passes its own values to finetune, and finetune its own to the trainer
    bench_first = {**{n: p.default for n, p in inspect.signature(CFTTrainer.__init__).parameters.items()},
                   **{n: p.default for n, p in inspect.signature(finetune).parameters.items()},
                   **{n: p.default for n, p in inspect.signature(bench_cft).parameters.items()}}
    assert {k: v for k, v in bench_first.items() if k in recipe} == recipe
    # the CLI spells its defaults out (importing the recipe would import torch and MONAI before --help)
    cli = {n: p.default.default for n, p in inspect.signature(cli_bench.cft).parameters.items()}
    assert {k: v for k, v in cli.items() if k in recipe} == {k: v for k, v in recipe.items() if k in cli}


@pytest.fixture(scope="module")
def cxr(tmp_path_factory) -> dict:
    """Chest phantom; the generator's parents include the regional left_lung_lower_area, so pos-seg works."""
    return make_setup(tmp_path_factory.mktemp("cxr_cft"), "cxr", 4, {"graph": CXR_GRAPH, "log_vars": [*CXR_AREAS, "left_lung_lower_area"]})


@pytest.fixture(scope="module")
def seg_cft(cxr) -> tuple[Path, dict]:
    """A Seg-CFT run of 2 steps, and its guide segmentor's weights after fine-tuning."""
    run = cxr["root"] / "seg_cft"
    wf = run_workflow("cxr", "train.json", cxr, run, steps=2, cft_ema_decay=0.0)
    return run, wf.parser.get_parsed_content("guide_model").network.state_dict()


@pytest.fixture(scope="module")
def seg_run(seg_cft) -> Path:
    return seg_cft[0]


def state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def test_seg_cft_fine_tunes_the_image_mechanism_only_and_keeps_the_guide(cxr, seg_cft):
    seg_run, guide_after = seg_cft
    assert {"model.pt", "final.pt", "checkpoint_epoch=2.pt"} <= {p.name for p in (seg_run / "models").iterdir()}
    base, tuned = state(cxr["root"] / "base" / "models" / "model.pt"), state(seg_run / "models" / "model.pt")
    assert base.keys() == tuned.keys()  # the generator bundle's format: the EMA model's state dict
    changed = {k for k in base if torch.is_tensor(base[k]) and not torch.equal(base[k], tuned[k])}
    assert changed - {"n_averaged"} and all(k.startswith("module.image.") for k in changed - {"n_averaged"})
    guide_file = state(cxr["root"] / "seg" / "models" / "guide" / "model.pt")
    assert guide_file.keys() == guide_after.keys() and all(torch.equal(guide_file[k], v) for k, v in guide_after.items())
    resume = state(seg_run / "models" / "checkpoint_epoch=2.pt")
    assert {"model", "optimizer", "lr_scheduler", "lagrange", "sampler", "trainer"} <= set(resume) and resume["trainer"]["iteration"] == 2
    assert resume["lr_scheduler"]["last_epoch"] == 2  # the warm-up steps once per iteration
    assert list((seg_run / "eval" / "samples").glob("*.png")) and list((seg_run / "eval" / "tensorboard").iterdir())
    # with cft_ema_decay 0 the stored model is the fine-tuned weights themselves
    final = state(seg_run / "models" / "final.pt")
    assert all(torch.equal(final["model"][k], tuned[k]) for k in changed - {"n_averaged"}) and "cft_ema" in final


def test_reg_cft_resumes_and_reuses_its_regressor(cxr, caplog):
    run = cxr["root"] / "reg_cft"
    run_workflow("cxr", "train.json", cxr, run, guide="reg", regressor_epochs=1, steps=2)
    regressor = run / "models" / "regressor.pt"
    saved = regressor.read_bytes()
    caplog.set_level(logging.INFO)
    wf = run_workflow("cxr", "train.json", cxr, run, guide="reg", regressor_epochs=1, steps=3)
    assert "Epoch: 3/3" in caplog.text and "Epoch: 1/3" not in caplog.text and "Epoch: 2/3" not in caplog.text
    resumed = state(run / "models" / "checkpoint_epoch=3.pt")
    assert resumed["trainer"]["iteration"] == resumed["lr_scheduler"]["last_epoch"] == 3
    assert resumed["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-4 * (1 / 20 + (1 - 1 / 20) * 3 / 20))  # warm-up resumed
    assert regressor.read_bytes() == saved
    guide = wf.parser.get_parsed_content("guide_model")
    stored = torch.load(regressor, weights_only=True)
    assert stored["variables"] == guide.variables == CXR_AREAS
    assert all(torch.equal(stored["guide"][k], v) for k, v in guide.state_dict().items())


def test_pos_seg_guides_the_regional_variables_too_and_stores_an_ema(cxr):
    run = cxr["root"] / "pos_cft"
    wf = run_workflow("cxr", "train.json", cxr, run, guide="pos-seg", steps=2, cft_ema_decay=0.5, lagrange_init=2.0)
    assert wf.parser.get_parsed_content("targets") == [*CXR_AREAS, "left_lung_lower_area"]
    base, stored, final = (state(p) for p in (cxr["root"] / "base" / "models" / "model.pt", run / "models" / "model.pt",
                                              run / "models" / "final.pt"))
    image = [k for k in base if k.startswith("module.image.") and base[k].is_floating_point()]
    # the stored model is the EMA: half the step-2 weights and half the step-1 weights, unlike either iterate
    assert all(torch.equal(stored[k], final["cft_ema"][k]) for k in image)
    assert any(not torch.equal(stored[k], final["model"][k]) for k in image)
    # lambda starts at lagrange_init; two ascent steps at rate 0.1 move it by well under 1
    assert abs(float(state(run / "models" / "checkpoint_epoch=2.pt")["lagrange"]["value"]) - 2.0) < 1.0


def test_inference_writes_counterfactuals_of_the_fine_tuned_model(cxr, seg_run):
    run_workflow("cxr", "inference.json", cxr, seg_run, do=["heart_area=*1.02"])
    out = seg_run / "counterfactuals"
    with open(out / "parents.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3  # the test split of 16 cases
    assert all(float(r["heart_area_cf"]) == pytest.approx(1.02 * float(r["heart_area"]), rel=1e-4) for r in rows)
    assert len(list((out / "images").glob("*.nii.gz"))) == len(list((out / "difference").glob("*.png"))) == 3
    generator = ConfigWorkflow(  # the generator bundle's own inference, pointed at the CFT run, loads the same model
        config_file=[str(REPO / "bundles" / f) for f in ("cxr_generator/configs/inference.json", "cxr_generator/configs/phantom.json")],
        meta_file=None, logging_file=False, workflow_type=None, **cxr["overrides"], bundle_root=str(seg_run),
        output_dir=str(seg_run / "generator_counterfactuals"), do=["heart_area=*1.02"],
    )
    generator.initialize()
    generator.run()
    for path in (out / "images").iterdir():
        assert path.read_bytes() == (seg_run / "generator_counterfactuals" / "images" / path.name).read_bytes()


def test_evaluate_writes_the_report(cxr, seg_run):
    run_workflow("cxr", "evaluate.json", cxr, seg_run)
    report = json.loads((seg_run / "eval" / "report.json").read_text(encoding="utf-8"))
    assert REPORT_KEYS | {"positional", "ground_truth"} <= set(report)
    assert report["effectiveness_metric"] == "MAPE (%)" and set(report["effectiveness"]) == set(CXR_AREAS)
    assert "left_lung_lower_area" in report["positional"] and report["composition_max_abs"] < 1e-4


def test_ccta_pos_seg_trains_and_evaluates_on_plaque_sectors(tmp_path):
    positional = json.loads((REPO / "bundles" / "ccta_generator" / "configs" / "positional.json").read_text(encoding="utf-8"))
    setup = make_setup(tmp_path, "ccta", 5, positional)
    run = tmp_path / "cft"
    wf = run_workflow("ccta", "train.json", setup, run, guide="pos-seg", steps=2)
    sectors = [f"calcified_plaque_q{i}_area" for i in range(1, 5)]
    assert wf.parser.get_parsed_content("targets")[-4:] == sectors
    run_workflow("ccta", "evaluate.json", setup, run)
    report = json.loads((run / "eval" / "report.json").read_text(encoding="utf-8"))
    assert REPORT_KEYS | {"ground_truth", "positional"} <= set(report)
    assert report["effectiveness_metric"] == "MAE (mm2)"
    assert set(report["effectiveness"]) == {"lumen_area", "vessel_wall_area", "calcified_plaque_area", "noncalcified_plaque_area"}
    # sector errors are in mm2 (empty sectors make percentages meaningless), over the cases whose sector is not empty
    assert report["positional"] and set(report["positional"]) <= set(sectors)
    for entry in report["positional"].values():
        assert {"requested_change_percent", "target_mae_mm2", "target_change_percent", "other_regions_change_mm2", "noise_floor",
                "n"} == set(entry) and entry["n"] >= 1


def test_bad_guide_and_targets_are_refused_by_name(cxr):
    dl = load_datalist(cxr["data"])
    no_call = lambda *_: pytest.fail("the guide kind does not need this")  # noqa: E731
    with pytest.raises(InputError, match="guide must be one of"):
        make_guide("segmentor", dl, CXR_AREAS, no_call, no_call)
    with pytest.raises(InputError, match="pos-seg"):
        make_guide("pos-seg", dl, CXR_AREAS, no_call, no_call)
    for targets in ([], ["sex"], ["spleen_area"]):
        with pytest.raises(InputError, match="targets"):
            intervention_sampler(targets, cxr["scm"])
