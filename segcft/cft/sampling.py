"""Which intervention each CFT batch trains on."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch


class InterventionSampler:
    """One randomly chosen variable per batch; its targets are either the batch's values of that
    variable shuffled (draws from the variable's distribution) or relative changes drawn
    uniformly in ``[-max_change, +max_change]``. Targets are clamped to the variable's support.
    """

    def __init__(
        self,
        variables: Sequence[str],
        support: Mapping[str, tuple[float, float]],
        max_change: float = 0.3,
        shuffle_prob: float = 0.5,
        seed: int = 0,
    ) -> None:
        if not variables:
            raise ValueError("CFT needs at least one variable to intervene on")
        self.variables = list(variables)
        self.support = dict(support)
        self.max_change = max_change
        self.shuffle_prob = shuffle_prob
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, pa: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        name = self.variables[int(torch.randint(len(self.variables), (1,), generator=self.generator))]
        factual = pa[name]
        n = factual.shape[0]
        if n > 1 and float(torch.rand(1, generator=self.generator)) < self.shuffle_prob:
            target = factual[torch.randperm(n, generator=self.generator).to(factual.device)]
        else:
            change = (torch.rand(n, generator=self.generator) * 2 - 1) * self.max_change
            target = factual * (1 + change.to(factual.device))
        lo, hi = self.support[name]
        return {name: target.clamp(lo, hi)}

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
