"""Model placement through ``ignite.distributed``, honouring the configured device."""

from __future__ import annotations

import ignite.distributed as idist
import torch
from torch import nn


def auto_model(network: nn.Module, device: str | torch.device) -> nn.Module:
    """``idist.auto_model`` (DDP under ``torchrun``), or a plain move to ``device``.

    ``idist.auto_model`` always uses ``idist.device()``; a single process asked to run on
    another device (``cpu`` on a GPU machine) keeps the configured one.
    """
    device = torch.device(device)
    if idist.get_world_size() > 1 or device.type == idist.device().type:
        return idist.auto_model(network)
    return network.to(device)


def attach_handlers(engine, *handlers) -> None:
    """Attach handlers that reference ``engine`` itself (resume, trainer-state checkpoints).

    Bundle configs cannot list them among the engine's own handlers without a reference
    cycle; a handler switched off with ``_disabled_`` arrives as ``None`` and is skipped.
    """
    for handler in handlers:
        if handler is not None:
            handler.attach(engine)
