"""The spatial-intensity counterfactual mechanism: tissue moves, texture stays.

A change of a structure's size is a change of shape, so instead of decoding ``x*`` afresh
this mechanism moves the boundaries of the intervened structures over the factual image::

    x* = x + b * (sum_c m_c * (warp(p_c, phi) - p_c) + s)

- ``p_c``: the class probabilities of a frozen segmentor (the CFT guide's) on ``x``, the
  image's layers; the segmentor is carried with the mechanism, so inference needs nothing else;
- ``phi``: a diffeomorphic displacement, a velocity field integrated by scaling and squaring
  (MONAI ``DVF2DDF``), that moves the layers;
- ``m_c``: class ``c``'s mean intensity around each pixel. A pixel that a boundary crosses
  changes by the local contrast of the classes it leaves and enters; a pixel no boundary
  crosses keeps its value, texture and all. (Wang, Rost and Golland, "Spatial-intensity
  transforms", MICCAI 2020, warp the image itself, which drags the texture inside and around
  a structure with its boundary; the phantoms' true counterfactuals move only the boundary.)
- ``b``: the band where the change may lie: the masks of the structures whose variables
  change (the intervened one and its causal descendants) on ``x``, dilated;
- ``s``: an optional sparse intensity change inside the band, for what a move cannot make
  (new plaque); off unless ``max_intensity`` > 0.

``phi`` and ``s`` come from :class:`SpatialHead` as ``head(x, pa, pa*) - head(x, pa, pa)``,
and a sample with no changed structure is returned as it is: ``pa* = pa`` gives ``x``
exactly (composition by construction). The change is first order in ``phi`` (warping a
layer), so a fresh head with ``phi = 0`` still has a gradient.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from monai.networks.blocks import DVF2DDF, Warp
from monai.networks.nets import UNet
from torch import nn

from segcft.utils import InputError

#: A parent counts as intervened where its standardised value moves by more than this.
CHANGE_TOL = 1e-6
#: Pseudo-count of a pixel's own value in the local class means (a class absent nearby takes it).
CONTEXT_EPS = 1e-2
#: How the class layers move: all by one displacement, or each moved structure by its own.
LAYERS = ("shared", "own")
#: What a pixel that a boundary crosses takes: the local class means, or the moved image itself.
FILLS = ("means", "warp", "strip")
#: Fills that take the moved image itself (they need the image, and one displacement to move it by).
MOVED_FILLS = ("warp", "strip")
#: ``fill="strip"``: a pixel whose class mix the move changes by this share takes the moved image in full.
STRIP_SATURATION = 0.3
#: What the head's displacement is added to: nothing, or each changed structure scaled about its centroid.
PRIORS = ("none", "scale")
#: The scale prior's bounds on a structure's linear scale factor (a plaque from nothing has no scale).
SCALE_BOUNDS = (0.5, 2.0)


@dataclass(frozen=True)
class SpatialSettings:
    """What rebuilds a spatial mechanism (recorded in model packages).

    ``max_displacement`` bounds the velocity (pixels at model size), ``max_intensity`` the
    intensity term (on the ``[-1, 1]`` range), ``band`` is the dilation (pixels) of the
    intervened structures' masks, ``context`` the half-width (pixels) of the box over which
    each class's local mean intensity is taken, ``width`` the head's first feature width.
    ``layers`` is ``"shared"`` (one displacement moves every class layer) or ``"own"`` (one
    displacement per moved structure, see :meth:`SpatialMechanism.moved_layers`). ``fill`` is
    what a pixel that a boundary crosses takes: ``"means"``, the local mean intensity of the
    class it enters; ``"warp"``, the moved image's own value there (the tissue the displacement
    brings), weighted by how much of the pixel changes class (see :meth:`SpatialMechanism.change`);
    ``"strip"``, as ``"warp"`` but in full wherever the pixel's class mix changes by
    :data:`STRIP_SATURATION` or more (a soft boundary otherwise takes only part of the move, and a
    structure falls short of it).
    ``prior`` ``"scale"`` starts every move from each changed structure scaled about its centroid
    by the square root of its requested area ratio (:meth:`SpatialMechanism.scale_prior`); the
    head's displacement is added to it. ``"none"``: the head's displacement alone.
    """

    structure_of: dict[str, str]
    structures: dict[str, int]
    segmentor_size: int
    width: int = 16
    max_displacement: float = 4.0
    max_intensity: float = 0.25
    band: int = 4
    context: int = 4
    int_steps: int = 7
    layers: str = "shared"
    fill: str = "means"
    prior: str = "none"

    def __post_init__(self) -> None:
        if self.prior not in PRIORS:
            raise InputError(f"spatial mechanism: prior must be one of {PRIORS}, got {self.prior!r}")
        if self.layers not in LAYERS:
            raise InputError(f"spatial mechanism: layers must be one of {LAYERS}, got {self.layers!r}")
        if self.fill not in FILLS:
            raise InputError(f"spatial mechanism: fill must be one of {FILLS}, got {self.fill!r}")
        if self.fill in MOVED_FILLS and self.layers != "shared":
            raise InputError(f"spatial mechanism: fill {self.fill!r} needs layers 'shared' (one displacement to move the image by)")
        if self.prior == "scale" and self.layers != "shared":
            raise InputError("spatial mechanism: prior 'scale' needs layers 'shared' (one displacement to add it to)")

    @property
    def moved_classes(self) -> list[int]:
        """The labels of the structures that move, each once, in the order of ``structure_of``."""
        return list(dict.fromkeys(self.structures[s] for s in self.structure_of.values()))

    @property
    def fields(self) -> int:
        """How many displacement fields the head gives: one, or one per moved structure."""
        return 1 if self.layers == "shared" else len(self.moved_classes)


class SpatialHead(nn.Module):
    """``(velocity, intensity)`` maps from the image, the segmentor's class probabilities and the parents.

    A MONAI ``UNet`` without normalisation (an instance norm would remove the constant parent
    maps) sees ``[x, p, pa, pa* - pa]``, parents broadcast as constant maps (as the reference
    HVAE feeds its parents). A zero-initialised 1x1 convolution ends it, so a fresh head moves
    nothing; the output is the difference of the head under ``pa*`` and under ``pa``.
    """

    def __init__(self, in_channels: int, classes: int, parent_dim: int, width: int = 16,
                 max_displacement: float = 4.0, max_intensity: float = 0.25, fields: int = 1) -> None:
        super().__init__()
        w = width
        self.net = UNet(2, in_channels + classes + 2 * parent_dim, w, channels=(w, 2 * w, 4 * w, 4 * w), strides=(2, 2, 2),
                        num_res_units=1, norm=None)
        self.out = nn.Conv2d(w, 2 * fields + 1, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.max_displacement, self.max_intensity = float(max_displacement), float(max_intensity)

    def forward(self, x: torch.Tensor, probs: torch.Tensor, cond: torch.Tensor, cond_cf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, _, h, w = x.shape

        def maps(c: torch.Tensor) -> torch.Tensor:
            return c[:, :, None, None].expand(-1, -1, h, w)

        factual = torch.cat([x, probs, maps(cond), maps(torch.zeros_like(cond))], 1)
        moved = torch.cat([x, probs, maps(cond), maps(cond_cf - cond)], 1)
        raw = torch.tanh(self.out(self.net(torch.cat([moved, factual]))))
        diff = raw[:b] - raw[b:]
        return self.max_displacement * diff[:, :-1], self.max_intensity * diff[:, -1:]


class SpatialMechanism(nn.Module):
    """``x* = x + b * (sum_c m_c * (warp(p_c, phi) - p_c) + s)`` (see the module docstring).

    ``variables`` is the order of the parent vector the deep SCM conditions on; ``segmentor``
    is the frozen network whose masks place the band (it is saved with the mechanism).
    """

    def __init__(self, settings: SpatialSettings, segmentor: nn.Module, variables: Sequence[str], in_channels: int = 1) -> None:
        super().__init__()
        unknown = [v for v, s in settings.structure_of.items() if v not in variables or s not in settings.structures]
        if unknown:
            raise InputError(f"spatial mechanism: variables {unknown} are not structure variables of the model {list(variables)}")
        if not settings.structure_of:
            raise InputError("spatial mechanism: the model has no structure variable to move")
        self.settings = settings
        self.segmentor = segmentor.eval().requires_grad_(False)
        classes = max(settings.structures.values()) + 1
        self.head = SpatialHead(in_channels, classes, len(variables), settings.width, settings.max_displacement,
                                settings.max_intensity, settings.fields)
        index = {v: i for i, v in enumerate(variables)}
        self.columns = [index[v] for v in settings.structure_of]
        self.classes = [settings.structures[s] for s in settings.structure_of.values()]
        self.integrate = DVF2DDF(settings.int_steps, mode="bilinear", padding_mode="border")
        self.warp = Warp(mode="bilinear", padding_mode="border")

    def train(self, mode: bool = True) -> SpatialMechanism:  # the segmentor never leaves eval mode
        super().train(mode)
        self.segmentor.eval()
        return self

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """The segmentor's class probabilities on ``x``, at ``x``'s size."""
        size = self.settings.segmentor_size
        seen = x if x.shape[-1] == size else F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        probs = self.segmentor(seen).softmax(1)
        return probs if probs.shape[-1] == x.shape[-1] else F.interpolate(probs, size=x.shape[-2:], mode="bilinear", align_corners=False)

    def band(self, probs: torch.Tensor, moved: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)``: the dilated union of the masks of the structures whose variables moved."""
        labels = probs.argmax(1)
        mask = torch.zeros_like(labels, dtype=probs.dtype)
        for j, c in enumerate(self.classes):
            mask = torch.maximum(mask, (labels == c).to(probs.dtype) * moved[:, j, None, None].to(probs.dtype))
        k = self.settings.band
        return F.max_pool2d(mask[:, None], 2 * k + 1, stride=1, padding=k) if k > 0 else mask[:, None]

    def class_means(self, x: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        """``(B, K, H, W)``: each class's mean intensity around every pixel (a box of ``context`` pixels).

        Where a class is absent nearby, its mean tends to the pixel's own value, so moving a
        boundary there changes nothing.
        """
        k = self.settings.context
        box = lambda t: F.avg_pool2d(t, 2 * k + 1, stride=1, padding=k, count_include_pad=False)
        return (box(x * probs) + CONTEXT_EPS * x) / (box(probs) + CONTEXT_EPS)

    def move(self, x: torch.Tensor, probs: torch.Tensor, ddf: torch.Tensor, band: torch.Tensor,
             intensity: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` with its class layers moved by ``ddf`` inside ``band``: ``x + b * (sum_c m_c (warp(p_c) - p_c) + s)``.

        ``m_c`` is class ``c``'s local mean intensity (:meth:`class_means`): a pixel the
        boundary crosses changes by the local contrast of the classes it leaves and enters,
        and a pixel no boundary crosses keeps its value, texture and all.
        """
        return x + self.change(self.class_means(x, probs), probs, ddf, band, intensity, x)

    def change(self, means: torch.Tensor, probs: torch.Tensor, ddf: torch.Tensor, band: torch.Tensor,
               intensity: torch.Tensor | None = None, x: torch.Tensor | None = None) -> torch.Tensor:
        """``b * (sum_c m_c (warp(p_c) - p_c) + s)``: the change :meth:`move` adds, at whatever size its inputs have.

        With ``fill="warp"`` the layer term is ``r * (warp(x) - x)`` instead, ``r = sum_c
        |warp(p_c) - p_c| / 2`` the share of the pixel that changes class: a relabelled pixel
        takes the value of the tissue the displacement brings, at its full contrast (the local
        class means blur a boundary's contrast), and a pixel no boundary crosses keeps ``x``. Its
        gradient adds the class means' term's: ``r * (warp(x) - x)`` is second order in ``phi``,
        so without it a fresh head (``phi = 0``) gets no gradient at all. ``fill="strip"`` takes
        ``min(1, r / STRIP_SATURATION)`` for ``r``: a soft boundary's pixels, whose class mix changes
        only in part, would otherwise keep some of the old edge, which a segmentor still reads as
        the boundary (the structure then falls short of its move); pixels no boundary comes near
        still keep ``x``.
        """
        layers = self.moved_layers(probs, ddf)
        change = (means * (layers - probs)).sum(1, keepdim=True)
        if self.settings.fill in MOVED_FILLS:
            if x is None:
                raise InputError(f"spatial mechanism: fill {self.settings.fill!r} needs the image to move")
            share = 0.5 * (layers - probs).abs().sum(1, keepdim=True)
            if self.settings.fill == "strip":
                share = (share / STRIP_SATURATION).clamp(max=1.0)
            moved = share * (self.warp(x, ddf) - x)
            # the value is the moved tissue's; the means' term adds only its gradient, which is
            # first order in phi where the moved tissue's is second order (zero for a fresh head)
            change = moved + change - change.detach()
        if intensity is not None:
            change = change + intensity
        return band * change

    def moved_layers(self, probs: torch.Tensor, ddf: torch.Tensor) -> torch.Tensor:
        """The class layers after the move, still a partition of each pixel.

        ``shared``: every layer warped by the one ``ddf``. ``own``: each moved structure's
        layer warped by its own field (``ddf`` is ``(B, 2 * structures, H, W)``), the other
        structures kept; where the structures now overlap they share the pixel in proportion,
        and the background (class 0) takes what they leave. A heart that shrinks thus frees
        pixels that a growing lung may fill, without dragging the lung's far boundary along.
        """
        if self.settings.layers == "shared":
            return self.warp(probs, ddf)
        moved = list(probs.unbind(1))
        for j, c in enumerate(self.settings.moved_classes):
            moved[c] = self.warp(probs[:, c : c + 1], ddf[:, 2 * j : 2 * j + 2])[:, 0]
        structures = torch.stack(moved[1:], 1)
        total = structures.sum(1, keepdim=True)
        structures = structures / total.clamp(min=1.0)
        return torch.cat([(1.0 - structures.sum(1, keepdim=True)).clamp(min=0.0), structures], 1)

    def scale_prior(self, probs: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
        """``(B, 2, H, W)``: the displacement that scales each changed structure about its centroid.

        Structure ``j`` (``ratio[:, j]`` its requested area over its factual area) is scaled by
        ``s = sqrt(ratio)`` (within :data:`SCALE_BOUNDS`): the warp samples ``x`` at ``c + (p - c) / s``,
        so the field is ``(1 / s - 1) (p - c)`` about the centroid ``c`` of its factual mask. A
        shrinking structure's field acts on its mask and one pixel around it (its boundary pixels
        take the whole move), a growing one's on its mask dilated by ``band`` (where its new
        boundary may lie), each fading to zero over a pixel, so the neighbours' boundaries stay
        where they are; the fields of several structures add. A ratio
        of 1 gives exactly zero. Its shape is a guess that the head corrects: a size change as the
        structure's own scaling, which is the phantoms' truth and a first order of anatomy's.
        """
        labels = probs.argmax(1)
        b, h, w = labels.shape
        dtype = probs.dtype
        rows = torch.arange(h, device=labels.device, dtype=dtype)[:, None].expand(h, w)
        cols = torch.arange(w, device=labels.device, dtype=dtype)[None, :].expand(h, w)
        grid = torch.stack([rows, cols])[None]  # (1, 2, H, W): MONAI's Warp takes the DDF in (row, col) order
        k = self.settings.band
        ddf = torch.zeros(b, 2, h, w, device=labels.device, dtype=dtype)
        for j, c in enumerate(self.classes):
            if bool((ratio[:, j] == 1).all()):  # a structure no sample changes adds exactly zero
                continue
            mask = (labels == c).to(dtype)[:, None]
            count = mask.sum((2, 3), keepdim=True)
            centre = (grid * mask).sum((2, 3), keepdim=True) / count.clamp(min=1.0)
            scale = ratio[:, j].clamp(min=1e-6).sqrt().clamp(*SCALE_BOUNDS)[:, None, None, None]
            # the full field on the mask's own boundary pixels (shrinking) or as far as the band (growing)
            reach = F.max_pool2d(mask, 3, stride=1, padding=1)
            if k > 1 and bool((scale > 1).any()):
                reach = torch.where(scale > 1, F.max_pool2d(mask, 2 * k + 1, stride=1, padding=k), reach)
            weight = F.avg_pool2d(reach, 3, stride=1, padding=1, count_include_pad=False)
            ddf = ddf + weight * (count > 0) * (1.0 / scale - 1.0) * (grid - centre)
        return ddf

    def integrate_fields(self, velocity: torch.Tensor) -> torch.Tensor:
        """Velocities ``(B, 2F, H, W)`` to displacements of the same shape, each field integrated alone."""
        b, _, h, w = velocity.shape
        return self.integrate(velocity.reshape(-1, 2, h, w)).reshape(b, -1, h, w)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, cond_cf: torch.Tensor,
                ratio: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``image`` (x*), ``displacement`` (the DDF, pixels), ``residual`` (the head's part of it, the
        whole DDF without a prior), ``intensity`` (s), ``band``, the segmentor's
        ``probabilities`` and the class ``means`` for a batch, and ``moved`` (which samples change at all).

        ``ratio`` ``(B, J)``: each structure variable's counterfactual over its factual value, in
        the order of ``settings.structure_of``; the scale prior needs it.
        """
        moved = (cond_cf - cond)[:, self.columns].abs() > CHANGE_TOL
        with torch.no_grad():
            probs = self.probabilities(x)
            band = self.band(probs, moved)
        velocity, intensity = self.head(x, probs, cond, cond_cf)
        residual = ddf = self.integrate_fields(velocity)
        if self.settings.prior == "scale":
            if ratio is None:
                raise InputError("spatial mechanism: prior 'scale' needs the structures' area ratios")
            ddf = residual + self.scale_prior(probs, ratio.to(probs))
        intensity = intensity if self.settings.max_intensity > 0 else torch.zeros_like(intensity)
        means = self.class_means(x, probs)
        moved_x = x + self.change(means, probs, ddf, band, intensity, x)
        changed = moved.any(1)
        image = torch.where(changed[:, None, None, None], moved_x.clamp(-1, 1), x)
        return {"image": image, "displacement": ddf, "residual": residual, "intensity": intensity * band, "band": band,
                "probabilities": probs, "means": means, "moved": changed}

    def full_resolution_change(self, out: Mapping[str, torch.Tensor], resample, ratio: float,
                               image: torch.Tensor | None = None) -> torch.Tensor:
        """The change ``x* - x`` of one sample on a finer grid, from :meth:`forward`'s ``out`` at model size.

        ``resample`` maps a ``(C, S, S)`` model-size map onto the fine ``(H, W)`` grid
        (bilinear); ``ratio`` is fine pixels per model pixel. The displacement is resampled and
        scaled to fine pixels, the class layers are resampled and sharpened back to the
        boundary width they had at model size (``softmax(ratio * log p)``: a boundary
        ``ratio`` times wider after upsampling is that much narrower again), and the same
        layer move is made at the fine grid. The change is a moved boundary of the fine grid's
        width over the fine image's own texture, where adding the upsampled model-size change
        would smear the boundary over ``ratio`` fine pixels. ``image`` is the fine ``(H, W)``
        image in model intensity units (an offset does not matter), which ``fill="warp"`` moves.
        Returns ``(H, W)``, in model intensity units; zero outside the band, and exactly zero for
        a sample that does not move.
        """
        if self.settings.fill in MOVED_FILLS and image is None:
            raise InputError(f"spatial mechanism: fill {self.settings.fill!r} needs the input image for its full-resolution change")
        if not bool(out["moved"][0]):
            return torch.zeros_like(resample(out["band"][0])[0])
        probs = (resample(out["probabilities"][0]).clamp(min=1e-6).log() * max(1.0, float(ratio))).softmax(0)[None]
        ddf = resample(out["displacement"][0])[None] * float(ratio)
        band = resample(out["band"][0])[None]
        means = resample(out["means"][0])[None]
        intensity = resample(out["intensity"][0])[None]
        fine = None if image is None else image.to(ddf)[None, None]
        return self.change(means, probs, ddf, band, intensity, fine)[0, 0]


def folding_share(ddf: torch.Tensor, band: torch.Tensor | None = None) -> torch.Tensor:
    """Per sample, the share of pixels (inside ``band`` if given) where ``identity + ddf`` folds (Jacobian det <= 0).

    ``ddf`` may hold several fields (``(B, 2F, H, W)``, one per moved structure): a pixel
    counts where any of them folds.
    """
    d = ddf.reshape(ddf.shape[0], -1, 2, *ddf.shape[-2:])
    dy = (d[..., 2:, 1:-1] - d[..., :-2, 1:-1]) / 2  # central differences along rows and columns
    dx = (d[..., 1:-1, 2:] - d[..., 1:-1, :-2]) / 2
    det = (1 + dy[:, :, 0]) * (1 + dx[:, :, 1]) - dx[:, :, 0] * dy[:, :, 1]
    folds = (det <= 0).any(1).to(ddf.dtype)
    region = torch.ones_like(folds) if band is None else band[:, 0, 1:-1, 1:-1]
    return (folds * region).sum((1, 2)) / region.sum((1, 2)).clamp(min=1)


def spatial_settings(structure_of: Mapping[str, str], structures: Mapping[str, int], segmentor_size: int, **options) -> SpatialSettings:
    """Settings from a model's structure variables and its segmentor; ``options`` are the other fields."""
    known = set(SpatialSettings.__dataclass_fields__) - {"structure_of", "structures", "segmentor_size"}
    unknown = set(options) - known
    if unknown:
        raise InputError(f"unknown spatial mechanism option(s) {sorted(unknown)}; known: {sorted(known)}")
    return SpatialSettings(dict(structure_of), dict(structures), int(segmentor_size), **options)
