"""Training tasks: the package's segmentor fine-tuned on the datastore's labels."""

from lib.trainers.segmentation import SegmentorTraining

__all__ = ["SegmentorTraining"]
