"""Self-contained model packages: what ``segcft counterfactual`` needs, and no training data.

A package is one folder::

    segcft_model.json   the manifest
    generator.pt        state dict of the deep SCM (the EMA weights of the generator)
    segmentor.pt        state dict of the segmentor that measures the observed parents

The manifest rebuilds the SCM without the training images: its config (``modality``,
``image_size``, ``variables``, ``graph``, ``log_vars``, ``preset``, ``stages``, ``latents``), the
variables' descriptions, and the training split's parent values (``training_parents``), from
which :func:`~segcft.causal.scm.build_deep_scm` derives the statistics and supports. It
also holds what inference needs besides the weights: the ``structures`` and ``regions`` the
segmentor measures, ``defaults`` for the variables no segmentor can measure (e.g. ``nodule``,
``age``: the training split's median, or mode for binaries, reported as "assumed"),
``default_spacing_mm`` (the training images' pixel spacing at model size, assumed for inputs
without a valid spacing, e.g. PNGs), the ``segmentor`` architecture, the settings of the
``spatial`` mechanism that makes its counterfactuals (null: the HVAE decodes them), the
``training_data`` (the datalist's name and, for a phantom, its kind: a phantom model refuses
real radiographs) and the ``provenance``.
"""

from __future__ import annotations

import copy
import datetime
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from monai.bundle import ConfigParser
from torch import nn

from segcft import __version__
from segcft.causal.scm import DeepSCM, build_deep_scm, training_parents
from segcft.data.datalist import check_variable, load_datalist, structures_of
from segcft.data.transforms import INTENSITY_WINDOWS, image_pipeline
from segcft.engines.loading import bundle_for, generator_config_files, load_generator, load_segmentor, segmentor_instance
from segcft.measure import RegionSpec, hard_areas, partition, region_areas, region_variable_name
from segcft.models import segmentor
from segcft.models.spatial import SpatialMechanism, SpatialSettings
from segcft.utils import InputError, read_json, staged_dir, write_json

MANIFEST = "segcft_model.json"
GENERATOR_FILE = "generator.pt"
SEGMENTOR_FILE = "segmentor.pt"
FORMAT = 1
#: The generator config values a package records (they rebuild the same SCM).
CONFIG_KEYS = ("modality", "image_size", "variables", "graph", "log_vars", "preset", "stages", "latents", "hvae")
MANIFEST_KEYS = (
    "format", *CONFIG_KEYS, "structures", "regions", "variable_descriptions", "training_parents", "defaults",
    "default_spacing_mm", "segmentor", "spatial", "training_data", "provenance",
)
#: Training images whose model-size spacing gives ``default_spacing_mm`` (their median).
SPACING_CASES = 16


