"""``segcft bench segmentor``: train (or reuse) the segmentor bundle and measure it.

The benchmark drives the bundle's own ``train.json`` and ``evaluate.json`` through MONAI's
``ConfigWorkflow``, so it measures exactly what a user runs. On the test split it reports
Dice per structure and the area error per structure against the true masks (MAPE, and
MAE in mm^2): the noise floor of every later effectiveness number.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigWorkflow

from segcft.data.datalist import load_datalist, structures_of
from segcft.engines.loading import bundle_for
from segcft.utils import write_json


def _workflow(bundle: Path, config: str, overrides: dict[str, Any]) -> ConfigWorkflow:
    wf = ConfigWorkflow(
        config_file=str(bundle / "configs" / config),
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=str(bundle / "configs" / "logging.conf"),
        workflow_type="train" if config == "train.json" else "infer",
        **overrides,
    )
    wf.initialize()
    return wf


def _per_structure(values: torch.Tensor, names: Sequence[str]) -> dict[str, float]:
    return {name: round(float(v), 4) for name, v in zip(names, values.flatten().tolist())}


def bench_segmentor(
    datalist: str | os.PathLike,
    out: str | os.PathLike,
    *,
    work_dir: str | os.PathLike,
    bundle: str | os.PathLike | None = None,
    instances: Sequence[str] = ("guide", "eval"),
    image_size: int | None = None,
    epochs: int | None = None,
    device: str | None = None,
    seed: int = 0,
    reuse: bool = False,
    progress: bool = True,
    command: str | None = None,
    config_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train/evaluate each segmentor instance on ``datalist``; write and return the report.

    ``config_overrides`` set bundle keys (e.g. ``normalise``, ``augmentation``) in every
    instance's training and evaluation configs.
    """
    datalist = Path(datalist).resolve()
    dl = load_datalist(datalist)
    bundle = Path(bundle) if bundle else bundle_for(dl)
    names = list(structures_of(dl))
    overrides: dict[str, Any] = {**(config_overrides or {}), "bundle_root": str(Path(work_dir).resolve()), "datalist": str(datalist)}
    if image_size:
        overrides["image_size"] = image_size
    if device:
        overrides["device"] = device
    report: dict[str, Any] = {
        "benchmark": "segmentor",
        "command": command,
        "datalist": str(datalist),
        "bundle": str(bundle),
        "work_dir": overrides["bundle_root"],
        "cases": {split: len(dl[split]) for split in ("training", "validation", "test")},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "cuda": torch.cuda.is_available()},
        "seed": seed,
        "config_overrides": dict(config_overrides or {}),
        "instances": {},
    }
    for offset, instance in enumerate(instances):
        run = {**overrides, "instance": instance, "progress": progress}
        ckpt = Path(overrides["bundle_root"]) / "models" / instance / "model.pt"
        entry: dict[str, Any] = {}
        if not (reuse and ckpt.is_file()):
            train_overrides = {**run, "seed": seed + offset, "resume": False}
            if epochs:
                train_overrides["epochs"] = epochs
            wf = _workflow(bundle, "train.json", train_overrides)
            trainer = wf.parser.get_parsed_content("train#trainer")
            entry["precision"] = {"amp": "bfloat16" if wf.parser.get_parsed_content("amp") else False, "channels_last": False}
            start = time.perf_counter()
            wf.run()
            entry["train_seconds"] = round(time.perf_counter() - start, 1)
            entry["epochs_run"] = int(trainer.state.epoch)
            entry["augmentation"] = wf.parser.get_parsed_content("augmentation")
            entry["best_val_mean_dice"] = round(float(trainer.state.best_metric), 4) if trainer.state.best_metric else None
            wf.finalize()
        wf = _workflow(bundle, "evaluate.json", {**run, "split": "test", "output_dir": str(Path(work_dir) / "eval" / instance)})
        evaluator = wf.parser.get_parsed_content("evaluator")
        wf.run()
        metrics = evaluator.state.metrics
        speed, spacings = _throughput(wf)
        entry.update(speed)
        entry["network"] = wf.parser.get_parsed_content("network_name")
        entry["image_size"] = wf.parser.get_parsed_content("image_size")
        entry["width"] = wf.parser.get_parsed_content("width")
        entry["normalise"] = wf.parser.get_parsed_content("normalise")
        entry["test_dice"] = _per_structure(metrics["test_dice"], names)
        entry["test_area_mape_percent"] = _per_structure(metrics["test_area_ape"], names)
        if len(spacings) == 1:  # one spacing at model resolution: pixel errors convert exactly
            row, col = next(iter(spacings))
            entry["test_area_mae_mm2"] = _per_structure(metrics["test_area_ae_px"] * row * col, names)
        entry["test_mean_dice"] = round(float(metrics["test_mean_dice"]), 4)
        report["instances"][instance] = entry
        wf.finalize()
    write_json(report, out)
    return report


@torch.no_grad()
def _throughput(wf: ConfigWorkflow) -> tuple[dict[str, float], set[tuple[float, ...]]]:
    """Images per second of the network over the test loader (after a warm-up batch), and the spacings seen."""
    network = wf.parser.get_parsed_content("network")
    loader = wf.parser.get_parsed_content("dataloader")
    device = torch.device(wf.parser.get_parsed_content("device"))
    network.eval()
    loaded = list(loader)
    spacings = {tuple(round(v, 6) for v in s.tolist()) for b in loaded for s in b["spacing"]}
    batches = [b["image"].to(device) for b in loaded]
    network(batches[0])
    start = time.perf_counter()
    n = 0
    for images in batches:
        network(images)
        n += images.shape[0]
    elapsed = time.perf_counter() - start
    speed = {"inference_images_per_second": round(n / elapsed, 1), "inference_batch_size": int(batches[0].shape[0])}
    return speed, spacings
