"""The names that segcft's MONAI bundle configs use, in one place.

Bundle configs import this module (``"$import segcft.bundle as bundle"``) and wire these parts
together; everything here is defined elsewhere in the package.
"""

from segcft.data.datalist import load_datalist, structures_of
from segcft.data.transforms import image_pipeline, segmentation_transforms
from segcft.engines import SegmentationWriter, attach_handlers, auto_model, latest_checkpoint, load_inference_inputs
from segcft.measure import AreaErrorMetric, RegionSpec
from segcft.models import segmentor

__all__ = [
    "AreaErrorMetric",
    "RegionSpec",
    "SegmentationWriter",
    "attach_handlers",
    "auto_model",
    "image_pipeline",
    "latest_checkpoint",
    "load_datalist",
    "load_inference_inputs",
    "segmentation_transforms",
    "segmentor",
    "structures_of",
]
