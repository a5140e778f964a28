"""The Reg-CFT baseline's guide: a MONAI ``Regressor`` trained on the same parents as the generator."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from monai.engines import SupervisedTrainer
from monai.networks.nets import Regressor

from segcft.cft.guides import RegressorGuide


def regressor_network(size: int, outputs: int) -> Regressor:
    """A residual CNN regressor for ``size`` x ``size`` single-channel images."""
    levels = max(2, min(5, size.bit_length() - 3))
    channels = tuple(16 * 2**i for i in range(levels))
    return Regressor(in_shape=(1, size, size), out_shape=(outputs,), channels=channels, strides=(2,) * levels)


def train_regressor(
    images: torch.Tensor,
    parents: Mapping[str, torch.Tensor],
    variables: Sequence[str],
    epochs: int = 30,
    batch_size: int = 16,
    lr: float = 1e-3,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> RegressorGuide:
    """Fit the regressor to standardised log areas (MSE) with MONAI's ``SupervisedTrainer``; return it frozen."""
    torch.manual_seed(seed)
    logs = torch.stack([torch.log(parents[v].float()) for v in variables], 1)
    mean, std = logs.mean(0), logs.std(0).clamp(min=1e-3)
    targets = (logs - mean) / std
    data = [{"image": images[i], "label": targets[i]} for i in range(len(images))]
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))
    network = regressor_network(images.shape[-1], len(variables)).to(device)
    trainer = SupervisedTrainer(
        device=torch.device(device),
        max_epochs=epochs,
        train_data_loader=loader,
        network=network,
        optimizer=torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=1e-4),
        loss_function=torch.nn.MSELoss(),
        decollate=False,
    )
    trainer.run()
    stats = {v: (float(mean[i]), float(std[i])) for i, v in enumerate(variables)}
    return RegressorGuide(network, variables, stats)
