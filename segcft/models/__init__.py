"""Networks as plain ``nn.Module``s: segmentors, regressors and the causal generator."""

from segcft.models.segmentation import SEGMENTOR_ARCHITECTURES, segmentor

__all__ = ["SEGMENTOR_ARCHITECTURES", "segmentor"]
