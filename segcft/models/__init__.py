"""Networks as plain ``nn.Module``s: segmentors and the conditional HVAE image mechanism."""

from segcft.models.segmentation import SEGMENTOR_ARCHITECTURES, segmentor

__all__ = ["SEGMENTOR_ARCHITECTURES", "segmentor"]
