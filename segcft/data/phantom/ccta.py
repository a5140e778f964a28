"""A coronary CT angiography cross-section phantom with a known SCM, written as NIfTI in HU.

Field of view 8 mm (64 px = 0.125 mm). Label map: lumen = 1 (a mild ellipse, slightly
off-centre), vessel_wall = 2 (an annulus around lumen and plaques), calcified_plaque = 3,
noncalcified_plaque = 4. Each plaque is a crescent between lumen and wall, centred at its
own exogenous angle (degrees counter-clockwise from the image's right, 90 = up, around the
lumen centre, the convention of ``segcft.measure.regions``); the two plaques' angular
ranges never overlap. In the image the calcium is blurred with a wider kernel than the
rest (blooming), so it looks larger than its mask.

SCM (areas in mm^2; ``sigmoid`` is the logistic function, each mechanism invertible in its
noise, ``u_* ~ N(0, 1)`` except ``u_age ~ U(0, 1)``)::

    age                      = 35 + 50 u_age                                            [years]
    calcified_plaque_area    = 1.5 + 3.0 sigmoid(-0.8 + 0.45 (age - 60)/10 + 0.5 u_cp)
    noncalcified_plaque_area = 1.5 + 3.0 sigmoid(-0.3 + 0.20 (age - 60)/10 + 0.5 u_ncp)
    vessel_wall_area         = 3.0 + 4.0 sigmoid(-0.2 + 0.15 (age - 60)/10 + 0.4 u_w)
    lumen_area               = 3.0 + 6.0 sigmoid(0.3 - 0.5 (calcified + noncalcified - 5)/2 + 0.4 u_l)

Age drives both plaque burdens (calcium more strongly) and thickens the wall; plaque
burden narrows the lumen. Means are about 2.5, 2.8, 4.8 and 6.4 mm^2. The wall is
caused by age only (a design choice), so it is not a descendant of the plaques or the
lumen. The supports (the ranges above) keep plaques >= 96 px and the lumen >= 190 px at
64 x 64, and fit inside the field of view even with every area at its maximum.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from scipy.ndimage import distance_transform_edt, gaussian_filter, map_coordinates

from segcft.data.datalist import variable
from segcft.data.io import write_nifti
from segcft.data.phantom.base import Phantom, bounded, select_smallest
from segcft.data.structures import CCTA_REGIONS, CCTA_STRUCTURES
from segcft.utils import InputError

#: Each plaque's noise key of its centre angle and its crescent's half-width (degrees);
#: the two centres are at least the sum of the half-widths apart.
PLAQUES = {"calcified_plaque": ("calcified_angle_deg", 65.0), "noncalcified_plaque": ("noncalcified_angle_deg", 85.0)}
LUMEN_OFFSET_MM = 0.25  # largest offset of the lumen centre from the image centre, per axis
MAX_ASPECT = 1.2  # largest ratio of the lumen ellipse's axes
PSF_MM, BLOOM_MM = 0.2, 0.35
WALL_THICKNESS_VARIATION = 0.25  # relative, thickest at ``wall_angle_deg``
HU_RANGE = (-1024, 3071)
#: The noise key of each structure's attenuation; calcium is added separately (blooming).
TISSUE_HU = {
    "lumen": "lumen_hu",
    "vessel_wall": "wall_hu",
    "calcified_plaque": "wall_hu",
    "noncalcified_plaque": "noncalcified_hu",
}


def _angle_deg(dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Angle counter-clockwise from the image's right (y points down), degrees in (-180, 180]."""
    return np.degrees(np.arctan2(-dy, dx))


def _wrap_deg(a: np.ndarray | float) -> np.ndarray | float:
    """An angle difference in [-180, 180)."""
    return (a + 180.0) % 360.0 - 180.0


