"""A PA chest radiograph phantom with a known SCM, written as 12-bit DX DICOM.

Field of view 358 mm (JSRT: 512 px at 0.7 mm). Label map: left_lung = 1 (the patient's
left, on the image's RIGHT), right_lung = 2 (image left), heart = 3. The heart overlaps
the medial lower lungs and wins there; each lung is scaled so that its area *after*
removing the heart equals its target. Areas are in mm^2.

SCM (``sigmoid`` is the logistic function; every continuous mechanism is invertible in its noise)::

    age             = 20 + 65 u_age,                      u_age ~ U(0, 1)         [years]
    sex             = 1[u_sex < 0.5],                     u_sex ~ U(0, 1)         (1 = male)
    heart_area      = 5000 + 12000 sigmoid(-0.20 + 0.12 (age - 50)/10 + 0.30 sex + 0.35 u_h)
    left_lung_area  = 7000 + 15000 sigmoid(-0.05 - 0.12 (age - 50)/10 + 0.30 sex
                                           - 0.35 (heart_area - 11000)/3000 + 0.30 u_ll)
    right_lung_area = 8000 + 17000 sigmoid(0.20 - 0.12 (age - 50)/10 + 0.30 sex + 0.30 u_rl)

with ``u_h, u_ll, u_rl ~ N(0, 1)``: the heart grows with age and is larger in men; the
lungs shrink with age, are larger in men, and the left lung is compressed by a larger
heart. Means are about 11000, 15000 and 18000 mm^2; the supports (the ranges above) are
chosen so that any combination renders inside the field of view at any allowed pose.
The image-level noise is the pose (rotation up to 4 degrees, shift up to 6 mm) and the
seed of the texture and pixel noise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter, map_coordinates
from scipy.special import expit

from segcft.data.datalist import variable
from segcft.data.io import write_dicom_radiograph
from segcft.data.phantom.base import Phantom, bounded, select_smallest
from segcft.data.structures import CXR_REGIONS, CXR_STRUCTURES
from segcft.utils import InputError

BITS_STORED = 12
PHOTOMETRICS = ("MONOCHROME1", "MONOCHROME2")

#: Outline of the right lung (image left) around its centre, mm: (medial offset, down).
LUNG_OUTLINE_MM = np.array(
    [(5, -115), (-25, -100), (-45, -60), (-55, 0), (-58, 60), (-60, 105), (-30, 85), (0, 75),
     (25, 82), (38, 95), (40, 40), (35, -20), (28, -80), (18, -105)],
    dtype=np.float64,
)
LUNG_CENTRE_X_MM, LUNG_CENTRE_Y_MM = 75.0, 5.0
LEFT_LUNG_WIDTH = 0.92  # the left lung is a little narrower than the right
MIDLINE_GAP_MM = 12.0  # lungs stay this far from the midline (mediastinum)
HEART_CENTRE_MM = (22.0, 60.0)  # (x, y): lower middle, towards the image right
HEART_AXES = (1.2, 0.85)  # long and short axis ratio of the heart ellipse
HEART_TILT_DEG = 25.0  # long axis tilted down towards the image right (the apex)
BODY_HALF_WIDTH_MM, BODY_HALF_HEIGHT_MM, BODY_CENTRE_Y_MM = 165.0, 250.0, 30.0
RIB_PITCH_MM, RIB_TOP_MM, RIB_COUNT, RIB_CURVE = 22.0, -125.0, 10, 0.0025
MAX_ANGLE_DEG, MAX_SHIFT_MM = 4.0, 6.0  # pose limits
BLUR_MM = 1.5
PIXEL_NOISE = 0.006
TEXTURE_EXTENT_MM = 220.0


def _star_table(outline: np.ndarray, n: int = 720, smooth: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """The radius ``R(theta)`` of a star-shaped polygon on a regular angle grid, lightly smoothed."""
    closed = np.vstack([outline, outline[:1]])
    t = np.linspace(0.0, 1.0, 64, endpoint=False)
    dense = np.concatenate([a + t[:, None] * (b - a) for a, b in zip(closed[:-1], closed[1:])])
    angle = np.arctan2(dense[:, 1], dense[:, 0])
    radius = np.hypot(dense[:, 0], dense[:, 1])
    theta = np.linspace(-math.pi, math.pi, n, endpoint=False)
    order = np.argsort(angle)
    table = np.interp(theta, angle[order], radius[order], period=2 * math.pi)
    kernel = np.ones(2 * smooth + 1) / (2 * smooth + 1)
    table = np.convolve(np.concatenate([table[-smooth:], table, table[:smooth]]), kernel, mode="valid")
    return theta, table


LUNG_THETA, LUNG_RADIUS = _star_table(LUNG_OUTLINE_MM)


def _lung_gauge(x: np.ndarray, y: np.ndarray, side: int) -> np.ndarray:
    """Normalised radius of the lung outline: ``side`` = -1 right lung (image left), +1 left lung."""
    medial = side * (LUNG_CENTRE_X_MM * side - x)
    if side > 0:
        medial = medial / LEFT_LUNG_WIDTH
    dy = y - LUNG_CENTRE_Y_MM
    radius = np.interp(np.arctan2(dy, medial), LUNG_THETA, LUNG_RADIUS, period=2 * math.pi)
    return np.hypot(medial, dy) / radius


def _heart_gauge(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Normalised radius of the tilted heart ellipse."""
    t = math.radians(HEART_TILT_DEG)
    dx, dy = x - HEART_CENTRE_MM[0], y - HEART_CENTRE_MM[1]
    u = dx * math.cos(t) + dy * math.sin(t)
    v = -dx * math.sin(t) + dy * math.cos(t)
    return np.hypot(u / HEART_AXES[0], v / HEART_AXES[1])


