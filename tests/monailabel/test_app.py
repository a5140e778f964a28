"""The MONAI Label app served for real: a server on a free local port, called over HTTP.

A tiny model package (untrained HVAE stages as in tests/test_generator.py, an untrained
segmentor) is enough: the images need not be good, the plumbing must be real.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
from requests_toolbelt.multipart.decoder import MultipartDecoder

from segcft.causal.parents import fit_parent_scm
from segcft.causal.scm import build_deep_scm, training_parents
from segcft.data.datalist import load_datalist, structures_of
from segcft.data.io import read_image, read_label_map, write_nifti
from segcft.data.phantom import make_phantom
from segcft.data.transforms import image_pipeline
from segcft.models import segmentor
from segcft.serve import load_model_package, save_model_package

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "apps" / "monailabel"
STAGES = [
    {"resolution": 32, "width": 8, "z_dim": 0},
    {"resolution": 8, "width": 16, "z_dim": 4},
    {"resolution": 1, "width": 16, "z_dim": 4},
]
LOG_VARS = ["heart_area", "left_lung_area", "right_lung_area"]
START_TIMEOUT = 120  # seconds until /info/ answers
TRAIN_TIMEOUT = 120
REQUEST_TIMEOUT = 60


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict:
    """A chest phantom, a tiny model package and a studies folder of NIfTI images, some labelled."""
    root = tmp_path_factory.mktemp("monailabel")
    torch.manual_seed(0)
    dl = load_datalist(make_phantom("cxr", 64).write_dataset(root / "data", 16, seed=0, progress=False))
    variables = list(dl["graph"])
    scm = build_deep_scm(dl, variables, dl["graph"], stages=STAGES, log_vars=LOG_VARS)
    fit_parent_scm(scm.parents, training_parents(dl, variables), steps=10, seed=0)  # the parents need not be good, only real
    entry = {"network": "unet", "width": 4, "image_size": 32}
    config = {"modality": "cxr", "image_size": 32, "variables": variables, "graph": dl["graph"],
              "log_vars": LOG_VARS, "preset": None, "stages": STAGES, "latents": "fixed", "hvae": {}}
    package = save_model_package(
        root / "package", scm, config=config, datalist=dl,
        segmentor_net=segmentor("unet", len(dl["structures"]) + 1, width=4), segmentor_entry=entry,
        provenance={"made_by": "tests/monailabel"},
    )
    studies = root / "studies"
    cases = {}
    for n, item in enumerate(dl["training"][:6] + dl["test"][:1]):
        image, meta = read_image(item["image"])
        write_nifti(image, studies / f"{item['case']}.nii.gz", meta.spacing)
        if n < 6:  # training needs labels in MONAI Label's "final" tag; the last one stays unlabelled
            write_nifti(read_label_map(item["label"]), studies / "labels" / "final" / f"{item['case']}.nii.gz", meta.spacing)
        cases[item["case"]] = {"image": image, "label": item["label"], "parents": item["parents"]}
    return {"root": root, "package": package, "studies": studies, "cases": cases, "structures": structures_of(dl),
            "unlabelled": dl["test"][0]["case"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(workspace) -> Iterator[str]:
    """``monailabel start_server`` on the workspace; yields its URL and always stops it."""
    port = free_port()
    log_path = workspace["root"] / "server.log"
    cmd = [
        sys.executable, "-m", "monailabel.main", "start_server", "--app", str(APP),
        "--studies", str(workspace["studies"]), "--conf", "models", str(workspace["package"]),
        "--conf", "train_dir", str(workspace["root"] / "train"), "--host", "127.0.0.1", "--port", str(port),
    ]
    # The hardest locale for MONAI Label's task pipes: ASCII, UTF-8 mode off, while this server
    # writes its own log as UTF-8 (see main.match_task_output_encoding).
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0",
           "PYTHONIOENCODING": "utf-8"}
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the server exited with {proc.returncode}; log:\n{log_path.read_text(encoding='utf-8')[-6000:]}")
            try:
                if requests.get(f"{url}/info/", timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"/info/ did not answer within {START_TIMEOUT} s; log:\n{log_path.read_text(encoding='utf-8')[-6000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def infer(url: str, model: str, image: str, out_dir: Path, params: dict | None = None) -> tuple[dict, Path]:
    """POST /infer/<model> as MONAI Label clients do; return the result JSON and the result file saved in ``out_dir``."""
    response = requests.post(
        f"{url}/infer/{model}", params={"image": image}, data={"params": json.dumps(params or {})}, timeout=REQUEST_TIMEOUT
    )
    assert response.status_code == 200, response.text
    parts = {}
    for part in MultipartDecoder.from_response(response).parts:
        disposition = part.headers[b"Content-Disposition"].decode()
        fields = dict(f.strip().split("=", 1) for f in disposition.split(";")[1:])
        parts[fields["name"].strip('"')] = (fields.get("filename", "").strip('"'), part.content)
    name, content = parts["image"]
    assert name.endswith(".nii.gz"), f"a NIfTI input should give a NIfTI result, got {name!r}"
    path = out_dir / f"{model}-{image}.nii.gz"
    path.write_bytes(content)
    return json.loads(parts["params"][1]), path


def test_info_lists_the_tasks_and_structures(server, workspace):
    info = requests.get(f"{server}/info/", timeout=REQUEST_TIMEOUT).json()
    assert set(info["models"]) == {"segmentation", "counterfactual"}
    assert set(info["trainers"]) == {"segmentation"}
    assert info["labels"] == workspace["structures"]


def test_segmentation_is_a_label_map_of_the_input_size(server, workspace, tmp_path):
    case = workspace["unlabelled"]
    result, path = infer(server, "segmentation", case, tmp_path)
    labels = read_label_map(path)
    assert labels.shape == workspace["cases"][case]["image"].shape
    assert set(np.unique(labels)) <= {0, *workspace["structures"].values()}
    assert set(result["areas_mm2"]) == set(workspace["structures"])
    assert result["shape"] == list(labels.shape)


def test_labels_return_to_a_non_square_input_grid(workspace, monkeypatch, tmp_path):
    """Pad, resize and back: a perfect prediction at model size lands on the input's pixels, unflipped."""
    monkeypatch.syspath_prepend(str(APP))  # as the server does
    from lib.infers.segmentation import StructureSegmentation

    case = workspace["cases"][workspace["unlabelled"]]
    spacing = (2.0, 3.0)
    image, label = case["image"][:, 12:52], read_label_map(case["label"])[:, 12:52]  # 64 x 40: padded to square
    write_nifti(image, tmp_path / "image.nii.gz", spacing)
    write_nifti(label, tmp_path / "label.nii.gz", spacing)
    task = StructureSegmentation(load_model_package(workspace["package"]), str(tmp_path / "no_fine_tuning.pt"))
    data = {"image": str(tmp_path / "image.nii.gz")}
    for transform in task.pre_transforms(data):
        data = transform(data)
    size = data["image"].shape[-1]
    truth = image_pipeline(size, "cxr")({"image": str(tmp_path / "image.nii.gz"), "label": str(tmp_path / "label.nii.gz")})["label"]
    classes = len(workspace["structures"]) + 1
    data["pred"] = 10 * torch.nn.functional.one_hot(truth[0].as_tensor(), classes).permute(2, 0, 1).float()  # logits
    for transform in task.post_transforms(data):
        data = transform(data)
    assert data["pred"].shape == label.shape
    assert (data["pred"] == label).mean() > 0.9
    assert data["result"]["spacing_mm"] == pytest.approx(spacing)


