"""The parent mechanisms of the deep SCM: ``pa_k = f_k(parents(pa_k), u_k)`` (METHOD.md sections 1-2).

Each continuous variable is a conditional normalizing flow (a zuko neural spline flow) over
its standardised value, conditioned on its standardised parents; each binary variable is a
Bernoulli whose logit is a small MLP of its parents. Counterfactuals follow abduction
(``abduct``: the exogenous noise of every variable), action and prediction (``predict``:
intervened variables take their new values, their descendants are recomputed from the
abducted noise, everything else is copied from the factual values bit for bit).

Areas are positive and skewed, so variables listed in ``log_vars`` are modelled as
``log(x)``; ``stats`` standardise the (log-)values to zero mean and unit variance, which
keeps them inside the splines' domain ``[-5, 5]``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
import zuko
from torch import Tensor, nn

from segcft.causal.graph import CausalGraph
from segcft.utils import InputError

Values = Mapping[str, Any]


class _FlowMechanism(nn.Module):
    """A continuous variable: a conditional NSF over its standardised value; the base space is the noise."""

    def __init__(self, context: int, transforms: int, hidden: int) -> None:
        super().__init__()
        self.flow = zuko.flows.NSF(features=1, context=context, transforms=transforms, hidden_features=[hidden, hidden])

    @staticmethod
    def _c(ctx: Tensor) -> Tensor | None:
        return ctx if ctx.shape[-1] else None

    def log_prob(self, z: Tensor, ctx: Tensor) -> Tensor:
        return self.flow(self._c(ctx)).log_prob(z[:, None])

    def abduct(self, z: Tensor, ctx: Tensor) -> Tensor:
        return self.flow.transform(self._c(ctx))(z[:, None]).squeeze(-1)

    def predict(self, u: Tensor, ctx: Tensor) -> Tensor:
        return self.flow.transform(self._c(ctx)).inv(u[:, None]).squeeze(-1)

    @staticmethod
    def noise(n: int, generator: torch.Generator | None, like: Tensor) -> Tensor:
        """Draws from the flow's base distribution, the standard normal of zuko's NSF."""
        return torch.randn(n, generator=generator, device=like.device, dtype=like.dtype)


class _BernoulliMechanism(nn.Module):
    """A binary variable: ``v = 1[u < sigmoid(logit(parents))]`` with ``u ~ U(0, 1)``."""

    def __init__(self, context: int, hidden: int) -> None:
        super().__init__()
        if context:
            self.net = nn.Sequential(nn.Linear(context, hidden), nn.SiLU(), nn.Linear(hidden, 1))
        else:
            self.bias = nn.Parameter(torch.zeros(1))

    def logit(self, ctx: Tensor) -> Tensor:
        if ctx.shape[-1]:
            return self.net(ctx).squeeze(-1)
        return self.bias.expand(ctx.shape[0])

    def log_prob(self, v: Tensor, ctx: Tensor) -> Tensor:
        return -F.binary_cross_entropy_with_logits(self.logit(ctx), v, reduction="none")

    def abduct(self, v: Tensor, ctx: Tensor) -> Tensor:
        """The midpoint of the noise interval consistent with ``v``.

        Given ``p = P(v = 1 | parents)``, the posterior over ``u`` is uniform on ``(0, p)``
        if ``v = 1`` and on ``(p, 1)`` if ``v = 0``. Taking its midpoint instead of a draw
        makes abduction deterministic, so the same input always gives the same counterfactual.
        """
        p = torch.sigmoid(self.logit(ctx))
        return torch.where(v > 0.5, p / 2, (1 + p) / 2)

    def predict(self, u: Tensor, ctx: Tensor) -> Tensor:
        return (u < torch.sigmoid(self.logit(ctx))).to(u.dtype)

    @staticmethod
    def noise(n: int, generator: torch.Generator | None, like: Tensor) -> Tensor:
        return torch.rand(n, generator=generator, device=like.device, dtype=like.dtype)


class ParentSCM(nn.Module):
    """The SCM over the parent variables: likelihood, abduction, counterfactual prediction and sampling.

    ``stats`` maps every continuous variable to the ``(mean, std)`` of its (log-)value, see
    :func:`parent_stats`; entries for other variables are ignored. The stats are buffers, and
    the graph and ``log_vars`` are saved in the state dict too, so a state dict cannot be
    loaded into a model of another graph. All inputs are dictionaries of 1-D tensors of one
    length ``B``, keyed by variable name; extra keys are ignored.
    """

    def __init__(
        self,
        graph: CausalGraph,
        stats: Mapping[str, tuple[float, float]],
        transforms: int = 3,
        hidden: int = 32,
        log_vars: Sequence[str] = (),
    ) -> None:
        super().__init__()
        if not isinstance(graph, CausalGraph):
            raise InputError(f"graph must be a CausalGraph, got {type(graph).__name__}")
        for label, value in (("transforms", transforms), ("hidden", hidden)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{label} must be a positive integer, got {value!r}")
        if isinstance(log_vars, str):
            raise InputError(f"log_vars must be a sequence of variable names, got the string {log_vars!r}")
        for name in log_vars:
            if graph.kinds.get(name) != "continuous":
                raise InputError(f"log_vars names {name!r}, which is not a continuous variable of the graph")
        self.graph = graph
        self.log_vars = frozenset(log_vars)
        self._index = {name: i for i, name in enumerate(graph.order)}
        loc, scale = [], []
        for name in graph.order:
            mean, std = _stat(name, stats) if graph.kinds[name] == "continuous" else (0.0, 1.0)
            loc.append(mean)
            scale.append(std)
        self.register_buffer("loc", torch.tensor(loc, dtype=torch.float32))
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32))
        self.mechanisms = nn.ModuleList(
            _FlowMechanism(len(graph.parents[name]), transforms, hidden)
            if graph.kinds[name] == "continuous"
            else _BernoulliMechanism(len(graph.parents[name]), hidden)
            for name in graph.order
        )

    # ------------------------------------------------------------------ state

    def get_extra_state(self) -> dict[str, Any]:
        return {"graph": self.graph.to_dict(), "log_vars": sorted(self.log_vars)}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        mine = self.get_extra_state()
        if state != mine:
            raise InputError(f"the state dict is of a parent SCM with {state}, this model has {mine}")

    # ------------------------------------------------------------------ the SCM

    def log_prob(self, pa: Values) -> Tensor:
        """``log p(pa)`` per sample, a density in the variables' own units (for maximum likelihood)."""
        x = self._check(pa, "parents")
        z = {name: self._standardise(name, x[name]) for name in self.graph.order}
        total = 0.0
        for name in self.graph.order:
            i = self._index[name]
            lp = self.mechanisms[i].log_prob(z[name], self._context(name, z))
            if self.graph.kinds[name] == "continuous":  # change of variables back to the raw value
                lp = lp - torch.log(self.scale[i])
                if name in self.log_vars:
                    lp = lp - torch.log(self._model_tensor(x[name]))
            total = total + lp
        return total

    def abduct(self, pa: Values) -> dict[str, Tensor]:
        """The exogenous noise of every variable: the flow's base-space value, or a uniform for binaries."""
        x = self._check(pa, "parents")
        z = {name: self._standardise(name, x[name]) for name in self.graph.order}
        return {
            name: self.mechanisms[self._index[name]].abduct(z[name], self._context(name, z))
            for name in self.graph.order
        }

    def predict(self, noise: Values, pa_factual: Values, do: Values) -> dict[str, Tensor]:
        """Action and prediction: ``do`` values, recomputed descendants, factual copies of the rest.

        ``noise`` is the output of :meth:`abduct`; only the descendants' entries are used.

        A ``do`` value may be a scalar (the same for every sample) or a 1-D tensor. Outputs
        have the dtype and device of the factual values.
        """
        x = self._check(pa_factual, "factual parents")
        n = len(next(iter(x.values())))
        for label, arg in (("noise", noise), ("do", do)):
            if not isinstance(arg, Mapping):
                raise InputError(f"{label} must be a mapping of variable name to values, got {type(arg).__name__}")
        actions = {}
        for name, value in do.items():
            if name not in self._index:
                raise InputError(f"cannot intervene on unknown variable {name!r}; known: {list(self.graph.order)}")
            actions[name] = self._value(name, value, n, "intervention", broadcast=True)
        changed = set().union(*(self.graph.descendants(name) for name in actions)) - set(actions)
        u = {name: self._value(name, noise.get(name), n, "noise", check_range=False) for name in changed}
        z: dict[str, Tensor] = {}
        out: dict[str, Tensor] = {}
        for name in self.graph.order:
            factual = x[name]
            if name in actions:
                out[name] = actions[name].to(device=factual.device, dtype=factual.dtype)
                z[name] = self._standardise(name, actions[name])
            elif name in changed:
                i = self._index[name]
                z[name] = self.mechanisms[i].predict(self._model_tensor(u[name]), self._context(name, z))
                out[name] = self._destandardise(name, z[name]).to(device=factual.device, dtype=factual.dtype)
            else:
                out[name] = factual.clone()
                z[name] = self._standardise(name, factual)
        return out

    def counterfactual(self, pa: Values, do: Values) -> dict[str, Tensor]:
        """Abduction, action, prediction; ``do = {}`` returns the factual values exactly."""
        return self.predict(self.abduct(pa), pa, do)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """``n`` ancestral samples on the model's device; ``generator`` makes them reproducible."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InputError(f"the number of samples must be a positive integer, got {n!r}")
        z: dict[str, Tensor] = {}
        for name in self.graph.order:
            mechanism = self.mechanisms[self._index[name]]
            u = mechanism.noise(n, generator, self.loc)
            z[name] = mechanism.predict(u, self._context(name, z, n))
        return {name: self._destandardise(name, z[name]) for name in self.graph.order}

    # ------------------------------------------------------------------ helpers

    def _model_tensor(self, value: Tensor) -> Tensor:
        return value.to(device=self.loc.device, dtype=self.loc.dtype)

    def _standardise(self, name: str, value: Tensor) -> Tensor:
        i = self._index[name]
        value = self._model_tensor(value)
        if name in self.log_vars:
            value = torch.log(value)
        return (value - self.loc[i]) / self.scale[i]

    def _destandardise(self, name: str, z: Tensor) -> Tensor:
        i = self._index[name]
        value = z * self.scale[i] + self.loc[i]
        return torch.exp(value) if name in self.log_vars else value

    def _context(self, name: str, z: Mapping[str, Tensor], n: int | None = None) -> Tensor:
        """The standardised parents of ``name`` as ``(B, n_parents)``; binary parents stay 0/1."""
        parents = self.graph.parents[name]
        if parents:
            return torch.stack([z[p] for p in parents], dim=-1)
        rows = n if n is not None else len(next(iter(z.values())))
        return self.loc.new_zeros(rows, 0)

    def _check(self, pa: Values, what: str) -> dict[str, Tensor]:
        """Every graph variable of ``pa`` as a validated 1-D tensor (its own dtype and device)."""
        if not isinstance(pa, Mapping):
            raise InputError(f"{what} must be a mapping of variable name to tensor, got {type(pa).__name__}")
        missing = [name for name in self.graph.order if name not in pa]
        if missing:
            raise InputError(f"{what} lack variable(s) {missing}; expected {list(self.graph.order)}")
        first = self._value(self.graph.order[0], pa[self.graph.order[0]], -1, what)
        n = first.shape[0]
        return {name: self._value(name, pa[name], n, what) for name in self.graph.order}

    def _value(
        self, name: str, value: Any, n: int, what: str, broadcast: bool = False, check_range: bool = True
    ) -> Tensor:
        """``value`` of variable ``name`` as a finite 1-D tensor of length ``n`` (any length if ``n < 0``)."""
        if value is None:
            raise InputError(f"{what}: variable {name!r} is missing")
        try:
            t = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError) as e:
            raise InputError(f"{what}: variable {name!r} is not numeric: {value!r}") from e
        if t.is_complex():
            raise InputError(f"{what}: variable {name!r} has dtype {t.dtype}; expected real numbers")
        if broadcast and t.ndim == 0:
            t = t.expand(n)
        if t.ndim != 1 or t.shape[0] < 1 or (n >= 0 and t.shape[0] != n):
            expected = f"({n},)" if n >= 0 else "(B,) with B >= 1"
            raise InputError(f"{what}: variable {name!r} has shape {tuple(t.shape)}; expected {expected}, one value per sample")
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise InputError(f"{what}: variable {name!r} has non-finite values (NaN or inf)")
        if check_range and self.graph.kinds[name] == "binary" and not ((t == 0) | (t == 1)).all():
            raise InputError(f"{what}: binary variable {name!r} must be 0 or 1, got {t[(t != 0) & (t != 1)][:3].tolist()}")
        if check_range and name in self.log_vars and not (t > 0).all():
            raise InputError(f"{what}: variable {name!r} is modelled as log(x) and must be positive, got {t.min().item()}")
        return t


def _stat(name: str, stats: Mapping[str, tuple[float, float]]) -> tuple[float, float]:
    """The validated ``(mean, std)`` of a continuous variable."""
    if name not in stats:
        raise InputError(f"stats lack continuous variable {name!r}; compute them with parent_stats()")
    try:
        mean, std = (float(v) for v in stats[name])
    except (TypeError, ValueError) as e:
        raise InputError(f"stats of {name!r} must be (mean, std), got {stats[name]!r}") from e
    if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
        raise InputError(f"stats of {name!r} must be a finite mean and a positive std, got ({mean}, {std})")
    return mean, std


def parent_stats(data: Values, log_vars: Sequence[str] = ()) -> dict[str, tuple[float, float]]:
    """``(mean, std)`` of every variable in ``data`` (of ``log(x)`` for ``log_vars``), for :class:`ParentSCM`."""
    out = {}
    for name in log_vars:
        if name not in data:
            raise InputError(f"log_vars names {name!r}, which is not in the data; data has {sorted(data)}")
    for name, value in data.items():
        t = torch.as_tensor(value, dtype=torch.float64).reshape(-1)
        if t.numel() == 0 or not torch.isfinite(t).all():
            raise InputError(f"variable {name!r} is empty or has non-finite values")
        if name in log_vars:
            if not (t > 0).all():
                raise InputError(f"variable {name!r} is modelled as log(x) and must be positive, got {t.min().item()}")
            t = torch.log(t)
        out[name] = (t.mean().item(), t.std(unbiased=False).item())
    return out


def fit_parent_scm(
    scm: ParentSCM,
    data: Values,
    steps: int = 300,
    lr: float = 5e-3,
    batch_size: int = 256,
    seed: int = 0,
) -> list[float]:
    """Maximum likelihood with Adam on shuffled minibatches; returns the per-step mean NLL.

    The seed fixes the minibatch order, so the same seed and the same initial weights give
    the same curve (seed the weights' initialisation with ``torch.manual_seed`` before
    building the model).
    """
    for label, value in (("steps", steps), ("batch_size", batch_size), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if label == "seed" else 1):
            raise InputError(f"{label} must be a {'non-negative' if label == 'seed' else 'positive'} integer, got {value!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise InputError(f"lr must be a positive number, got {lr!r}")
    x = {name: scm._model_tensor(t) for name, t in scm._check(data, "training data").items()}
    n = len(next(iter(x.values())))
    batch = min(batch_size, n)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(scm.parameters(), lr=lr)
    losses = []
    order, pos = torch.randperm(n, generator=generator), 0
    for _ in range(steps):
        if pos + batch > n:
            order, pos = torch.randperm(n, generator=generator), 0
        idx = order[pos : pos + batch].to(scm.loc.device)
        pos += batch
        loss = -scm.log_prob({name: t[idx] for name, t in x.items()}).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses
