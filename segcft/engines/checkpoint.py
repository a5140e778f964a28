"""Finding the checkpoint to resume from."""

from __future__ import annotations

import os
import re
from pathlib import Path

_EPOCH = re.compile(r"epoch=(\d+)")


def latest_checkpoint(ckpt_dir: str | os.PathLike, prefix: str = "checkpoint") -> str | None:
    """The interval checkpoint with the highest epoch in ``ckpt_dir`` (``None`` if there is none).

    MONAI's ``CheckpointSaver`` names them ``<prefix>_epoch=<n>.pt``; resuming loads the
    model, optimizer, LR scheduler and trainer state (epoch and iteration) from it.
    """
    best: tuple[int, Path] | None = None
    for path in Path(ckpt_dir).glob(f"{prefix}*epoch=*.pt"):
        match = _EPOCH.search(path.name)
        if match and (best is None or int(match.group(1)) > best[0]):
            best = (int(match.group(1)), path)
    return None if best is None else str(best[1])
