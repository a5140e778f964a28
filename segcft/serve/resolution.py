"""``segcft bench fullres``: the serving path's counterfactuals at an input's own resolution, against a phantom's truth.

A model works at its own size (64 px); a user's image is larger. The phantoms are defined in
millimetres, so the same case (its stored exogenous noise) renders at any size, and so does
its true counterfactual. Each test case of a phantom datalist is rendered at ``size``, written
as a DICOM, and given to :func:`~segcft.serve.counterfactual.counterfactual_files` twice:
moving the boundaries at the input's grid (``full_resolution``) and adding the resampled
model-size change. Both outputs are read back from the files the user would get and compared
with the true counterfactual rendered at ``size``: the mean abs error over the image, over the
pixels whose true label changes, and that of returning the input unchanged.
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segcft.data.datalist import load_datalist
from segcft.data.phantom import make_phantom, phantom_from_datalist
from segcft.data.transforms import image_pipeline
from segcft.figures import counterfactual_grid
from segcft.serve.counterfactual import counterfactual_files
from segcft.serve.package import load_model_package
from segcft.utils import InputError, write_json

MODES = {"input grid": True, "model size, resampled": False}


def bench_resolution(
    model: str | os.PathLike,
    datalist: str | os.PathLike,
    out: str | os.PathLike,
    size: int = 256,
    cases: int = 8,
    changes: Sequence[float] = (-25.0, 25.0),
    seed: int = 0,
    device: str = "cpu",
    command: str | None = None,
) -> dict[str, Any]:
    """Compare both serving modes with the truth on ``cases`` test cases at ``size`` px; write the JSON report.

    A figure of the first case (``<out>.png``: the input, the truth, both modes, each with its
    difference map) is written beside it. Interventions the model or the phantom refuses
    (outside its support) are counted and skipped.
    """
    pkg = load_model_package(model, device)
    if pkg.scm.mechanism != "spatial":
        raise InputError(f"{model}: this model decodes x* (the direct HVAE); only a spatial model has a full-resolution path")
    dl = load_datalist(datalist)
    kind = phantom_from_datalist(dl).kind
    hi = make_phantom(kind, size)
    variables = list(pkg.scm.spatial.settings.structure_of)
    test = dl["test"][:cases]
    if not test:
        raise InputError(f"{datalist}: no test cases")
    load = image_pipeline(pkg.image_size, pkg.modality, with_label=False)
    read = lambda p: load({"image": str(p)}, end=1)["image"][0].as_tensor().float().numpy()  # noqa: E731
    rows: dict[str, dict[str, dict[str, list[float]]]] = {}
    refused, figure_row, seconds = 0, None, {m: [] for m in MODES}
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        for item in test:
            noise, case = item["noise"], item["case"]
            parents = hi.parents_from_noise(noise)
            image, label = hi.render(noise, parents)
            source = tmp / f"{case}.dcm"
            hi.write_image(image, source, case, parents)
            factual = read(source)
            given = {v: parents[v] for v in pkg.variables if v in parents}
            for v in variables:
                for change in changes:
                    value = parents[v] * (1 + change / 100)
                    try:  # the phantom's own support: its truth does not exist outside it
                        truth_image, truth_label, truth_parents = hi.counterfactual(noise, {v: value})
                    except InputError:
                        refused += 1
                        continue
                    truth_path = tmp / f"{case}_truth.dcm"
                    hi.write_image(truth_image, truth_path, case, truth_parents)
                    truth = read(truth_path)
                    changed = label != truth_label
                    outputs = {}
                    for mode, full in MODES.items():
                        start = time.perf_counter()
                        summary = counterfactual_files(pkg, [source], [f"{v}=*{1 + change / 100:g}"], tmp / mode, parents=given,
                                                       seed=seed, progress=False, full_resolution=full)
                        seconds[mode].append(time.perf_counter() - start)
                        if summary["failed"]:
                            refused += 1
                            break
                        outputs[mode] = read(summary["results"][0]["outputs"]["counterfactual"])
                    if len(outputs) != len(MODES):
                        continue
                    entry = rows.setdefault(v, {}).setdefault(f"{change:+g}%", {})
                    for mode, result in {"unchanged": factual, **outputs}.items():
                        entry.setdefault(mode, []).append(float(np.abs(result - truth).mean()))
                        entry.setdefault(f"{mode}, changed pixels", []).append(
                            float(np.abs(result - truth)[changed].mean()) if changed.any() else 0.0)
                    if figure_row is None:
                        figure_row = {"label": f"{case}: {v} {change:+g}%", "original": factual,
                                      "counterfactuals": {"truth": truth, **outputs}}
    if figure_row is None:
        raise InputError(f"{model}: every intervention was refused; nothing to compare")
    table = {v: {c: {k: round(statistics.fmean(x), 5) for k, x in e.items()} | {"n": len(e["unchanged"])}
                 for c, e in per.items()} for v, per in rows.items()}
    report = {
        "benchmark": "fullres", "command": command, "model": str(model), "datalist": str(datalist),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()}, "seed": seed,
        "size": size, "model_size": pkg.image_size, "cases": len(test), "refused": refused,
        "units": "display intensity in [0, 1], as the files are read",
        "seconds_per_image": {m: round(statistics.fmean(s), 3) for m, s in seconds.items() if s},
        "error": table,
    }
    write_json(report, out)
    counterfactual_grid([figure_row], Path(out).with_suffix(".png"), title=f"{size} px input, {pkg.image_size} px model")
    return report