def _texture(seed: int, x: np.ndarray, y: np.ndarray, nodes: int) -> np.ndarray:
    """Smooth noise in ``[-1, 1]``-ish from ``seed``, fixed to the body: the same at every image size."""
    grid = np.random.default_rng([seed, nodes]).standard_normal((nodes, nodes))
    scale = (nodes - 1) / (2 * TEXTURE_EXTENT_MM)
    coords = [(y + TEXTURE_EXTENT_MM) * scale, (x + TEXTURE_EXTENT_MM) * scale]
    return map_coordinates(grid, coords, order=3, mode="mirror") / 2


class CXRPhantom(Phantom):
    """Synthetic PA chest radiographs: lungs, heart, ribs, spine and body outline."""

    kind = "cxr"
    modality = "DX"
    description = "Synthetic PA chest radiographs with a known SCM (segcft CXR phantom)"
    fov_mm = 358.0
    image_suffix = ".dcm"
    structures = CXR_STRUCTURES
    regions = CXR_REGIONS
    graph = {
        "age": [],
        "sex": [],
        "heart_area": ["age", "sex"],
        "left_lung_area": ["age", "sex", "heart_area"],
        "right_lung_area": ["age", "sex"],
    }
    support = {
        "age": (20.0, 85.0),
        "sex": (0.0, 1.0),
        "heart_area": (5000.0, 17000.0),
        "left_lung_area": (7000.0, 22000.0),
        "right_lung_area": (8000.0, 25000.0),
    }
    root_variables = {
        "age": variable("continuous", "years"),
        "sex": variable("binary", values={"0": "female", "1": "male"}),
    }
    noise_keys = (
        "u_age", "u_sex", "u_heart_area", "u_left_lung_area", "u_right_lung_area",
        "pose_angle_deg", "pose_shift_row_mm", "pose_shift_col_mm", "texture_seed",
    )

    def __init__(self, size: int = 128) -> None:
        super().__init__(size)

    def sample_noise(self, rng: np.random.Generator) -> dict[str, float | int]:
        return {
            "u_age": float(rng.uniform()),
            "u_sex": float(rng.uniform()),
            "u_heart_area": float(rng.standard_normal()),
            "u_left_lung_area": float(rng.standard_normal()),
            "u_right_lung_area": float(rng.standard_normal()),
            "pose_angle_deg": float(np.clip(rng.normal(0.0, 2.0), -MAX_ANGLE_DEG, MAX_ANGLE_DEG)),
            "pose_shift_row_mm": float(np.clip(rng.normal(0.0, 3.0), -MAX_SHIFT_MM, MAX_SHIFT_MM)),
            "pose_shift_col_mm": float(np.clip(rng.normal(0.0, 3.0), -MAX_SHIFT_MM, MAX_SHIFT_MM)),
            "texture_seed": int(rng.integers(2**31 - 1)),
        }

    def _mechanism(self, name: str, pa: Mapping[str, float], noise: Mapping[str, float | int]) -> float:
        u = float(noise[f"u_{name}"])
        if name == "age":
            return 20.0 + 65.0 * u
        if name == "sex":
            return 1.0 if u < 0.5 else 0.0
        decades = (pa["age"] - 50.0) / 10.0
        if name == "heart_area":
            return bounded(*self.support[name], -0.20 + 0.12 * decades + 0.30 * pa["sex"] + 0.35 * u)
        if name == "left_lung_area":
            heart = (pa["heart_area"] - 11000.0) / 3000.0
            return bounded(*self.support[name], -0.05 - 0.12 * decades + 0.30 * pa["sex"] - 0.35 * heart + 0.30 * u)
        return bounded(*self.support[name], 0.20 - 0.12 * decades + 0.30 * pa["sex"] + 0.30 * u)

    def _body_coords(self, noise: Mapping[str, float | int]) -> tuple[np.ndarray, np.ndarray]:
        """Body coordinates (mm, x to the image right, y down) of every pixel under the pose."""
        limits = {"pose_angle_deg": MAX_ANGLE_DEG, "pose_shift_row_mm": MAX_SHIFT_MM, "pose_shift_col_mm": MAX_SHIFT_MM}
        for key, limit in limits.items():
            if abs(float(noise[key])) > limit:
                raise InputError(f"noise {key!r} = {noise[key]} is outside its allowed range [-{limit:g}, {limit:g}]")
        t = math.radians(float(noise["pose_angle_deg"]))
        dx = self._x_mm - float(noise["pose_shift_col_mm"])
        dy = self._y_mm - float(noise["pose_shift_row_mm"])
        return dx * math.cos(t) + dy * math.sin(t), -dx * math.sin(t) + dy * math.cos(t)

    def render(self, noise: Mapping[str, float | int], parents: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
        self._check_noise(noise)
        target = self._target_pixels(parents)
        x, y = self._body_coords(noise)
        px = self.pixel_area_mm2
        heart = select_smallest(_heart_gauge(x, y), target["heart"], "heart", px)
        right = select_smallest(
            np.where(~heart & (x < -MIDLINE_GAP_MM), _lung_gauge(x, y, -1), np.inf), target["right_lung"], "right_lung", px
        )
        left = select_smallest(
            np.where(~heart & (x > MIDLINE_GAP_MM), _lung_gauge(x, y, 1), np.inf), target["left_lung"], "left_lung", px
        )
        label = np.zeros((self.size, self.size), dtype=np.uint8)
        label[left] = self.structures["left_lung"]
        label[right] = self.structures["right_lung"]
        label[heart] = self.structures["heart"]
        return self._image(x, y, left | right, heart, int(noise["texture_seed"])), label

    def _image(self, x: np.ndarray, y: np.ndarray, lungs: np.ndarray, heart: np.ndarray, seed: int) -> np.ndarray:
        """Display intensities (bright = attenuating), blurred, noised and quantised to 12 bits."""
        bx2 = np.square(x / BODY_HALF_WIDTH_MM)
        by2 = np.square((y - BODY_CENTRE_Y_MM) / BODY_HALF_HEIGHT_MM)
        body = expit((1.0 - np.sqrt(np.sqrt(bx2 * bx2 + by2 * by2))) * 40.0)  # smooth superellipse outline
        thickness = np.clip(1.0 - bx2, 0.0, 1.0)
        mx2, sx2 = np.square(x / 38.0), np.square(x / 17.0)
        mediastinum = 0.16 * np.exp(-mx2 * mx2)
        spine = 0.10 * np.exp(-sx2 * sx2 * sx2) * (0.85 + 0.15 * np.cos(y * (2 * math.pi / 26.0)))
        phase = (y - RIB_CURVE * x * x - RIB_TOP_MM) / RIB_PITCH_MM
        offset = (phase - np.round(phase)) * (RIB_PITCH_MM / 4.5)
        ribs = np.exp(-offset * offset) * ((phase > -0.5) & (phase < RIB_COUNT - 0.5))
        lung = lungs.astype(np.float64)
        img = body * (0.42 + 0.16 * thickness + mediastinum + spine + 0.10 * heart)
        img = img * (1.0 - 0.6 * lung) + body * ribs * (0.05 + 0.08 * lung)
        img += body * (0.03 * _texture(seed, x, y, 12) + 0.03 * lung * _texture(seed, x, y, 40))
        img = gaussian_filter(img, BLUR_MM / self.spacing[0], mode="nearest")
        img += np.random.default_rng([seed, 0]).normal(0.0, PIXEL_NOISE, img.shape)
        top = 2**BITS_STORED - 1
        return np.rint(np.clip(img, 0.0, 1.0) * top).astype(np.uint16)

    def write_image(
        self, image: np.ndarray, path: Path, case: str, parents: Mapping[str, float], photometric: str = "MONOCHROME2", index: int = 0
    ) -> None:
        if photometric not in PHOTOMETRICS:
            raise InputError(f"photometric must be one of {PHOTOMETRICS}, got {photometric!r}")
        write_dicom_radiograph(
            image,
            path,
            self.spacing,
            photometric=photometric,
            modality=self.modality,
            bits_stored=BITS_STORED,
            patient_id=case,
            patient_name=f"Phantom^{case}",
            patient_sex="M" if parents["sex"] == 1.0 else "F",
            patient_age_years=int(round(parents["age"])),
            series_description="segcft CXR phantom",
            instance_number=index + 1,
        )
