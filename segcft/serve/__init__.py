"""Inference for users: self-contained model packages and counterfactuals of image files."""

from segcft.serve.counterfactual import counterfactual_files, expand_inputs
from segcft.serve.package import (
    MANIFEST,
    ModelPackage,
    export_from_runs,
    load_model_package,
    package_from_scm,
    save_model_package,
)

__all__ = [
    "MANIFEST",
    "ModelPackage",
    "counterfactual_files",
    "expand_inputs",
    "export_from_runs",
    "load_model_package",
    "package_from_scm",
    "save_model_package",
]
