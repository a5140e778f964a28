"""Inference tasks: structure segmentation and counterfactual images."""

from lib.infers.counterfactual import CounterfactualInfer
from lib.infers.segmentation import StructureSegmentation

__all__ = ["CounterfactualInfer", "StructureSegmentation"]
