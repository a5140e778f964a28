"""Random views under which a guide measures the images of a fine-tuning step.

A generator fine-tuned against one network can learn changes that this network reads and
others do not (METHOD.md section 4: it fools its guide; docs/results.md measures it on the
heart). Measuring the factual and the counterfactual image under a random rigid view plus
noise, a new one each step (an expectation over transformations), rewards only changes the
guide reads under every view. The ranges are the guide segmentor's own training jitter
(``segcft.data.transforms``), scaled by ``strength``: views the guide has learnt to be
indifferent to, so they cost its reading of a real change nothing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from segcft.data.transforms import AUGMENT_NOISE, AUGMENT_ROTATE, AUGMENT_TRANSLATE
from segcft.utils import InputError


class GuideViews:
    """One random view per sample (rotation, translation, Gaussian noise), the same for every image passed.

    ``strength`` scales the segmentors' training ranges: 1 draws rotations of up to about
    10 degrees, translations of up to 6% of the side and noise of SD 0.02; 0 is the identity.
    Rotation and translation keep areas (up to the border), so a view moves no target. Draws use the global RNG.
    """

    def __init__(self, strength: float) -> None:
        if not 0.0 <= strength <= 1.0:
            raise InputError(f"guide_views: strength must be in [0, 1], got {strength}")
        self.strength = float(strength)

    def __call__(self, *images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``images`` (each ``(N, C, H, W)``, one shape) seen under the same per-sample view."""
        if self.strength == 0.0:
            return images
        first = images[0]
        n, device = first.shape[0], first.device

        def uniform(bound: float) -> torch.Tensor:
            return (2 * torch.rand(n, device=device) - 1) * bound * self.strength

        angle = uniform(AUGMENT_ROTATE)
        shift = [uniform(2 * AUGMENT_TRANSLATE) for _ in range(2)]  # grid coordinates span 2 per side
        cos, sin = angle.cos(), angle.sin()
        theta = torch.stack([torch.stack([cos, -sin, shift[0]], 1), torch.stack([sin, cos, shift[1]], 1)], 1)
        grid = F.affine_grid(theta.to(first.dtype), list(first.shape), align_corners=False)
        noise = torch.randn_like(first) * (AUGMENT_NOISE * self.strength)
        return tuple(F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False) + noise
                     for x in images)