@dataclass
class ModelPackage:
    """A loaded package: the deep SCM and the segmentor in eval mode, and the manifest."""

    root: Path
    manifest: dict[str, Any]
    scm: DeepSCM
    segmentor: nn.Module

    @property
    def variables(self) -> list[str]:
        return list(self.manifest["variables"])

    @property
    def modality(self) -> str:
        return self.manifest["modality"]

    @property
    def image_size(self) -> int:
        return int(self.manifest["image_size"])

    @property
    def structures(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.manifest["structures"].items()}

    @property
    def regions(self) -> list[RegionSpec]:
        return [RegionSpec.from_dict(r) for r in self.manifest["regions"]]

    @property
    def defaults(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.manifest["defaults"].items()}

    @property
    def default_spacing(self) -> tuple[float, float]:
        row, col = self.manifest["default_spacing_mm"]
        return float(row), float(col)

    @property
    def measured_variables(self) -> list[str]:
        """The variables the segmentor measures (structure and regional areas)."""
        return [v for v in self.variables if v not in self.manifest["defaults"]]

    @property
    def device(self) -> torch.device:
        return self.scm.cond_mean.device

    @torch.no_grad()
    def measure_parents(self, images: torch.Tensor, spacing: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every parent of ``images`` ``(N, 1, S, S)`` (model intensities, model size; ``spacing`` ``(N, 2)`` mm).

        Structure and regional areas (mm^2) come from the segmentor's hard prediction (the
        images are resized to its size and the spacing follows; regions are partitioned on
        that prediction); the other variables take the package's ``defaults``.
        """
        size = int(self.manifest["segmentor"]["image_size"])
        x = images.to(self.device, torch.float32)
        sp = torch.as_tensor(spacing, dtype=torch.float32, device=self.device).reshape(-1, 2) * (x.shape[-1] / size)
        if x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        labels = self.segmentor(x).argmax(1)
        structures = self.structures
        areas = {name: a["mm2"] for name, a in hard_areas(labels, structures, sp).items()}
        for spec in self.regions:
            occupancy = (labels == structures[spec.structure]).float()
            regional = region_areas(occupancy, partition(labels, structures, spec), spec, sp)
            areas.update({name: a["mm2"] for name, a in regional.items()})
        out = {}
        for name in self.variables:
            if name in self.manifest["defaults"]:
                out[name] = torch.full((len(x),), float(self.manifest["defaults"][name]), device=self.device)
                continue
            desc = self.manifest["variable_descriptions"][name]
            key = region_variable_name(desc["structure"], desc["region"]) if desc.get("region") else desc["structure"]
            out[name] = areas[key]
        return out


def save_model_package(
    out: str | os.PathLike,
    scm: DeepSCM,
    *,
    config: Mapping[str, Any],
    datalist: Mapping[str, Any],
    segmentor_net: nn.Module,
    segmentor_entry: Mapping[str, Any],
    provenance: Mapping[str, Any],
) -> Path:
    """Write ``scm`` and ``segmentor_net`` with their manifest as a package folder, all at once or not at all.

    ``config`` holds the generator's :data:`CONFIG_KEYS`; ``datalist`` is the (loaded)
    datalist it was trained on; ``segmentor_entry`` names the segmentor's ``network``,
    ``width`` and ``image_size``.
    """
    missing = [k for k in CONFIG_KEYS if k not in config]
    if missing:
        raise InputError(f"the generator config lacks {missing}; a package records {list(CONFIG_KEYS)}")
    settings = {k: config[k] for k in CONFIG_KEYS}
    variables = list(settings["variables"])
    if list(scm.variables) != variables:
        raise InputError(f"the model's variables {scm.variables} differ from the config's {variables}")
    if settings["modality"] not in INTENSITY_WINDOWS:
        raise InputError(f"unknown modality {settings['modality']!r}; known: {sorted(INTENSITY_WINDOWS)}")
    described = {v: dict(check_variable(datalist, v)) for v in variables}
    specs = [RegionSpec.from_dict(r) for r in datalist.get("regions", [])]
    regions = [s for s in specs if set(s.variable_names()) & set(variables)]
    for name, desc in described.items():
        if desc.get("structure") is None:
            continue
        if desc.get("unit") != "mm2":
            raise InputError(f"variable {name!r} is an area in {desc.get('unit')!r}; packages measure areas in mm2 only")
        if desc.get("region") and not any(name in s.variable_names() for s in regions):
            raise InputError(f"regional variable {name!r} has no partition in the datalist's 'regions'")
    for key in ("network", "image_size"):
        if key not in segmentor_entry:
            raise InputError(f"the segmentor entry lacks {key!r}")
    parents = training_parents(datalist, variables)
    manifest = {
        "format": FORMAT,
        **settings,
        "structures": structures_of(datalist),
        "regions": [asdict(s) for s in regions],
        "variable_descriptions": described,
        "training_parents": {k: v.tolist() for k, v in parents.items()},
        "defaults": _defaults(parents, described),
        "default_spacing_mm": _training_spacing(datalist, int(settings["image_size"]), settings["modality"]),
        "segmentor": {
            "network": segmentor_entry["network"],
            "width": int(segmentor_entry.get("width", 16)),
            "normalise": segmentor_entry.get("normalise", "fixed"),
            "image_size": int(segmentor_entry["image_size"]),
        },
        "spatial": None if scm.spatial is None else asdict(scm.spatial.settings),
        "training_data": {"name": datalist.get("name"), "phantom": datalist.get("phantom")},
        "provenance": dict(provenance),
    }
    with staged_dir(out) as stage:
        write_json(manifest, stage / MANIFEST)
        torch.save(_cpu_state(scm), stage / GENERATOR_FILE)
        torch.save(_cpu_state(segmentor_net), stage / SEGMENTOR_FILE)
    return Path(out)


def load_model_package(path: str | os.PathLike, device: str | torch.device = "cpu") -> ModelPackage:
    """Load a package folder; a missing, incomplete or corrupt package raises :class:`InputError` naming the file."""
    root = Path(path)
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise InputError(f"{root}: not a segcft model package ({MANIFEST} not found)")
    manifest = read_json(manifest_path, "manifest")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise InputError(f"{manifest_path}: package format {found!r} is not supported; this segcft reads format {FORMAT}")
    manifest.setdefault("latents", "fixed")  # packages written before the choice existed held the latents fixed
    manifest.setdefault("spatial", None)  # ... and before spatial mechanisms, decoded every counterfactual
    manifest.setdefault("training_data", None)  # ... and before they named their training data (unknown)
    manifest.setdefault("hvae", {})  # ... and before the HVAE options, had their defaults
    missing = [k for k in MANIFEST_KEYS if k not in manifest]
    if missing:
        raise InputError(f"{manifest_path}: the manifest lacks {missing}")
    try:
        scm = _rebuild_scm(manifest)
        entry = manifest["segmentor"]
        net = segmentor(entry["network"], len(manifest["structures"]) + 1, width=int(entry["width"]),
                        normalise=entry.get("normalise", "fixed"))  # packages before the option: fixed
        if manifest["spatial"] is not None:  # its segmentor's weights are in the generator's state
            scm.attach_spatial(SpatialMechanism(SpatialSettings(**manifest["spatial"]), copy.deepcopy(net), scm.variables))
    except (InputError, KeyError, TypeError, ValueError) as e:
        raise InputError(f"{manifest_path}: invalid manifest ({type(e).__name__}: {e})") from e
    _load_weights(scm, root / GENERATOR_FILE)
    _load_weights(net, root / SEGMENTOR_FILE)
    dev = torch.device(device)
    return ModelPackage(root, manifest, scm.to(dev).eval(), net.to(dev).eval())


def generator_settings(parser: ConfigParser) -> dict[str, Any]:
    """The :data:`CONFIG_KEYS` of a parsed generator bundle config."""
    return {k: parser.get_parsed_content(k) for k in CONFIG_KEYS}


def package_from_scm(
    out: str | os.PathLike,
    scm: DeepSCM,
    *,
    config: Mapping[str, Any],
    datalist: Mapping[str, Any],
    segmentor_report: str | os.PathLike,
    instance: str = "guide",
    provenance: Mapping[str, Any] | None = None,
) -> Path:
    """Package an in-memory ``scm`` (e.g. fine-tuned by CFT) with a segmentor of a ``segcft bench segmentor`` report."""
    report = Path(segmentor_report)
    _, entry = segmentor_instance(report, instance)
    network, _ = load_segmentor(report, instance, structures_of(datalist), torch.device("cpu"))
    made_from = {"segmentor_report": str(report.resolve()), "segmentor_instance": instance}
    return save_model_package(
        out, scm, config=config, datalist=datalist, segmentor_net=network, segmentor_entry=entry,
        provenance={**made_from, "segcft_version": __version__,
                    "created": datetime.datetime.now().isoformat(timespec="seconds"), **(provenance or {})},
    )


def export_from_runs(
    generator_run: str | os.PathLike,
    datalist: str | os.PathLike,
    segmentor_report: str | os.PathLike,
    out: str | os.PathLike,
    instance: str = "guide",
    *,
    bundle: str | os.PathLike | None = None,
    config_overrides: Mapping[str, Any] | None = None,
    command: str | None = None,
) -> Path:
    """Package the generator trained in ``generator_run`` (its best EMA ``models/model.pt``) for inference.

    The generator is rebuilt by its bundle config (with the same ``config_overrides`` it
    was trained with), so the package records exactly the model that was trained.
    """
    datalist = Path(datalist).resolve()
    dl = load_datalist(datalist)
    bundle = Path(bundle) if bundle else bundle_for(dl, "generator")
    overrides = {**(config_overrides or {}), "bundle_root": str(Path(generator_run).resolve()),
                 "datalist": str(datalist), "device": "cpu"}
    parser, ema = load_generator(generator_config_files(bundle, dl), overrides)
    provenance = {
        "method": "none",  # the plain generator, as `segcft bench cft` calls it
        "generator_run": overrides["bundle_root"],
        "datalist": str(datalist),
        "bundle": str(bundle),
        "config_overrides": dict(config_overrides or {}),
        "seed": parser.get_parsed_content("seed", default=None),
        "command": command,
    }
    return package_from_scm(out, ema.module, config=generator_settings(parser), datalist=dl,
                            segmentor_report=segmentor_report, instance=instance, provenance=provenance)


def _defaults(parents: Mapping[str, torch.Tensor], described: Mapping[str, Mapping]) -> dict[str, float]:
    """Values for the variables no segmentor measures: the training mode of binaries (ties: 0), else the median."""
    out = {}
    for name, values in parents.items():
        if described[name].get("structure") is not None:
            continue
        out[name] = float(values.mean() > 0.5) if described[name]["kind"] == "binary" else float(values.median())
    return out


def _training_spacing(datalist: Mapping[str, Any], size: int, modality: str) -> list[float]:
    """The median model-size spacing of the first training images, through the models' own preprocessing."""
    pipeline = image_pipeline(size, modality, with_label=False)
    items = datalist["training"][:SPACING_CASES]
    if not items or "image" not in items[0]:
        raise InputError("the datalist's training split has no images to take the model's pixel spacing from")
    spacing = torch.stack([pipeline(dict(item))["spacing"] for item in items])
    return [round(float(v), 6) for v in spacing.median(0).values]


