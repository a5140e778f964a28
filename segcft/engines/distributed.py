"""Model placement and gradient averaging through ``ignite.distributed``, honouring the configured device."""

from __future__ import annotations

from collections.abc import Iterable

import ignite.distributed as idist
import torch
from torch import nn


def auto_model(network: nn.Module, device: str | torch.device, data_parallel: bool = True) -> nn.Module:
    """``idist.auto_model`` (DDP under ``torchrun``), or a plain move to ``device``.

    ``idist.auto_model`` always uses ``idist.device()``; a single process asked to run on
    another device (``cpu`` on a GPU machine) keeps the configured one. ``data_parallel=False``
    keeps a single process on several GPUs from ``DataParallel``, which cannot gather a
    model's output of scalar losses (the HVAE's).
    """
    device = torch.device(device)
    if idist.get_world_size() > 1 or (data_parallel and device.type == idist.device().type):
        return idist.auto_model(network)
    return network.to(device)


def mean_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """The mean of ``value`` over the processes (``value`` itself in one process), detached."""
    world = idist.get_world_size()
    if world == 1:
        return value.detach()
    return idist.all_reduce(value.detach().clone()) / world  # clone: all_reduce may work in place


def average_gradients(parameters: Iterable[nn.Parameter]) -> None:
    """Average the gradients of ``parameters`` over the processes, in place, as DDP does in ``backward``.

    For losses that reach a model through methods other than its ``forward``: DDP arms its
    gradient reduction in the wrapped module's ``forward``, and CFT's counterfactual loss runs
    through the image mechanism's abduction and decoding methods. Every process must have
    gradients for the same parameters, as it does when all run the same graph.
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if idist.get_world_size() == 1 or not grads:
        return
    flat = mean_over_ranks(torch.cat([g.flatten() for g in grads]))  # one collective, not one per tensor
    for grad, mean in zip(grads, flat.split([g.numel() for g in grads])):
        grad.copy_(mean.view_as(grad))


def attach_handlers(engine, *handlers) -> None:
    """Attach handlers that reference ``engine`` itself (resume, trainer-state checkpoints).

    Bundle configs cannot list them among the engine's own handlers without a reference
    cycle; a handler switched off with ``_disabled_`` arrives as ``None`` and is skipped.
    """
    for handler in handlers:
        if handler is not None:
            handler.attach(engine)
