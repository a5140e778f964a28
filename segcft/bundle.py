"""The names that segcft's MONAI bundle configs use, in one place.

Bundle configs import this module (``"$import segcft.bundle as bundle"``) and wire these parts
together. Everything here is defined elsewhere in the package, except two wiring functions of
the CFT bundles, :func:`load_segmentor_run` and :func:`cft_report`, which only call it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segcft.causal.parents import fit_parent_scm
from segcft.causal.scm import DeepSCM, build_deep_scm, training_parents
from segcft.cft import LagrangeMultiplier
from segcft.cft.engine import CFTTrainer, elbo_bound
from segcft.cft.factory import intervention_sampler, make_guide, regressor_guide, structure_variables
from segcft.cft.recipe import locality_terms
from segcft.data.datalist import load_datalist, structures_of
from segcft.data.transforms import image_pipeline, segmentation_transforms
from segcft.engines import SegmentationWriter, attach_handlers, auto_model, latest_checkpoint, load_inference_inputs
from segcft.engines.generator import (
    CounterfactualEngine,
    CounterfactualWriter,
    HVAEEvaluator,
    HVAETrainer,
    SampleGridHandler,
    ema_model,
    first_batch,
)
from segcft.evaluate import counterfactuals as cfe
from segcft.evaluate.cft import measure_model
from segcft.evaluate.counterfactuals import Judge
from segcft.engines.loading import load_checkpoint
from segcft.measure import AreaErrorMetric, RegionSpec
from segcft.models import segmentor
from segcft.utils import InputError, write_json


def load_segmentor_run(
    run: str | os.PathLike,
    instance: str,
    network: str,
    width: int,
    image_size: int,
    structures: Mapping[str, int],
    device: str | torch.device = "cpu",
    normalise: str = "fixed",
) -> tuple[nn.Module, int]:
    """The ``instance`` (``guide`` or ``eval``) of a segmentor bundle run, from ``models/<instance>/model.pt``, and its image size."""
    path = Path(run) / "models" / instance / "model.pt"
    net = segmentor(network, len(structures) + 1, width=width, normalise=normalise)
    try:
        net.load_state_dict(load_checkpoint(path))
    except RuntimeError as e:
        raise InputError(f"{path}: not a {network!r} segmentor of width {width}, normalisation {normalise!r}, "
                         f"with {len(structures) + 1} classes ({e})") from e
    return net.to(device).eval(), image_size


def cft_report(
    scm: DeepSCM,
    datalist: Mapping,
    image_size: int,
    modality: str,
    judge: Judge,
    out: str | os.PathLike,
    split: str = "test",
    seed: int = 0,
) -> dict[str, Any]:
    """Measure a (fine-tuned) generator on ``split`` with the evaluation segmentor as judge; write JSON to ``out``.

    The measures of ``segcft bench cft`` for one method, plus the judge's noise floor.
    """
    data = cfe.load_split(datalist, split, image_size, modality, scm.variables)
    metric = "mape" if modality == "cxr" else "mae"
    report: dict[str, Any] = {
        "split": split,
        "cases": len(data),
        "variables": scm.variables,
        "effectiveness_metric": "MAPE (%)" if metric == "mape" else "MAE (mm2)",
        "noise_floor": cfe.noise_floor(data, judge, structure_variables(datalist, scm.variables), metric),
        **measure_model(scm, datalist, data, judge, modality, image_size, seed),
    }
    write_json(report, out)
    return report


__all__ = [
    "AreaErrorMetric",
    "CFTTrainer",
    "CounterfactualEngine",
    "CounterfactualWriter",
    "DeepSCM",
    "HVAEEvaluator",
    "HVAETrainer",
    "Judge",
    "LagrangeMultiplier",
    "RegionSpec",
    "SampleGridHandler",
    "SegmentationWriter",
    "attach_handlers",
    "auto_model",
    "build_deep_scm",
    "cft_report",
    "elbo_bound",
    "ema_model",
    "first_batch",
    "fit_parent_scm",
    "image_pipeline",
    "intervention_sampler",
    "latest_checkpoint",
    "load_checkpoint",
    "load_datalist",
    "load_inference_inputs",
    "load_segmentor_run",
    "locality_terms",
    "make_guide",
    "regressor_guide",
    "segmentation_transforms",
    "segmentor",
    "structures_of",
    "training_parents",
]