def _cpu_state(module: nn.Module) -> dict[str, Any]:
    return {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in module.state_dict().items()}


def _rebuild_scm(manifest: Mapping[str, Any]) -> DeepSCM:
    """The package's SCM, built from a minimal datalist: its variables and the training split's parents."""
    parents = manifest["training_parents"]
    count = len(next(iter(parents.values()))) if parents else 0
    datalist = {
        "variables": manifest["variable_descriptions"],
        "training": [{"parents": {k: v[i] for k, v in parents.items()}} for i in range(count)],
    }
    return build_deep_scm(datalist, manifest["variables"], manifest["graph"], preset=manifest["preset"],
                          stages=manifest["stages"], log_vars=manifest["log_vars"], latents=manifest["latents"],
                          hvae=manifest.get("hvae"))


def _load_weights(module: nn.Module, path: Path) -> None:
    if not path.is_file():
        raise InputError(f"{path}: not found; the model package is incomplete")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated or foreign files
        raise InputError(f"{path}: cannot read the weights ({type(e).__name__}: {e})") from e
    try:
        module.load_state_dict(state)
    except (RuntimeError, InputError, KeyError, TypeError, AttributeError) as e:
        raise InputError(f"{path}: the weights do not fit the model described by {MANIFEST} ({e})") from e
