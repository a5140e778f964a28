"""The Lagrangian that keeps the factual ELBO within ``eps`` during CFT (METHOD.md section 3).

    loss = d(guide(x*), pa*) - (lambda - damping * sg(min(eps - ELBO, 0))) * (eps - ELBO)

Here ELBO is the negative ELBO per dimension (lower is better), so the constraint is
``ELBO <= eps``. The model minimises ``loss``; ``lambda`` is raised by gradient *ascent*
while the constraint is violated and clamped at 0. The damping term (the "modified
differential method of multipliers") stops ``lambda`` from oscillating.

One deviation from the equality form ``sg(eps - ELBO)`` in METHOD.md: damping acts only on a
*violation*. Applied to a satisfied constraint it rewards a worse ELBO (its gradient pushes
the ELBO up towards ``eps``), and on JSRT that push swamped the guide's gradient, so the
guide never moved the model (docs/results.md).
"""

from __future__ import annotations

import torch
from torch import nn

from segcft.utils import InputError


def check_init(init: float) -> None:
    """Refuse a negative starting ``lambda``: it is clamped at 0, so it would silently start at 0."""
    if init < 0:
        raise InputError(f"lagrange_init must be >= 0 (lambda is clamped at 0), got {init}")


class LagrangeMultiplier(nn.Module):
    """``lambda >= 0`` with its own ascent step."""

    def __init__(self, init: float = 0.0, lr: float = 0.01, damping: float = 10.0) -> None:
        super().__init__()
        check_init(init)
        self.value = nn.Parameter(torch.tensor(float(init)))
        self.damping = damping
        self.optimizer = torch.optim.SGD([self.value], lr=lr, maximize=True)

    def penalty(self, elbo: torch.Tensor, eps: float) -> torch.Tensor:
        """The Lagrangian term to add to the guide loss."""
        slack = eps - elbo
        return -(self.value - self.damping * slack.detach().clamp(max=0.0)) * slack

    def step(self) -> None:
        """Ascend on ``lambda`` (its gradient is ``ELBO - eps``), then clamp it at 0."""
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            self.value.clamp_(min=0.0)
