"""``segcft bench generator``: the plain causal generator (no fine-tuning), measured.

The model is built by the generator bundle's own config and loaded from its best EMA
checkpoint (trained through the same config if there is none yet). Effectiveness is judged
by the evaluation segmentor of ``segcft bench segmentor`` (another architecture and seed
than the guide), at that segmentor's resolution. Whether the model uses its parents shows in
the dose-response slope (judged change / requested change, per variable; 0 for a model that
ignores them) and in the KL of each latent level.
"""

from __future__ import annotations

import copy
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigWorkflow

from segcft.cft.factory import structure_variables
from segcft.data.datalist import load_datalist, structures_of
from segcft.data.phantom import phantom_from_datalist
from segcft.evaluate import counterfactuals as cfe
from segcft.engines.loading import bundle_for, generator_config_files, load_generator, load_segmentor
from segcft.utils import write_json


#: Requested relative changes (%) of the plain model's dose-response, whose slope is reported.
DOSE_CHANGES = (-20.0, -10.0, 10.0, 20.0)


def load_judge(report_path: str | os.PathLike, structures: dict[str, int], device: torch.device) -> cfe.Judge:
    """The evaluation segmentor of a ``segcft bench segmentor`` report, as the judge of counterfactuals."""
    network, size = load_segmentor(report_path, "eval", structures, device)
    return cfe.Judge(network, structures, size)


def bench_generator(
    datalist: str | os.PathLike,
    out: str | os.PathLike,
    *,
    run_dir: str | os.PathLike,
    judge_report: str | os.PathLike,
    bundle: str | os.PathLike | None = None,
    epochs: int | None = None,
    device: str = "cpu",
    seed: int = 0,
    command: str | None = None,
    config_overrides: dict[str, Any] | None = None,
    config_files: Sequence[str | os.PathLike] = (),
) -> dict[str, Any]:
    """Measure the generator in ``run_dir`` on the test split; write and return the report.

    ``config_overrides`` are applied to the bundle config as ``monai.bundle run`` would.
    """
    torch.manual_seed(seed)
    datalist = Path(datalist).resolve()
    dl = load_datalist(datalist)
    bundle = Path(bundle) if bundle else bundle_for(dl, "generator")
    files = generator_config_files(bundle, dl, extra=config_files)
    overrides = {
        **(config_overrides or {}),
        "bundle_root": str(Path(run_dir).resolve()),
        "datalist": str(datalist),
        "device": device,
        "seed": seed,
    }
    report: dict[str, Any] = {
        "benchmark": "generator",
        "command": command,
        "datalist": str(datalist),
        "bundle": str(bundle),
        "run_dir": overrides["bundle_root"],
        "judge": str(judge_report),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        "seed": seed,
    }
    if not (Path(run_dir) / "models" / "model.pt").is_file():
        wf = ConfigWorkflow(config_file=files, meta_file=None, logging_file=False, **overrides, **({"epochs": epochs} if epochs else {}))
        wf.initialize()
        start = time.perf_counter()
        wf.run()
        report["train_seconds"] = round(time.perf_counter() - start, 1)
        wf.finalize()
    parser, ema = load_generator(files, overrides)
    scm = ema.module
    variables = parser.get_parsed_content("variables")
    size, modality = parser.get_parsed_content("image_size"), parser.get_parsed_content("modality")
    data = cfe.load_split(dl, "test", size, modality, variables)
    judge = load_judge(judge_report, structures_of(dl), torch.device(device))
    structure_of = structure_variables(dl, variables)
    metric = "mape" if modality == "cxr" else "mae"
    report.update({
        "variables": variables,
        "image_size": size,
        # the training engine's precision and memory format, as the bundle config sets them
        "precision": {"amp": "bfloat16" if parser.get_parsed_content("amp") else False,
                      "channels_last": bool(parser.get_parsed_content("channels_last"))},
        "hvae": parser.get_parsed_content("hvae"),
        "kl": {k: parser.get_parsed_content(k) for k in ("kl_weight", "kl_warmup_steps") if k in parser},
        "test_cases": len(data),
        "effectiveness_metric": "MAPE (%)" if metric == "mape" else "MAE (mm2)",
        **cfe.test_elbo(scm, data),
        "composition_max_abs": cfe.composition_error(scm, data),
        "reconstruction": cfe.reconstruction_quality(scm, data),
        "reversibility": cfe.reversibility_error(scm, data, list(structure_of)),
        "noise_floor": cfe.noise_floor(data, judge, structure_of, metric),
        "effectiveness": cfe.effectiveness(scm, data, judge, structure_of, metric, seed),
        "kl_per_level": cfe.kl_per_level(scm, data),
    })
    curves = {name: cfe.dose_response(scm, data, judge, name, structure, DOSE_CHANGES) for name, structure in structure_of.items()}
    report["dose_response"] = {"curves": curves, "slope": {name: cfe.dose_slope(c) for name, c in curves.items()}}
    if scm.spatial is None:
        means = {name: cfe.decoder_dose_response(scm, data, judge, name, structure, DOSE_CHANGES) for name, structure in structure_of.items()}
        report["decoder_dose_response"] = {"curves": means, "slope": {name: cfe.dose_slope(c) for name, c in means.items()}}
    if "phantom" in dl:
        report["ground_truth"] = cfe.ground_truth_error(
            scm, data, phantom_from_datalist(dl), structure_of, judge, modality, size
        )
    report["counterfactual_images_per_second"] = cfe.images_per_second(
        lambda: len(cfe.counterfactual_images(scm, data, {})), repeats=2
    )
    report["train_images_per_second"] = _train_throughput(scm, data)
    write_json(report, out)
    return report


def _train_throughput(scm, data: cfe.EvalData, batch_size: int = 16) -> float:
    """Images per second of HVAE training steps (forward, backward, update) on a copy of the model."""
    model = copy.deepcopy(scm).train()
    optimizer = torch.optim.AdamW(model.image.parameters(), lr=1e-5)
    device = model.cond_mean.device
    x = data.images[:batch_size].to(device)
    cond = model.condition({k: v[:batch_size].to(device) for k, v in data.parents.items()})

    def step() -> int:
        optimizer.zero_grad()
        model.image(x, cond)["loss"].backward()
        optimizer.step()
        return x.shape[0]

    return cfe.images_per_second(step, repeats=3)
