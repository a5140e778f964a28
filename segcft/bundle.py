"""The names that segcft's MONAI bundle configs use, in one place.

Bundle configs import this module (``"$import segcft.bundle as bundle"``) and wire these parts
together; everything here is defined elsewhere in the package.
"""

from segcft.causal.parents import fit_parent_scm
from segcft.causal.scm import DeepSCM, build_deep_scm, training_parents
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
from segcft.measure import AreaErrorMetric, RegionSpec
from segcft.models import segmentor

__all__ = [
    "AreaErrorMetric",
    "CounterfactualEngine",
    "CounterfactualWriter",
    "DeepSCM",
    "HVAEEvaluator",
    "HVAETrainer",
    "RegionSpec",
    "SampleGridHandler",
    "SegmentationWriter",
    "attach_handlers",
    "auto_model",
    "build_deep_scm",
    "ema_model",
    "first_batch",
    "fit_parent_scm",
    "image_pipeline",
    "latest_checkpoint",
    "load_datalist",
    "load_inference_inputs",
    "segmentation_transforms",
    "segmentor",
    "structures_of",
    "training_parents",
]