def factual(workspace, case: str) -> dict[str, float]:
    """The phantom's true areas: the untrained segmentor cannot measure them, the client gives them."""
    return {k: workspace["cases"][case]["parents"][k] for k in LOG_VARS}


def test_counterfactual_has_the_input_geometry_and_the_intervened_parent(server, workspace, tmp_path):
    case = workspace["unlabelled"]
    params = {"do": "left_lung_area=*0.8", "parents": factual(workspace, case)}
    result, path = infer(server, "counterfactual", case, tmp_path, params)
    original = workspace["cases"][case]["image"]
    image, _ = read_image(path)
    assert image.shape == original.shape and np.isfinite(image).all()
    change = np.abs(image - original)
    assert 0 < change.mean() < 0.25  # the untrained image mechanism responds, but leaves an image of the same scene
    assert result["counterfactual_parents"]["left_lung_area"] == pytest.approx(0.8 * params["parents"]["left_lung_area"], rel=1e-4)
    assert result["counterfactual_parents"]["right_lung_area"] == pytest.approx(params["parents"]["right_lung_area"], rel=1e-4)
    assert result["factual_parents"]["left_lung_area"]["source"] == "given"


def test_null_intervention_reproduces_the_input(server, workspace, tmp_path):
    case = workspace["unlabelled"]
    _, path = infer(server, "counterfactual", case, tmp_path, {"do": ["left_lung_area=*1"], "parents": factual(workspace, case)})
    image, _ = read_image(path)
    assert np.abs(image - workspace["cases"][case]["image"]).max() < 1e-4


def test_bad_intervention_is_refused_by_name(server, workspace):
    response = requests.post(
        f"{server}/infer/counterfactual", params={"image": workspace["unlabelled"]},
        data={"params": json.dumps({"do": "spleen_area=*0.8"})}, timeout=REQUEST_TIMEOUT,
    )
    assert response.status_code == 400 and "spleen_area" in response.json()["detail"]


def test_unknown_image_is_refused_by_name(server):
    response = requests.post(f"{server}/infer/segmentation", params={"image": "no_such_case"}, timeout=REQUEST_TIMEOUT)
    assert response.status_code == 404 and "no_such_case" in response.json()["detail"]


def test_training_publishes_a_segmentor_that_inference_uses(server, workspace, tmp_path):
    case = workspace["unlabelled"]
    before, _ = infer(server, "segmentation", case, tmp_path)
    assert before["segmentor_weights"] == "package"
    response = requests.post(f"{server}/train/segmentation", json={"max_epochs": 1, "val_split": 0.2}, timeout=REQUEST_TIMEOUT)
    assert response.status_code == 200, response.text
    deadline = time.monotonic() + TRAIN_TIMEOUT
    while (task := requests.get(f"{server}/train/", timeout=REQUEST_TIMEOUT).json())["status"] not in ("DONE", "ERROR"):
        assert time.monotonic() < deadline, f"training did not finish within {TRAIN_TIMEOUT} s: {task}"
        time.sleep(1)
    assert task["status"] == "DONE", "\n".join(task.get("details", []))
    stats = requests.get(f"{server}/info/", timeout=REQUEST_TIMEOUT).json()["train_stats"]["segmentation"]
    assert stats["total_epochs"] == 1 and 0 <= stats["eval"]["metrics"]["val_mean_dice"] <= 1
    published = workspace["root"] / "train" / "segmentor.pt"
    after, path = infer(server, "segmentation", case, tmp_path)
    assert Path(after["segmentor_weights"]) == published
    assert read_label_map(path).shape == workspace["cases"][case]["image"].shape
