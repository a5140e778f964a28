"""Counterfactual fine-tuning (CFT): guides, the Lagrangian ELBO constraint, intervention sampling."""

from segcft.cft.guides import Guide, RegressorGuide, SegmentorGuide
from segcft.cft.lagrangian import LagrangeMultiplier
from segcft.cft.regressor import regressor_network, train_regressor
from segcft.cft.sampling import InterventionSampler

__all__ = [
    "Guide",
    "InterventionSampler",
    "LagrangeMultiplier",
    "RegressorGuide",
    "SegmentorGuide",
    "regressor_network",
    "train_regressor",
]
