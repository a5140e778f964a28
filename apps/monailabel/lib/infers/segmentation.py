"""Structure segmentation with the model package's segmentor, returned on the input's own pixel grid."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask

from lib.errors import input_errors_as_http
from segcft.data.io import write_nifti, write_png
from segcft.data.transforms import image_pipeline, spacing_of
from segcft.measure import hard_areas
from segcft.serve import ModelPackage
from segcft.serve.counterfactual import to_input_grid

INPUT_GRID = "input_grid"


class RememberInputGrid:
    """Record the freshly loaded image's affine, shape and spacing under ``input_grid``."""

    def __call__(self, data: Mapping[str, Any]) -> dict:
        d = dict(data)
        image = d["image"]
        d[INPUT_GRID] = {
            "affine": image.affine.clone(),
            "shape": tuple(image.shape[-2:]),
            "spacing": tuple(float(s) for s in spacing_of(image)),
        }
        return d


class LabelsOnInputGrid:
    """Class probabilities at model size, resampled onto the input grid, then argmax; areas in ``result``."""

    def __init__(self, structures: Mapping[str, int]) -> None:
        self.structures = dict(structures)

    def __call__(self, data: Mapping[str, Any]) -> dict:
        d = dict(data)
        grid = d[INPUT_GRID]
        probs = torch.softmax(torch.as_tensor(d["pred"]).float(), 0)
        resampled = torch.stack([to_input_grid(p, d["image"].affine, grid["affine"], grid["shape"]) for p in probs])
        labels = resampled.argmax(0).to(torch.uint8)
        areas = hard_areas(labels[None], self.structures, torch.tensor([grid["spacing"]]))
        d["pred"] = labels.numpy()
        d["result"] = {
            "shape": list(grid["shape"]),
            "spacing_mm": list(grid["spacing"]),
            "spacing_source": d["image"].meta["spacing_source"],
            "areas_mm2": {name: round(float(a["mm2"][0]), 3) for name, a in areas.items()},
            "areas_px": {name: int(a["px"][0]) for name, a in areas.items()},
        }
        return d


class StructureSegmentation(BasicInferTask):
    """The package's segmentor (or its fine-tuned weights at ``path``, once trained) on one image.

    The image goes through segcft's own preprocessing at the segmentor's size; the label map
    comes back at the input's size: PNG for PNG inputs, else NIfTI with the input's spacing.
    """

    def __init__(self, pkg: ModelPackage, path: str) -> None:
        super().__init__(
            path=path,
            network=pkg.segmentor,
            type=InferType.SEGMENTATION,
            labels=pkg.structures,
            dimension=2,
            description=f"{pkg.modality} structures ({', '.join(pkg.structures)}) by the segcft segmentor",
        )
        self.pkg = pkg

    def __call__(self, request, callbacks=None):
        with input_errors_as_http():
            return super().__call__(request, callbacks)

    def pre_transforms(self, data=None) -> Sequence[Callable]:
        size = int(self.pkg.manifest["segmentor"]["image_size"])
        load, *rest = image_pipeline(size, self.pkg.modality, with_label=False).transforms
        return [load, RememberInputGrid(), *rest]

    def post_transforms(self, data=None) -> Sequence[Callable]:
        return [LabelsOnInputGrid(self.pkg.structures)]

    def writer(self, data, extension=None, dtype=None):
        png = data["image"].meta["format"] == "png"
        with tempfile.NamedTemporaryFile(suffix=".png" if png else ".nii.gz", delete=False) as f:
            path = f.name
        if png:
            write_png(data["pred"], path)
        else:
            write_nifti(data["pred"], path, data[INPUT_GRID]["spacing"])
        return path, {**data["result"], "segmentor_weights": self.get_path() or "package"}
