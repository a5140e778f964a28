"""Synthetic phantoms whose structural causal model (SCM) is known: ground-truth counterfactuals.

A phantom draws exogenous noise (one scalar ``u_<variable>`` per parent variable plus the
image-level noise: pose, texture seed, intensities), computes its parents in topological
order and renders image and label map deterministically from noise and parents. Abduction
is therefore exact, and the true counterfactual of ``do(v = a)`` is
``render(noise, parents_from_noise(noise, do))`` (METHOD.md section 4, "Ground truth").

Shapes are rasterised as sublevel sets of a *gauge* (a scale-free shape function, e.g. the
normalised radius of a star-shaped outline): the ``n`` pixels with the smallest gauge form
the shape scaled to exactly ``n`` pixels. That is bisection on the shape's scale solved
exactly, so every rendered area equals its target to within half a pixel.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import asdict
from graphlib import TopologicalSorter
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from scipy.special import expit
from tqdm import tqdm

from segcft.data.datalist import (
    area_variables,
    case_split,
    make_datalist,
    region_variables,
    structure_variable,
    write_datalist,
)
from segcft.data.io import write_png
from segcft.measure import RegionSpec, regional_area_values
from segcft.utils import InputError, staged_dir

#: The fewest pixels the smallest structure may have, so pixel rounding stays well under 2%.
MIN_STRUCTURE_PIXELS = 50
MAX_SIZE = 2048


def bounded(lo: float, hi: float, eta: float) -> float:
    """A logistic mechanism ``lo + (hi - lo) * sigmoid(eta)``: invertible in ``eta``, always in support."""
    return lo + (hi - lo) * float(expit(eta))


def select_smallest(gauge: np.ndarray, n: int, name: str, pixel_area: float) -> np.ndarray:
    """Boolean mask of the ``n`` pixels with the smallest finite ``gauge``: a shape of exactly ``n`` pixels.

    Pixels where the gauge is ``inf`` are unavailable (another structure, the wrong side).
    """
    flat = gauge.ravel()
    available = int(np.count_nonzero(np.isfinite(flat)))
    if n > available:
        raise InputError(
            f"{structure_variable(name)} = {n * pixel_area:.6g} mm2 cannot be rendered: "
            f"only {available * pixel_area:.6g} mm2 are available for {name!r}"
        )
    mask = np.zeros(flat.size, dtype=bool)
    if n > 0:
        mask[np.argpartition(flat, n - 1)[:n]] = True
    return mask.reshape(gauge.shape)


class Phantom(ABC):
    """A synthetic image source with a known SCM over its parent variables.

    Subclasses set the class attributes, ``sample_noise``, ``_mechanism``, ``render`` and
    ``write_image``. ``size`` is the image side in pixels; the field of view is fixed, so
    mm^2 values do not depend on it.
    """

    kind: ClassVar[str]
    modality: ClassVar[str]
    description: ClassVar[str]
    fov_mm: ClassVar[float]
    image_suffix: ClassVar[str]
    structures: ClassVar[dict[str, int]]
    regions: ClassVar[list[RegionSpec]]
    #: The true DAG over the parent variables: ``{child: [parents]}``, roots included.
    graph: ClassVar[dict[str, list[str]]]
    #: The allowed range of every parent variable (binary variables take 0 or 1).
    support: ClassVar[dict[str, tuple[float, float]]]
    #: Descriptions of the non-structure variables (age, sex).
    root_variables: ClassVar[dict[str, dict[str, Any]]]
    #: Keys that every noise dictionary must have.
    noise_keys: ClassVar[tuple[str, ...]]

    def __init__(self, size: int) -> None:
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 16 <= size <= MAX_SIZE:
            raise InputError(f"phantom size must be an integer in [16, {MAX_SIZE}], got {size!r}")
        self.size = int(size)
        step = self.fov_mm / self.size
        self.spacing: tuple[float, float] = (step, step)
        self.pixel_area_mm2 = step * step
        smallest = min(self.support[structure_variable(s)][0] for s in self.structures)
        if smallest / self.pixel_area_mm2 < MIN_STRUCTURE_PIXELS:
            need = math.ceil(self.fov_mm * math.sqrt(MIN_STRUCTURE_PIXELS / smallest))
            raise InputError(f"{self.kind} phantom size {size} is too coarse for 2% area accuracy; use >= {need}")
        centres = (np.arange(self.size) + 0.5 - self.size / 2) * step
        #: Pixel-centre coordinates in mm from the image centre: x to the right, y down.
        self._y_mm, self._x_mm = np.meshgrid(centres, centres, indexing="ij")
        self.order: tuple[str, ...] = tuple(TopologicalSorter(self.graph).static_order())
        self.variables: dict[str, dict[str, Any]] = self._describe_variables()

    def _describe_variables(self) -> dict[str, dict[str, Any]]:
        out = {name: dict(desc) for name, desc in self.root_variables.items()}
        for name, desc in area_variables(self.structures).items():
            mm2 = name.removesuffix("_px")
            scale = 1.0 if name == mm2 else 1.0 / self.pixel_area_mm2
            out[name] = {**desc, "support": [self.support[mm2][0] * scale, self.support[mm2][1] * scale]}
        for name in self.root_variables:
            out[name]["support"] = list(self.support[name])
        return out

    # ------------------------------------------------------------------ the causal model

    @abstractmethod
    def sample_noise(self, rng: np.random.Generator) -> dict[str, float | int]:
        """The exogenous noise of one sample, JSON-serialisable."""

    @abstractmethod
    def _mechanism(self, name: str, pa: Mapping[str, float], noise: Mapping[str, float | int]) -> float:
        """The value of parent variable ``name`` from its parents ``pa`` and its noise ``u_<name>``."""

    def check_value(self, name: str, value: Any) -> float:
        """``value`` as a float if it is a finite value in the support of ``name``, else :class:`InputError`."""
        try:
            value = float(value)
        except (TypeError, ValueError) as e:
            raise InputError(f"{name} must be a number, got {value!r}") from e
        lo, hi = self.support[name]
        if self.variables[name]["kind"] == "binary":
            if value not in (0.0, 1.0):
                raise InputError(f"{name} is binary: allowed values are 0 and 1, got {value}")
        elif not (math.isfinite(value) and lo <= value <= hi):
            unit = self.variables[name].get("unit") or ""
            raise InputError(f"{name} = {value} is outside its allowed range [{lo:g}, {hi:g}] {unit}".rstrip())
        return value

    def check_intervention(self, do: Mapping[str, Any]) -> dict[str, float]:
        """Validate ``do``: known mm2/parent variables only, finite values in their support."""
        if not isinstance(do, Mapping):
            raise InputError(f"an intervention must be a mapping of variable to value, got {type(do).__name__}")
        out = {}
        for name, value in do.items():
            if name in self.variables and name not in self.graph:
                mm2 = name.removesuffix("_px")
                raise InputError(
                    f"cannot intervene on {name!r}: pixel areas follow from the image size; "
                    f"intervene on {mm2!r} (mm2) instead"
                )
            if name not in self.graph:
                raise InputError(f"unknown variable {name!r}; known variables: {sorted(self.graph)}")
            out[name] = self.check_value(name, value)
        return out

    def _check_noise(self, noise: Mapping[str, Any]) -> None:
        missing = [k for k in self.noise_keys if k not in noise]
        if missing:
            raise InputError(f"{self.kind} phantom noise lacks {missing}; expected keys {list(self.noise_keys)}")
        for key in self.noise_keys:
            value = noise[key]
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise InputError(f"noise {key!r} must be a number, got {value!r}")
            if not math.isfinite(float(value)):
                raise InputError(f"noise {key!r} must be finite, got {value}")

    def parents_from_noise(
        self, noise: Mapping[str, float | int], do: Mapping[str, float] | None = None
    ) -> dict[str, float]:
        """Run the SCM in topological order; variables in ``do`` are set, the rest follow their mechanisms.

        Descendants of an intervened variable change, non-descendants keep their values
        exactly. The result includes the pixel twin of every area (mm2 / pixel area).
        """
        self._check_noise(noise)
        do = self.check_intervention(do or {})
        values: dict[str, float] = {}
        for name in self.order:
            if name in do:
                values[name] = do[name]
                continue
            value = self._mechanism(name, {p: values[p] for p in self.graph[name]}, noise)
            try:
                values[name] = self.check_value(name, value)
            except InputError as e:
                raise InputError(f"the noise gives {e}") from e
        for structure in self.structures:
            mm2 = structure_variable(structure)
            values[structure_variable(structure, "px")] = values[mm2] / self.pixel_area_mm2
        return {name: values[name] for name in self.variables}

    def _target_pixels(self, parents: Mapping[str, float]) -> dict[str, int]:
        """The pixel count of each structure from its mm2 parent (checked against its support)."""
        out = {}
        for structure in self.structures:
            name = structure_variable(structure)
            if name not in parents:
                raise InputError(f"parents lack {name!r}; expected {sorted(self.graph)}")
            out[structure] = round(self.check_value(name, parents[name]) / self.pixel_area_mm2)
        return out

    # ------------------------------------------------------------------ images

    @abstractmethod
    def render(self, noise: Mapping[str, float | int], parents: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
        """Deterministic ``(image, label_map)``: image in the stored dtype, label map ``uint8`` ``(H, W)``."""

    def counterfactual(
        self, noise: Mapping[str, float | int], do: Mapping[str, float]
    ) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
        """The true counterfactual ``(image, label_map, parents)`` of ``do`` for the sample with ``noise``.

        ``do = {}`` reproduces the factual sample bit for bit.
        """
        parents = self.parents_from_noise(noise, do)
        image, label = self.render(noise, parents)
        return image, label, parents

    @abstractmethod
    def write_image(
        self, image: np.ndarray, path: Path, case: str, parents: Mapping[str, float], photometric: str = "MONOCHROME2", index: int = 0
    ) -> None:
        """Write one image in the phantom's file format."""

    def write_dataset(
        self, out_dir: str | Path, n: int, seed: int, photometric: str = "MONOCHROME2", progress: bool = True
    ) -> Path:
        """Write ``n`` samples (images, label PNGs) and ``datalist.json`` under ``out_dir``; return its path.

        The same ``seed`` gives the same pixel data, parents and noise. Everything is
        staged and moved into ``out_dir`` at the end: a failure leaves no partial dataset.
        """
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise InputError(f"the number of samples must be a positive integer, got {n!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise InputError(f"seed must be a non-negative integer, got {seed!r}")
        out_dir = Path(out_dir)
        rng = np.random.default_rng(int(seed))
        items = []
        with staged_dir(out_dir) as stage:
            for i in tqdm(range(int(n)), desc=f"{self.kind} phantom", disable=not progress):
                case = f"{self.kind}_{i:05d}"
                noise = self.sample_noise(rng)
                parents = self.parents_from_noise(noise)
                image, label = self.render(noise, parents)
                image_rel = f"images/{case}{self.image_suffix}"
                label_rel = f"labels/{case}.png"
                self.write_image(image, stage / image_rel, case, parents, photometric, i)
                write_png(label, stage / label_rel)
                # regional areas are measurements of the rendered masks, recorded for positional variables
                measured = regional_area_values(torch.from_numpy(label), self.structures, self.regions, self.spacing)
                items.append({"case": case, "image": image_rel, "label": label_rel, "parents": {**parents, **measured}, "noise": noise})
            split = case_split([item["case"] for item in items], seed=int(seed))
            by_case = {item["case"]: item for item in items}
            datalist = make_datalist(
                f"phantom_{self.kind}",
                self.structures,
                {**self.variables, **region_variables(self.regions)},
                {name: [by_case[c] for c in cases] for name, cases in split.items()},
                description=self.description,
                modality=self.modality,
                graph={k: list(v) for k, v in self.graph.items()},
                regions=[asdict(r) for r in self.regions],
                spacing_mm=list(self.spacing),
                image_size=[self.size, self.size],
                phantom={"kind": self.kind, "size": self.size, "seed": int(seed)},
            )
            write_datalist(datalist, stage / "datalist.json")
        return out_dir / "datalist.json"
