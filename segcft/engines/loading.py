"""Loading what the bundles trained: bundle folders, configs, checkpoints, generators and segmentors.

Both the benchmarks (``segcft.evaluate``) and model packaging (``segcft.serve``) load models
this way, so it lives below both of them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser

from segcft.models import segmentor
from segcft.utils import InputError, read_json

REPO_BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
MODALITY_OF = {"CR": "cxr", "DX": "cxr", "CT": "ccta"}


def modality_of(datalist: Mapping) -> str:
    """segcft's modality (``cxr`` or ``ccta``) of a datalist's DICOM modality (CR, DX or CT)."""
    modality = MODALITY_OF.get(str(datalist.get("modality", "")).upper())
    if modality is None:
        raise InputError(f"datalist modality {datalist.get('modality')!r} is not one of {sorted(MODALITY_OF)}")
    return modality


def bundle_for(datalist: dict, kind: str = "segmentor") -> Path:
    """The bundle folder for a datalist's modality, e.g. ``bundles/cxr_segmentor``."""
    path = REPO_BUNDLES / f"{modality_of(datalist)}_{kind}"
    if not (path / "configs").is_dir():
        raise InputError(f"{path}: bundle not found (pass --bundle)")
    return path


def generator_config_files(
    bundle: Path, datalist: dict, config: str = "train.json", extra: Sequence[str | os.PathLike] = ()
) -> list[str]:
    """The bundle config, plus ``phantom.json`` for a chest phantom (its true graph), plus ``extra`` overlays.

    ``extra`` are config files merged last, e.g. ``configs/positional.json`` for a generator
    whose parents include the lung zones.
    """
    files = [str(bundle / "configs" / config)]
    if "phantom" in datalist and (bundle / "configs" / "phantom.json").is_file():
        files.append(str(bundle / "configs" / "phantom.json"))
    for path in extra:
        if not Path(path).is_file():
            raise InputError(f"{path}: config file not found")
        files.append(str(path))
    return files


def load_checkpoint(path: Path) -> dict:
    """A MONAI ``CheckpointSaver`` file: the state dict, or ``{"model": state dict}``."""
    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found")
    state = torch.load(path, map_location="cpu", weights_only=False)
    return state["model"] if "model" in state and isinstance(state["model"], dict) else state


def load_generator(files: Sequence[str], overrides: dict[str, Any]) -> tuple[ConfigParser, Any]:
    """The generator's config parser and its EMA model loaded from ``models/model.pt``."""
    parser = ConfigParser()
    parser.read_config(list(files))
    parser.update(overrides)
    ema = parser.get_parsed_content("ema")
    ema.load_state_dict(load_checkpoint(Path(overrides["bundle_root"]) / "models" / "model.pt"))
    ema.module.eval()
    return parser, ema


def segmentor_instance(report_path: str | os.PathLike, instance: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A ``segcft bench segmentor`` report and its entry for ``instance``; an error naming the file if it has none."""
    report = read_json(report_path, "segmentor report")
    entry = report.get("instances", {}).get(instance) if isinstance(report, dict) else None
    if not isinstance(entry, dict):
        raise InputError(f"{report_path}: the report has no {instance!r} segmentor instance")
    return report, entry


def load_segmentor(
    report_path: str | os.PathLike, instance: str, structures: dict[str, int], device: torch.device
) -> tuple[torch.nn.Module, int]:
    """A segmentor instance (``guide`` or ``eval``) of a ``segcft bench segmentor`` report, and its image size."""
    report, entry = segmentor_instance(report_path, instance)
    # reports written before the width and normalisation were recorded used the bundles' defaults
    network = segmentor(entry["network"], len(structures) + 1, width=entry.get("width", 16), normalise=entry.get("normalise", "fixed"))
    network.load_state_dict(load_checkpoint(Path(report["work_dir"]) / "models" / instance / "model.pt"))
    return network.to(device).eval(), entry["image_size"]
