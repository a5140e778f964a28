"""The fine-tuning recipe that ``segcft bench cft``, the CFT bundles and ``finetune`` share by default.

The values are the ones docs/results.md supports on JSRT ("an EMA of the fine-tuned weights
on four base models"): 900 AdamW steps at 1e-4 after a 20-step warm-up, lambda ascending at
0.3, guide targets relative to the factual measurement, and the fine-tuned model returned as
an EMA (decay 0.995) of its weights, which kept the ELBO bound on 8 of 8 runs where the last
iterate kept it on 3. The bundles' ``train.json`` repeat the values; a test holds them equal.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Recipe:
    """Settings of one counterfactual fine-tuning run (see METHOD.md section 3 for the Lagrangian)."""

    steps: int = 900
    batch_size: int = 16
    lr: float = 1e-4
    warmup: int = 20
    guide_weight: float = 50.0
    lagrange_lr: float = 0.3
    damping: float = 10.0
    lagrange_init: float = 0.0
    relative_targets: bool = True
    guide_views: float = 0.0
    ema_decay: float = 0.995
    eps_slack: float = 0.02
    grad_clip: float = 200.0


RECIPE = Recipe()