class CCTAPhantom(Phantom):
    """Synthetic coronary cross-sections: lumen, wall, calcified and non-calcified plaque."""

    kind = "ccta"
    modality = "CT"
    description = "Synthetic coronary CTA cross-sections in HU with a known SCM (segcft CCTA phantom)"
    fov_mm = 8.0
    image_suffix = ".nii.gz"
    structures = CCTA_STRUCTURES
    regions = CCTA_REGIONS
    graph = {
        "age": [],
        "calcified_plaque_area": ["age"],
        "noncalcified_plaque_area": ["age"],
        "vessel_wall_area": ["age"],
        "lumen_area": ["calcified_plaque_area", "noncalcified_plaque_area"],
    }
    support = {
        "age": (35.0, 85.0),
        "calcified_plaque_area": (1.5, 4.5),
        "noncalcified_plaque_area": (1.5, 4.5),
        "vessel_wall_area": (3.0, 7.0),
        "lumen_area": (3.0, 9.0),
    }
    root_variables = {"age": variable("continuous", "years")}
    noise_keys = (
        "u_age", "u_calcified_plaque_area", "u_noncalcified_plaque_area", "u_vessel_wall_area", "u_lumen_area",
        "lumen_row_mm", "lumen_col_mm", "lumen_aspect", "lumen_orientation_deg",
        "calcified_angle_deg", "noncalcified_angle_deg", "wall_angle_deg",
        "fat_hu", "wall_hu", "noncalcified_hu", "lumen_hu", "calcium_hu", "noise_hu", "texture_seed",
    )

    def __init__(self, size: int = 64) -> None:
        super().__init__(size)

    def sample_noise(self, rng: np.random.Generator) -> dict[str, float | int]:
        calcified = float(rng.uniform(0.0, 360.0))
        gap = 180.0 + float(rng.uniform(-30.0, 30.0))
        return {
            "u_age": float(rng.uniform()),
            "u_calcified_plaque_area": float(rng.standard_normal()),
            "u_noncalcified_plaque_area": float(rng.standard_normal()),
            "u_vessel_wall_area": float(rng.standard_normal()),
            "u_lumen_area": float(rng.standard_normal()),
            "lumen_row_mm": float(rng.uniform(-LUMEN_OFFSET_MM, LUMEN_OFFSET_MM)),
            "lumen_col_mm": float(rng.uniform(-LUMEN_OFFSET_MM, LUMEN_OFFSET_MM)),
            "lumen_aspect": float(rng.uniform(1.0, MAX_ASPECT)),
            "lumen_orientation_deg": float(rng.uniform(0.0, 180.0)),
            "calcified_angle_deg": calcified,
            "noncalcified_angle_deg": (calcified + gap) % 360.0,
            "wall_angle_deg": float(rng.uniform(0.0, 360.0)),
            "fat_hu": float(rng.uniform(-110.0, -80.0)),
            "wall_hu": float(rng.uniform(40.0, 60.0)),
            "noncalcified_hu": float(rng.uniform(20.0, 60.0)),
            "lumen_hu": float(rng.uniform(350.0, 450.0)),
            "calcium_hu": float(rng.uniform(600.0, 1000.0)),
            "noise_hu": float(rng.uniform(15.0, 25.0)),
            "texture_seed": int(rng.integers(2**31 - 1)),
        }

    def _mechanism(self, name: str, pa: Mapping[str, float], noise: Mapping[str, float | int]) -> float:
        u = float(noise[f"u_{name}"])
        if name == "age":
            return 35.0 + 50.0 * u
        if name == "lumen_area":
            burden = (pa["calcified_plaque_area"] + pa["noncalcified_plaque_area"] - 5.0) / 2.0
            return bounded(*self.support[name], 0.3 - 0.5 * burden + 0.4 * u)
        decades = (pa["age"] - 60.0) / 10.0
        if name == "calcified_plaque_area":
            return bounded(*self.support[name], -0.8 + 0.45 * decades + 0.5 * u)
        if name == "noncalcified_plaque_area":
            return bounded(*self.support[name], -0.3 + 0.20 * decades + 0.5 * u)
        return bounded(*self.support[name], -0.2 + 0.15 * decades + 0.4 * u)

    def _check_geometry(self, noise: Mapping[str, float | int]) -> None:
        aspect = float(noise["lumen_aspect"])
        if not 1.0 <= aspect <= MAX_ASPECT:
            raise InputError(f"noise 'lumen_aspect' = {aspect} is outside its allowed range [1, {MAX_ASPECT}]")
        for key in ("lumen_row_mm", "lumen_col_mm"):
            if abs(float(noise[key])) > LUMEN_OFFSET_MM:
                raise InputError(
                    f"noise {key!r} = {noise[key]} is outside its allowed range [-{LUMEN_OFFSET_MM}, {LUMEN_OFFSET_MM}] mm"
                )
        gap = abs(_wrap_deg(float(noise["noncalcified_angle_deg"]) - float(noise["calcified_angle_deg"])))
        need = sum(half for _, half in PLAQUES.values())
        if gap < need:
            raise InputError(f"plaque angles are {gap:.1f} degrees apart; they must be >= {need:g} so the plaques do not overlap")

    def render(self, noise: Mapping[str, float | int], parents: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
        self._check_noise(noise)
        self._check_geometry(noise)
        target = self._target_pixels(parents)
        px = self.pixel_area_mm2
        dx = self._x_mm - float(noise["lumen_col_mm"])
        dy = self._y_mm - float(noise["lumen_row_mm"])
        t = math.radians(float(noise["lumen_orientation_deg"]))
        stretch = math.sqrt(float(noise["lumen_aspect"]))
        u = dx * math.cos(t) + dy * math.sin(t)
        v = -dx * math.sin(t) + dy * math.cos(t)
        radius = np.hypot(u / stretch, v * stretch)  # area-preserving elliptical radius, mm
        angle = _angle_deg(dx, dy)

        lumen = select_smallest(radius, target["lumen"], "lumen", px)
        outside = radius - radius[lumen].max()  # > 0 off the lumen: radial depth of a crescent
        plaques = {}
        for name, (key, half) in PLAQUES.items():
            offset = _wrap_deg(angle - float(noise[key])) / half
            profile = np.sqrt(np.clip(1.0 - offset**2, 0.0, None))  # elliptical crescent, zero at the ends
            gauge = np.where(~lumen & (profile > 0), outside / np.maximum(profile, 1e-12), np.inf)
            plaques[name] = select_smallest(gauge, target[name], name, px)
        inner = lumen | plaques["calcified_plaque"] | plaques["noncalcified_plaque"]
        depth = distance_transform_edt(~inner, sampling=self.spacing)
        thickness = 1.0 + WALL_THICKNESS_VARIATION * np.cos(np.radians(angle - float(noise["wall_angle_deg"])))
        wall = select_smallest(np.where(inner, np.inf, depth / thickness), target["vessel_wall"], "vessel_wall", px)

        label = np.zeros((self.size, self.size), dtype=np.uint8)
        for name, mask in (("lumen", lumen), ("vessel_wall", wall), *plaques.items()):
            label[mask] = self.structures[name]
        return self._image(label, noise), label

    def _image(self, label: np.ndarray, noise: Mapping[str, float | int]) -> np.ndarray:
        """HU image: fat texture, tissue levels, PSF blur, calcium blooming and Gaussian noise."""
        seed = int(noise["texture_seed"])
        grid = np.random.default_rng([seed, 0]).standard_normal((6, 6))
        scale = 5.0 / self.fov_mm
        coords = [(self._y_mm + self.fov_mm / 2) * scale, (self._x_mm + self.fov_mm / 2) * scale]
        base = float(noise["fat_hu"]) + 12.0 * map_coordinates(grid, coords, order=3, mode="mirror")
        for name, index in self.structures.items():
            base[label == index] = float(noise[TISSUE_HU[name]])
        calcium = (label == self.structures["calcified_plaque"]) * (float(noise["calcium_hu"]) - float(noise["wall_hu"]))
        step = self.spacing[0]
        img = gaussian_filter(base, PSF_MM / step, mode="nearest") + gaussian_filter(calcium, BLOOM_MM / step, mode="nearest")
        img += np.random.default_rng([seed, 1]).normal(0.0, float(noise["noise_hu"]), img.shape)
        return np.clip(np.rint(img), *HU_RANGE).astype(np.int16)

    def write_image(
        self, image: np.ndarray, path: Path, case: str, parents: Mapping[str, float], photometric: str = "MONOCHROME2", index: int = 0
    ) -> None:
        if photometric != "MONOCHROME2":
            raise InputError(f"photometric {photometric!r} applies to DICOM radiographs; CCTA phantoms are NIfTI in HU")
        write_nifti(image, path, self.spacing)
