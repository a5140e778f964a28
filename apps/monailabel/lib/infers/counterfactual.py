"""Counterfactual images: segcft's serve layer on one datastore image, returned in the input's format."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from lib.errors import input_errors_as_http
from segcft.serve import ModelPackage, counterfactual_files
from segcft.utils import InputError

DEFAULTS: dict[str, Any] = {"do": "", "parents": {}, "particles": 1, "seed": 0}


def do_specs(value: Any) -> list[str]:
    """The ``do`` request parameter: a list of specs, or one string of comma-separated specs."""
    if isinstance(value, str):
        specs = [s.strip() for s in value.split(",")]
    elif isinstance(value, Sequence) and all(isinstance(s, str) for s in value):
        specs = [s.strip() for s in value]
    else:
        raise InputError(f"request parameter 'do' must be a string or a list of strings, got {value!r}")
    specs = [s for s in specs if s]
    if not specs:
        raise InputError("request parameter 'do' is empty; give e.g. {\"do\": \"left_lung_area=*0.8\"}")
    return specs


def int_param(request: Mapping[str, Any], name: str) -> int:
    """An integer request parameter; anything else is refused by name."""
    try:
        return int(request[name])
    except (TypeError, ValueError) as e:
        raise InputError(f"request parameter {name!r} must be an integer, got {request[name]!r}") from e


class CounterfactualInfer(InferTask):
    """``do()`` on the image's parents; returns the counterfactual image at the input's geometry.

    Request parameters: ``do`` (``"left_lung_area=*0.8"``, several as a list or comma-separated),
    optional ``parents`` (factual values that override the measured or assumed ones),
    ``particles`` and ``seed``. The result JSON holds the factual and counterfactual parents.
    """

    def __init__(self, pkg: ModelPackage) -> None:
        super().__init__(
            type=InferType.OTHERS,
            labels=None,
            dimension=2,
            description=f"{pkg.modality} counterfactual image of do(...) on {', '.join(pkg.variables)}",
            config=dict(DEFAULTS),
        )
        self.pkg = pkg

    def is_valid(self) -> bool:
        return True

    def __call__(self, request: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        req = {**self._config, **request}
        with input_errors_as_http():
            if not isinstance(req.get("image"), str):
                raise InputError("the counterfactual task needs an image file or datastore id, not an array")
            parents = req["parents"]
            if not isinstance(parents, Mapping):
                raise InputError(f"request parameter 'parents' must be an object of variable values, got {parents!r}")
            specs = do_specs(req["do"])
            with tempfile.TemporaryDirectory(prefix="segcft-cf-") as tmp:
                summary = counterfactual_files(
                    self.pkg, [req["image"]], specs, tmp, particles=int_param(req, "particles"),
                    parents=parents, seed=int_param(req, "seed"), progress=False,
                )
                if summary["failed"]:
                    raise InputError(summary["failed"][0]["error"])
                result = summary["results"][0]
                produced = Path(result["outputs"]["counterfactual"])
                suffix = ".nii.gz" if produced.name.endswith(".nii.gz") else produced.suffix
                with tempfile.NamedTemporaryFile(suffix=suffix, delete=False) as f:
                    path = f.name
                shutil.move(produced, path)
        info = {k: v for k, v in result.items() if k not in ("input", "outputs")}
        return path, {"do": specs, "particles": summary["particles"], "seed": summary["seed"], **info}
