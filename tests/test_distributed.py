"""Training bundles under ``torchrun`` with two gloo processes, each with its ``multi_process.json`` on top.

A probe handler records the cases of each rank's first batch and, when training completes,
all-gathers a checksum of the trainable weights (and values that must agree, such as the
validation ELBO and CFT's ``lambda``) and writes them from rank 0. The ranks must have seen
different shards and must end with bit-identical weights.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import ignite.distributed as idist
import pytest
from ignite.engine import Engine, Events
from torch import nn

from segcft.utils import write_json
from tests.conftest import run_python
from tests.test_cft_bundles import config_files, make_setup

REPO = Path(__file__).resolve().parents[1]
BUNDLES = REPO / "bundles"

pytestmark = pytest.mark.usefixtures("one_thread")


class Probe:
    """Each rank's first-batch cases and weight checksums, gathered at ``COMPLETED`` and written by rank 0."""

    def __init__(self, model: nn.Module, out: str, values: Callable[[], dict] = dict) -> None:
        self.model, self.out, self.values = model, out, values

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.record_start)
        engine.add_event_handler(Events.ITERATION_STARTED(once=1), self.record_cases)
        engine.add_event_handler(Events.COMPLETED, self.gather)

    def checksum(self) -> str:
        weights = hashlib.sha256()
        for p in self.model.parameters():
            if p.requires_grad:
                weights.update(p.detach().cpu().numpy().tobytes())
        return weights.hexdigest()

    def record_start(self, engine: Engine) -> None:
        self.start = self.checksum()

    def record_cases(self, engine: Engine) -> None:
        self.cases = list(engine.state.batch["case"])

    def gather(self, engine: Engine) -> None:
        mine = {"start": self.start, "weights": self.checksum(), "cases": self.cases,
                "values": {k: repr(v) for k, v in self.values().items()}}
        ranks = idist.all_gather(mine)
        if idist.get_rank() == 0:
            write_json(ranks, self.out)


def torchrun(bundle: str, configs: list[str], out: Path, model: str, values: str, **overrides) -> list[dict]:
    """Train ``bundle`` under ``torchrun --nproc_per_node 2`` with its ``multi_process.json`` and the probe; the ranks' records.

    ``configs`` come first (the bundle's ``train.json`` last), ``model`` names the trained
    model and ``values`` is an expression for the values that must agree across ranks.
    """
    folder = BUNDLES / bundle / "configs"
    run = json.loads((folder / "train.json").read_text(encoding="utf-8"))["run"]
    probe = {  # the bundle's run, with the probe attached before the trainer runs
        "probe": {"_target_": "tests.test_distributed.Probe", "model": model, "out": str(out), "values": values},
        "run": [*run[:-1], "$@probe.attach(@train#trainer)", run[-1]],
    }
    (out.parent / "probe.json").write_text(json.dumps(probe), encoding="utf-8")
    files = str([*configs, str(folder / "multi_process.json"), str(out.parent / "probe.json")])
    args = [a for k, v in overrides.items() for a in (f"--{k}", v if isinstance(v, str) else repr(v))]
    run_python("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "monai.bundle", "run", "--config_file", files, *args)
    return json.loads(out.read_text(encoding="utf-8"))


def check_ranks(ranks: list[dict], root: Path) -> None:
    """Both ranks trained, on different cases, to the same weights; only rank 0 wrote TensorBoard logs."""
    assert len(ranks) == 2 and ranks[0]["start"] == ranks[1]["start"]
    assert ranks[0]["weights"] != ranks[0]["start"]  # the weights moved
    assert not set(ranks[0]["cases"]) & set(ranks[1]["cases"])  # different shards
    assert ranks[0]["weights"] == ranks[1]["weights"]  # bit-identical after training
    assert ranks[0]["values"] == ranks[1]["values"]
    writers = {p.name.split(".")[-2] for p in root.rglob("events.out.tfevents.*")}  # ...<host>.<pid>.<n>
    assert len(writers) == 1


@pytest.fixture(autouse=True)
def in_repo(monkeypatch):
    """The workers import this module's ``Probe`` from the working directory."""
    monkeypatch.chdir(REPO)


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    """Chest phantom, a base generator and untrained segmentors (the CFT bundle tests' setup); no device override."""
    setup = make_setup(tmp_path_factory.mktemp("distributed"), "cxr", 4, {})
    setup["overrides"].pop("device")  # multi_process.json chooses it per rank
    return setup


def test_generator_ranks_train_identical_weights_on_different_shards(setup):
    root = setup["root"] / "generator"
    root.mkdir()
    configs = [str(BUNDLES / "cxr_generator/configs" / name) for name in ("train.json", "phantom.json")]
    generator = {k: setup["overrides"][k] for k in ("datalist", "image_size", "stages", "batch_size", "progress")}
    ranks = torchrun("cxr_generator", configs, root / "ranks.json", "@scm",
                     "$lambda: {'val_elbo': @validate#evaluator.state.metrics['val_elbo']}",
                     bundle_root=str(root), epochs=2, parent_steps=5, val_interval=1, **generator)
    check_ranks(ranks, root)
    assert {"model.pt", "final.pt", "checkpoint_epoch=2.pt"} <= {p.name for p in (root / "models").iterdir()}
    assert list((root / "eval" / "samples").glob("*.png"))


def test_cft_ranks_share_weights_eps_and_lambda(setup):
    root = setup["root"] / "cft"
    root.mkdir()
    # eps_slack < 0 violates the constraint from the start, so lambda moves with the ELBO
    ranks = torchrun("cxr_cft", config_files("cxr", "train.json"), root / "ranks.json", "@model",
                     "$lambda: {'eps': @train#trainer.eps, 'lambda': float(@lagrange.value)}",
                     bundle_root=str(root), steps=3, eps_slack=-5.0, **setup["overrides"])
    check_ranks(ranks, root)
    assert float(ranks[0]["values"]["lambda"]) > 0
    assert {"model.pt", "final.pt", "checkpoint_epoch=3.pt"} <= {p.name for p in (root / "models").iterdir()}


def test_segmentor_ranks_train_identical_weights_on_different_shards(setup):
    root = setup["root"] / "segmentor"
    root.mkdir()
    ranks = torchrun("cxr_segmentor", [str(BUNDLES / "cxr_segmentor/configs/train.json")], root / "ranks.json", "@network",
                     "$lambda: {'val_mean_dice': @validate#evaluator.state.metrics['val_mean_dice']}",
                     bundle_root=str(root), datalist=setup["overrides"]["datalist"], epochs=1, image_size=32,
                     width=4, batch_size=4, progress=False)
    check_ranks(ranks, root)
    assert (root / "models" / "guide" / "model.pt").is_file()
