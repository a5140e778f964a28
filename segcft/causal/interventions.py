"""Interventions ``do(v = a)`` as users write them, resolved to per-sample target values.

A spec is ``name=<value>`` in one of these forms (whitespace is tolerated)::

    heart_area=12000     set: the absolute value, in the variable's unit
    heart_area=*0.8      scale: multiply the factual value
    heart_area=+15%      percent: change the factual value by +15 % (or -10%)
    heart_area=-500      shift: add to the factual value, in the variable's unit

A leading sign always means a change, so absolute values are written unsigned. Relative
forms are resolved against each sample's factual value; every result must lie in the
variable's support, because the mechanisms are only trusted where they saw data.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from segcft.causal.graph import MECHANISM_KINDS
from segcft.utils import InputError

OPS = ("set", "scale", "shift", "percent")
FORMS = "name=12000 (set), name=*0.8 (scale), name=+15% or name=-10% (percent), name=+500 or name=-500 (shift)"

_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|nan|inf(?:inity)?"
_SPEC = re.compile(
    rf"^\s*(?P<name>[A-Za-z_][\w.]*)\s*=\s*(?P<op>[*+-])?\s*(?P<number>{_NUMBER})\s*(?P<percent>%)?\s*$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Intervention:
    """``do(variable = op(factual, value))``; for ``percent``, ``value`` is in percent (``+15%`` -> 15.0)."""

    variable: str
    op: str
    value: float

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise InputError(f"intervention on {self.variable!r}: op must be one of {OPS}, got {self.op!r}")
        if not math.isfinite(self.value):
            raise InputError(f"intervention on {self.variable!r}: the value must be finite, got {self.value}")

    def apply(self, factual: Tensor) -> Tensor:
        """The target values for the factual values ``factual``."""
        if self.op == "set":
            return torch.full_like(factual, self.value)
        if self.op == "scale":
            return factual * self.value
        if self.op == "shift":
            return factual + self.value
        return factual * (1.0 + self.value / 100.0)


def parse_do(spec: str) -> Intervention:
    """Parse ``name=12000``, ``name=*0.8``, ``name=+15%``, ``name=-10%``, ``name=+500`` or ``name=-500``."""
    match = _SPEC.match(spec) if isinstance(spec, str) else None
    if match is None:
        raise InputError(f"cannot parse the intervention {spec!r}; accepted forms: {FORMS}")
    name, op, percent = match["name"], match["op"], match["percent"]
    number = float(match["number"])
    if not math.isfinite(number):
        raise InputError(f"intervention {spec!r}: the value of {name!r} must be finite, got {match['number']}")
    if op == "*":
        if percent:
            raise InputError(f"cannot parse the intervention {spec!r}: a scale takes no '%'; accepted forms: {FORMS}")
        return Intervention(name, "scale", number)
    if op is None:
        if percent:
            raise InputError(f"cannot parse the intervention {spec!r}: a percent change needs a sign; accepted forms: {FORMS}")
        return Intervention(name, "set", number)
    signed = number if op == "+" else -number
    return Intervention(name, "percent" if percent else "shift", signed)


def resolve(
    interventions: Sequence[Intervention],
    pa: Mapping[str, Tensor],
    support: Mapping[str, tuple[float, float]],
    kinds: Mapping[str, str],
) -> dict[str, Tensor]:
    """The absolute per-sample target values ``{variable: Tensor(B)}`` of ``interventions``.

    ``pa`` holds the factual values (1-D tensors), ``support`` the allowed ``(low, high)``
    range and ``kinds`` the kind of every variable that may be intervened on.
    """
    out: dict[str, Tensor] = {}
    for iv in interventions:
        name = iv.variable
        if name not in kinds:
            raise InputError(f"cannot intervene on unknown variable {name!r}; known variables: {sorted(kinds)}")
        if name in out:
            raise InputError(f"variable {name!r} is intervened on twice; give one intervention per variable")
        if kinds[name] not in MECHANISM_KINDS:
            raise InputError(f"cannot intervene on {name!r} of kind {kinds[name]!r}; supported kinds: {MECHANISM_KINDS}")
        if kinds[name] == "binary" and not (iv.op == "set" and iv.value in (0.0, 1.0)):
            raise InputError(f"{name!r} is binary: only {name}=0 or {name}=1 is allowed, got {iv.op} {iv.value:g}")
        if name not in pa:
            raise InputError(f"the factual values lack {name!r}, needed to resolve the intervention on it")
        if name not in support:
            raise InputError(f"no support is known for {name!r}; supports are known for {sorted(support)}")
        factual = torch.as_tensor(pa[name])
        if not factual.is_floating_point():
            factual = factual.to(torch.get_default_dtype())
        target = iv.apply(factual)
        lo, hi = (float(v) for v in support[name])
        bad = ~torch.isfinite(target) | (target < lo) | (target > hi)
        if bad.any():
            value = target[bad][0].item()
            raise InputError(
                f"intervention {iv.op} {iv.value:g} on {name!r} gives {value:.6g}, outside its allowed range "
                f"[{lo:.6g}, {hi:.6g}] ({int(bad.sum())} of {bad.numel()} samples)"
            )
        out[name] = target
    return out


def support_from_data(
    data: Mapping[str, Tensor], kinds: Mapping[str, str], margin: float = 0.25
) -> dict[str, tuple[float, float]]:
    """The allowed range of every variable in ``kinds``: the data range widened by ``margin`` of it on each side.

    Continuous variables that are never negative in the data stay non-negative; binary
    variables get ``(0, 1)``.
    """
    if not (isinstance(margin, (int, float)) and math.isfinite(margin) and margin >= 0):
        raise InputError(f"margin must be a non-negative number, got {margin!r}")
    out = {}
    for name, kind in kinds.items():
        if kind == "binary":
            out[name] = (0.0, 1.0)
            continue
        if kind != "continuous":
            raise InputError(f"variable {name!r} has kind {kind!r}; supported kinds: {MECHANISM_KINDS}")
        if name not in data:
            raise InputError(f"the data lack variable {name!r}; data has {sorted(data)}")
        t = torch.as_tensor(data[name], dtype=torch.float64).reshape(-1)
        if t.numel() == 0 or not torch.isfinite(t).all():
            raise InputError(f"variable {name!r} is empty or has non-finite values")
        low, high = t.min().item(), t.max().item()
        pad = margin * (high - low)
        out[name] = (max(low - pad, 0.0) if low >= 0 else low - pad, high + pad)
    return out
