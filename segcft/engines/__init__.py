"""Ignite engine parts that MONAI does not ship: resume lookup and fault-tolerant inference I/O."""

from segcft.engines.checkpoint import latest_checkpoint
from segcft.engines.distributed import attach_handlers, auto_model
from segcft.engines.inference import SegmentationWriter, load_inference_inputs

__all__ = ["SegmentationWriter", "attach_handlers", "auto_model", "latest_checkpoint", "load_inference_inputs"]
