"""``segcft bench speed``: training and counterfactual throughput of a trained generator, per precision.

A GPU figure means little without its precision and memory. This measures, on the test
images of a datalist: HVAE training steps (forward, backward, update on a copy of the model)
and counterfactuals per second, in float32 and under bfloat16 autocast, each with its peak
accelerator memory. While it runs, every module checks that the tensors entering it are on
its own parameters' device: the report counts the modules checked and lists any tensor that
arrived elsewhere, so a silent CPU fallback on CUDA shows.
"""

from __future__ import annotations

import copy
import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from segcft.data.datalist import load_datalist
from segcft.engines.generator import Precision
from segcft.engines.loading import bundle_for, generator_config_files, load_generator
from segcft.evaluate import counterfactuals as cfe
from segcft.utils import InputError, write_json

MODES = {"float32": False, "bfloat16": True}


class DeviceCheck:
    """Forward pre-hooks on every module with parameters: tensors entering it must be on its device."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.checked: set[str] = set()
        self.mismatches: list[str] = []
        self.handles = [m.register_forward_pre_hook(self._hook(name, m)) for name, m in model.named_modules()
                        if any(True for _ in m.parameters(recurse=False))]

    def _hook(self, name: str, module: torch.nn.Module):
        device = next(module.parameters(recurse=False)).device

        def check(_, args) -> None:
            self.checked.add(name)
            for t in args:
                if isinstance(t, torch.Tensor) and t.device != device and len(self.mismatches) < 20:
                    self.mismatches.append(f"{name}: input on {t.device}, weights on {device}")
        return check

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def bench_speed(
    datalist: str | os.PathLike,
    run_dir: str | os.PathLike,
    out: str | os.PathLike,
    device: str = "cpu",
    overrides: Mapping[str, Any] | None = None,
    config_files: Sequence[str | os.PathLike] = (),
    batch_size: int = 16,
    repeats: int = 3,
    command: str | None = None,
) -> dict[str, Any]:
    """Measure the generator of ``run_dir`` in float32 and bfloat16; write and return the report."""
    dl = load_datalist(datalist)
    files = generator_config_files(bundle_for(dl, "generator"), dl) + [str(f) for f in config_files]
    settings = {**(overrides or {}), "bundle_root": str(Path(run_dir).resolve()), "datalist": str(datalist), "device": device}
    if not (Path(run_dir) / "models" / "model.pt").is_file():
        raise InputError(f"{run_dir}: no models/model.pt; train the generator first")
    parser, ema = load_generator(files, settings)
    scm = ema.module
    dev = torch.device(device)
    size, modality = parser.get_parsed_content("image_size"), parser.get_parsed_content("modality")
    variables = parser.get_parsed_content("variables")
    data = cfe.load_split(dl, "test", size, modality, variables)
    x = data.images[:batch_size].to(dev).as_subclass(torch.Tensor)
    pa = {k: v[:batch_size].to(dev).as_subclass(torch.Tensor) for k, v in data.parents.items()}
    report: dict[str, Any] = {
        "benchmark": "speed", "command": command, "datalist": str(datalist), "run_dir": settings["bundle_root"],
        "device": str(dev), "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__},
        "image_size": size, "preset": parser.get_parsed_content("preset"), "batch_size": int(x.shape[0]), "modes": {},
    }
    check = DeviceCheck(scm)
    for mode, amp in MODES.items():
        precision = Precision(amp=amp)
        model = copy.deepcopy(scm).train()
        optimizer = torch.optim.AdamW(model.image.parameters(), lr=1e-6)
        mode_check = DeviceCheck(model)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)

        def train_step() -> int:
            optimizer.zero_grad(set_to_none=True)
            with precision.autocast(dev):
                loss = model.image(x, model.condition(pa))["loss"]
            loss.float().backward()
            optimizer.step()
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            return x.shape[0]

        def counterfactual_step() -> int:
            with torch.no_grad(), precision.autocast(dev):
                scm.counterfactual(x, pa, {}, use_mean=True)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            return x.shape[0]

        report["modes"][mode] = {
            "train_images_per_second": cfe.images_per_second(train_step, repeats),
            "counterfactual_images_per_second": cfe.images_per_second(counterfactual_step, repeats),
            "peak_memory_mib": round(torch.cuda.max_memory_allocated(dev) / 2**20, 1) if dev.type == "cuda" else None,
        }
        check.checked |= mode_check.checked
        check.mismatches += mode_check.mismatches
        mode_check.remove()
    check.remove()
    report["device_check"] = {"modules_checked": len(check.checked), "mismatches": check.mismatches}
    fp32, bf16 = (report["modes"][m]["train_images_per_second"] for m in MODES)
    report["bf16_over_fp32_train"] = round(bf16 / fp32, 3) if fp32 else None
    write_json(report, out)
    return report
