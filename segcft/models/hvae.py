"""A conditional hierarchical VAE: the image mechanism ``x = g(pa, z, u_x)`` of the deep SCM.

The design follows the top-down "very deep VAE": a bottom-up encoder, then a top-down
decoder whose blocks each hold a stochastic latent with a prior ``p(z_i | z_<i, pa)`` and
a posterior ``q(z_i | z_<i, x, pa)``. The parents are injected at every resolution: into
the prior, the posterior, and the deterministic path (``h += proj([z, pa])``), so that a
counterfactual with the latents held fixed can still change the image. With
``conditioning="film"`` each variable has its own embedding, and every block's residual
input is also scaled and shifted by the parents (FiLM), so a parent can modulate features
where they are instead of adding one constant map over the image.

The likelihood is a per-pixel discretized Gaussian over 256 levels in ``[-1, 1]``: its
negative log-likelihood in bits per dimension is that of an 8-bit image, and its
location/scale give the exogenous pixel noise ``u_x = (x - mu) / sigma`` for abduction.
Its scale is per pixel (``diag``, predicted by the decoder), one learned value (``shared``)
or a constant (``fixed``), as in the reference HVAE.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from segcft.utils import InputError

LOG_SCALE_MIN = -7.0
#: ``embed``: one MLP embedding of all parents, concatenated; ``film``: one embedding per
#: variable, concatenated and also scaling/shifting every block's features.
CONDITIONINGS = ("embed", "film")
#: The likelihood's scale: per pixel from the decoder, one learned value, or fixed at ``std_init``.
LIKELIHOOD_SCALES = ("diag", "shared", "fixed")
BIN = 1.0 / 255.0  # half-width of an 8-bit level on [-1, 1]


@dataclass
class Stage:
    """One resolution of the hierarchy: feature width, blocks and latent channels (0: none)."""

    resolution: int
    width: int
    enc_blocks: int = 1
    dec_blocks: int = 1
    z_dim: int = 16


@dataclass
class HVAEConfig:
    """Architecture of the HVAE, from config. ``stages`` run from fine to coarse."""

    stages: list[Stage]
    parent_dim: int
    in_channels: int = 1
    bottleneck: int = 4
    parent_embed: int = 16
    conditioning: str = "embed"
    film_embed: int = 8
    likelihood_scale: str = "diag"
    std_init: float = 0.1

    def __post_init__(self) -> None:
        self.stages = [s if isinstance(s, Stage) else Stage(**s) for s in self.stages]
        if self.conditioning not in CONDITIONINGS:
            raise InputError(f"hvae.conditioning must be one of {CONDITIONINGS}, got {self.conditioning!r}")
        if self.likelihood_scale not in LIKELIHOOD_SCALES:
            raise InputError(f"hvae.likelihood_scale must be one of {LIKELIHOOD_SCALES}, got {self.likelihood_scale!r}")
        if not self.std_init > 0:
            raise InputError(f"hvae.std_init must be > 0, got {self.std_init}")
        res = [s.resolution for s in self.stages]
        if res != sorted(res, reverse=True) or len(set(res)) != len(res):
            raise InputError(f"HVAE stages must have strictly decreasing resolutions, got {res}")
        if not any(s.z_dim > 0 for s in self.stages):
            raise InputError("an HVAE needs at least one stage with latents (z_dim > 0)")

    @property
    def resolution(self) -> int:
        return self.stages[0].resolution

    @property
    def embed_dim(self) -> int:
        """Channels of the parents' embedding that each block concatenates."""
        return self.parent_embed if self.conditioning == "embed" else self.parent_dim * self.film_embed



#: Presets: small ones train on 2 CPU cores; the large ones are for a GPU.
PRESETS: dict[str, list[dict]] = {
    "cpu64": [
        {"resolution": 64, "width": 32, "enc_blocks": 1, "dec_blocks": 1, "z_dim": 0},
        {"resolution": 32, "width": 64, "enc_blocks": 1, "dec_blocks": 1, "z_dim": 8},
        {"resolution": 16, "width": 64, "enc_blocks": 2, "dec_blocks": 2, "z_dim": 16},
        {"resolution": 8, "width": 96, "enc_blocks": 2, "dec_blocks": 2, "z_dim": 16},
        {"resolution": 4, "width": 128, "enc_blocks": 2, "dec_blocks": 2, "z_dim": 16},
        {"resolution": 1, "width": 128, "enc_blocks": 1, "dec_blocks": 1, "z_dim": 16},
    ],
    "cpu128": [
        {"resolution": 128, "width": 16, "enc_blocks": 1, "dec_blocks": 1, "z_dim": 0},
        {"resolution": 64, "width": 32, "enc_blocks": 1, "dec_blocks": 1, "z_dim": 0},
        {"resolution": 32, "width": 64, "enc_blocks": 1, "dec_blocks": 1, "z_dim": 8},
        {"resolution": 16, "width": 64, "enc_blocks": 2, "dec_blocks": 2, "z_dim": 16},
        {"resolution": 8, "width": 96, "enc_blocks": 2, "dec_blocks": 2, "z_dim": 16},
        {"resolution": 4, "width": 128, "enc_blocks": 2, "dec_blocks": 2, "z_dim": 16},
        {"resolution": 1, "width": 128, "enc_blocks": 1, "dec_blocks": 1, "z_dim": 16},
    ],
    "gpu192": [
        {"resolution": 192, "width": 32, "enc_blocks": 3, "dec_blocks": 2, "z_dim": 0},
        {"resolution": 96, "width": 64, "enc_blocks": 4, "dec_blocks": 3, "z_dim": 8},
        {"resolution": 48, "width": 96, "enc_blocks": 5, "dec_blocks": 5, "z_dim": 16},
        {"resolution": 24, "width": 128, "enc_blocks": 6, "dec_blocks": 6, "z_dim": 16},
        {"resolution": 12, "width": 192, "enc_blocks": 6, "dec_blocks": 6, "z_dim": 16},
        {"resolution": 6, "width": 256, "enc_blocks": 4, "dec_blocks": 4, "z_dim": 16},
        {"resolution": 1, "width": 256, "enc_blocks": 2, "dec_blocks": 2, "z_dim": 16},
    ],
    "gpu256": [
        {"resolution": 256, "width": 32, "enc_blocks": 3, "dec_blocks": 2, "z_dim": 0},
        {"resolution": 128, "width": 64, "enc_blocks": 4, "dec_blocks": 3, "z_dim": 8},
        {"resolution": 64, "width": 96, "enc_blocks": 5, "dec_blocks": 5, "z_dim": 16},
        {"resolution": 32, "width": 128, "enc_blocks": 6, "dec_blocks": 6, "z_dim": 16},
        {"resolution": 16, "width": 192, "enc_blocks": 6, "dec_blocks": 6, "z_dim": 16},
        {"resolution": 8, "width": 256, "enc_blocks": 4, "dec_blocks": 4, "z_dim": 16},
        {"resolution": 1, "width": 256, "enc_blocks": 2, "dec_blocks": 2, "z_dim": 16},
    ],
}


def hvae_config(preset: str | None, parent_dim: int, stages: Sequence[dict] | None = None, **kwargs) -> HVAEConfig:
    """An :class:`HVAEConfig` from a preset name or explicit stages; ``kwargs`` are its other fields."""
    known = set(HVAEConfig.__dataclass_fields__) - {"stages", "parent_dim"}
    if set(kwargs) - known:
        raise InputError(f"unknown HVAE option(s) {sorted(set(kwargs) - known)}; known: {sorted(known)}")
    if stages is None:
        if preset not in PRESETS:
            raise InputError(f"unknown HVAE preset {preset!r}; known: {sorted(PRESETS)}")
        stages = PRESETS[preset]
    return HVAEConfig(stages=list(stages), parent_dim=parent_dim, **kwargs)


class ResBlock(nn.Module):
    """Bottleneck residual block (GELU, 1x1 - 3x3 - 3x3 - 1x1), residual when shapes allow."""

    def __init__(self, in_ch: int, mid_ch: int, out_ch: int, residual: bool = True, zero_last: bool = False) -> None:
        super().__init__()
        self.residual = residual and in_ch == out_ch
        self.net = nn.Sequential(
            nn.GELU(), nn.Conv2d(in_ch, mid_ch, 1),
            nn.GELU(), nn.Conv2d(mid_ch, mid_ch, 3, padding=1),
            nn.GELU(), nn.Conv2d(mid_ch, mid_ch, 3, padding=1),
            nn.GELU(), nn.Conv2d(mid_ch, out_ch, 1),
        )
        if zero_last:
            nn.init.zeros_(self.net[-1].weight)
            nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return x + out if self.residual else out


def _resize(h: torch.Tensor, resolution: int) -> torch.Tensor:
    if h.shape[-1] == resolution:
        return h
    if h.shape[-1] > resolution:
        return F.adaptive_avg_pool2d(h, resolution)
    return F.interpolate(h, size=(resolution, resolution), mode="nearest")


class Encoder(nn.Module):
    """Bottom-up path: features at every resolution, for the posteriors."""

    def __init__(self, cfg: HVAEConfig) -> None:
        super().__init__()
        self.stem = nn.Conv2d(cfg.in_channels, cfg.stages[0].width, 3, padding=1)
        self.blocks = nn.ModuleList()
        self.transitions = nn.ModuleList()
        for i, s in enumerate(cfg.stages):
            mid = max(s.width // cfg.bottleneck, 8)
            self.blocks.append(nn.Sequential(*[ResBlock(s.width, mid, s.width) for _ in range(s.enc_blocks)]))
            nxt = cfg.stages[i + 1].width if i + 1 < len(cfg.stages) else s.width
            self.transitions.append(nn.Conv2d(s.width, nxt, 1) if nxt != s.width else nn.Identity())
        self.resolutions = [s.resolution for s in cfg.stages]

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        h = self.stem(x)
        acts = {}
        for i, (blocks, trans) in enumerate(zip(self.blocks, self.transitions)):
            h = blocks(_resize(h, self.resolutions[i]))
            acts[self.resolutions[i]] = h
            h = trans(h)
        return acts


class ParentEmbedding(nn.Module):
    """One two-layer MLP per parent variable, outputs concatenated: ``(B, P) -> (B, P * width)``.

    Each variable keeps its own channels, so a block can respond to one parent without the
    others' values being mixed into it first, as a shared embedding's first layer does.
    """

    def __init__(self, parent_dim: int, width: int) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(parent_dim, width))
        self.b1 = nn.Parameter(torch.zeros(parent_dim, width))
        self.w2 = nn.Parameter(torch.randn(parent_dim, width, width) / math.sqrt(width))
        self.b2 = nn.Parameter(torch.zeros(parent_dim, width))

    def forward(self, pa: torch.Tensor) -> torch.Tensor:
        h = F.gelu(pa[:, :, None] * self.w1 + self.b1)
        return (torch.einsum("bpi,pio->bpo", h, self.w2) + self.b2).flatten(1)


class DecoderBlock(nn.Module):
    """One top-down block: a latent with prior and posterior given the parents, then a residual block.

    With ``film`` the residual block's input is scaled and shifted per channel by the parents'
    embedding (starting at the identity).
    """

    def __init__(
        self, width: int, z_dim: int, cfg: HVAEConfig, n_blocks: int
    ) -> None:
        super().__init__()
        mid = max(width // cfg.bottleneck, 8)
        pa_embed = cfg.embed_dim
        self.z_dim = z_dim
        if cfg.conditioning == "film":
            self.pa = ParentEmbedding(cfg.parent_dim, cfg.film_embed)
            self.film = nn.Linear(pa_embed, 2 * width)
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)
        else:
            self.pa = nn.Sequential(nn.Linear(cfg.parent_dim, pa_embed), nn.GELU(), nn.Linear(pa_embed, pa_embed))
            self.film = None
        if z_dim:
            self.prior = ResBlock(width + pa_embed, mid, 2 * z_dim + width, residual=False, zero_last=True)
            self.posterior = ResBlock(2 * width + pa_embed, mid, 2 * z_dim, residual=False)
            self.z_proj = nn.Conv2d(z_dim + pa_embed, width, 1)
            nn.init.normal_(self.z_proj.weight, std=1.0 / math.sqrt(n_blocks))
        else:
            self.z_proj = nn.Conv2d(pa_embed, width, 1)
        self.res = ResBlock(width, mid, width)
        nn.init.normal_(self.res.net[-1].weight, std=1.0 / math.sqrt(n_blocks) * 0.1)

    @staticmethod
    def _as_map(e: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """The parents' embedding ``(B, E)`` as a constant ``(B, E, H, W)`` map at ``h``'s size."""
        return e[:, :, None, None].expand(-1, -1, h.shape[-2], h.shape[-1])

    def prior_params(self, h: torch.Tensor, pa_map: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.prior(torch.cat([h, pa_map], 1))
        pm, plv, feat = out[:, : self.z_dim], out[:, self.z_dim : 2 * self.z_dim], out[:, 2 * self.z_dim :]
        return pm, plv, feat

    def forward(
        self,
        h: torch.Tensor,
        pa: torch.Tensor,
        act: torch.Tensor | None,
        z: torch.Tensor | None = None,
        temperature: float = 1.0,
        use_mean: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Return ``(h, z, kl)``. With ``act`` the posterior is used, else the prior; a given ``z`` is used as is."""
        e = self.pa(pa)
        pa_map = self._as_map(e, h)
        if not self.z_dim:
            return self._merge(h, None, e), None, None
        pm, plv, feat = self.prior_params(h, pa_map)
        h = h + feat
        kl = None
        if act is not None:
            qm, qlv = self.posterior_params(h, act, pa_map)
            if z is None:
                z = _draw(qm, qlv, use_mean, temperature)
            kl = gaussian_kl(qm, qlv, pm, plv)
        elif z is None:
            z = _draw(pm, plv, use_mean, temperature)
        return self._merge(h, z, e), z, kl

    def posterior_params(self, h: torch.Tensor, act: torch.Tensor, pa_map: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q = self.posterior(torch.cat([h, act, pa_map], 1))
        return q[:, : self.z_dim], q[:, self.z_dim :]

    def _merge(self, h: torch.Tensor, z: torch.Tensor | None, e: torch.Tensor) -> torch.Tensor:
        """The block's output: ``h`` plus the projected latent (if the block has one) and the parents' embedding ``e``."""
        pa_map = self._as_map(e, h)
        h = h + self.z_proj(pa_map if z is None else torch.cat([z, pa_map], 1))
        if self.film is not None:
            scale, shift = self.film(e).chunk(2, dim=1)
            h = h * (1 + scale[:, :, None, None]) + shift[:, :, None, None]
        return self.res(h)

    def mediate(
        self, h: torch.Tensor, h_cf: torch.Tensor, pa: torch.Tensor, pa_cf: torch.Tensor, act: torch.Tensor, use_mean: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """``(h, h*, z, z*)``: the posterior latent, and its counterfactual through the conditional prior.

        The latent's exogenous noise is abducted against the factual prior and kept:
        ``z* = mu_p(h*, pa*) + sigma_p(h*, pa*) * (z - mu_p(h, pa)) / sigma_p(h, pa)``, so
        ``pa* = pa`` gives ``z* = z`` and a change of the parents moves the latents as the prior
        says they move with them.
        """
        e, e_cf = self.pa(pa), self.pa(pa_cf)
        pa_map, pa_map_cf = self._as_map(e, h), self._as_map(e_cf, h_cf)
        if not self.z_dim:
            return self._merge(h, None, e), self._merge(h_cf, None, e_cf), None, None
        pm, plv, feat = self.prior_params(h, pa_map)
        pm_cf, plv_cf, feat_cf = self.prior_params(h_cf, pa_map_cf)
        h, h_cf = h + feat, h_cf + feat_cf
        z = _draw(*self.posterior_params(h, act, pa_map), use_mean)
        z_cf = pm_cf + torch.exp(0.5 * (plv_cf - plv)) * (z - pm)
        return self._merge(h, z, e), self._merge(h_cf, z_cf, e_cf), z, z_cf


def _draw(mean: torch.Tensor, logvar: torch.Tensor, use_mean: bool, temperature: float = 1.0) -> torch.Tensor:
    """The mean, or a sample of the diagonal Gaussian with its spread scaled by ``temperature``."""
    return mean if use_mean else mean + torch.randn_like(mean) * torch.exp(0.5 * logvar) * temperature


def gaussian_kl(qm: torch.Tensor, qlv: torch.Tensor, pm: torch.Tensor, plv: torch.Tensor) -> torch.Tensor:
    """KL(q || p) of diagonal Gaussians, per element."""
    return 0.5 * (plv - qlv + (qlv.exp() + (qm - pm) ** 2) / plv.exp() - 1.0)


def dgauss_log_prob(x: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """Per-pixel log-probability of ``x`` in ``[-1, 1]`` under a Gaussian discretized to 256 levels."""
    inv = torch.exp(-log_scale)
    plus = inv * (x - loc + BIN)
    minus = inv * (x - loc - BIN)
    log_cdf_plus = torch.special.log_ndtr(plus)
    log_sf_minus = torch.special.log_ndtr(-minus)
    delta = torch.special.ndtr(plus) - torch.special.ndtr(minus)
    # where the bin mass underflows, use the density at the centre times the bin width
    mid = inv * (x - loc)
    log_mid = -0.5 * mid**2 - 0.5 * math.log(2 * math.pi) - log_scale + math.log(2 * BIN)
    log_delta = torch.where(delta > 1e-5, torch.log(delta.clamp(min=1e-12)), log_mid)
    return torch.where(x < -1 + BIN, log_cdf_plus, torch.where(x > 1 - BIN, log_sf_minus, log_delta))


class ConditionalHVAE(nn.Module):
    """The conditional HVAE. ``pa`` is a ``(B, parent_dim)`` tensor of standardised parents."""

    def __init__(self, cfg: HVAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        top = cfg.stages[-1]
        self.h_top = nn.Parameter(torch.zeros(1, top.width, top.resolution, top.resolution))
        n_blocks = sum(s.dec_blocks for s in cfg.stages)
        self.dec_blocks = nn.ModuleList()
        self.block_res: list[int] = []
        self.up = nn.ModuleDict()
        for i in range(len(cfg.stages) - 1, -1, -1):
            s = cfg.stages[i]
            for _ in range(s.dec_blocks):
                self.dec_blocks.append(DecoderBlock(s.width, s.z_dim, cfg, n_blocks))
                self.block_res.append(s.resolution)
            if i > 0 and cfg.stages[i - 1].width != s.width:
                self.up[str(cfg.stages[i - 1].resolution)] = nn.Conv2d(s.width, cfg.stages[i - 1].width, 1)
        diag = cfg.likelihood_scale == "diag"
        self.head = nn.Conv2d(cfg.stages[0].width, (2 if diag else 1) * cfg.in_channels, 3, padding=1)
        self.register_buffer("log_scale_min", torch.tensor(LOG_SCALE_MIN))
        if not diag:
            init = torch.full((1, cfg.in_channels, 1, 1), math.log(cfg.std_init))
            if cfg.likelihood_scale == "shared":
                self.output_log_scale = nn.Parameter(init)
            else:
                self.register_buffer("output_log_scale", init)

    def _check(self, x: torch.Tensor | None, pa: torch.Tensor) -> None:
        if pa.ndim != 2 or pa.shape[1] != self.cfg.parent_dim:
            raise InputError(f"parents must be (B, {self.cfg.parent_dim}), got {tuple(pa.shape)}")
        if x is not None and tuple(x.shape[1:]) != (self.cfg.in_channels, self.cfg.resolution, self.cfg.resolution):
            raise InputError(
                f"images must be (B, {self.cfg.in_channels}, {self.cfg.resolution}, {self.cfg.resolution}), got {tuple(x.shape)}"
            )

    def _decode(
        self,
        pa: torch.Tensor,
        acts: dict[int, torch.Tensor] | None = None,
        zs: Sequence[torch.Tensor | None] | None = None,
        temperature: float = 1.0,
        use_mean: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor | None], list[torch.Tensor]]:
        h = self.h_top.expand(pa.shape[0], -1, -1, -1)
        out_z: list[torch.Tensor | None] = []
        kls: list[torch.Tensor] = []
        for i, (block, r) in enumerate(zip(self.dec_blocks, self.block_res)):
            h = self._enter(h, r)
            act = acts[r] if acts is not None else None
            z_in = zs[i] if zs is not None else None
            h, z, kl = block(h, pa, act, z_in, temperature, use_mean)
            out_z.append(z)
            if kl is not None:
                kls.append(kl)
        h = _resize(h, self.cfg.resolution)
        params = self.head(h)
        if self.cfg.likelihood_scale == "diag":
            loc, log_scale = params.chunk(2, dim=1)
        else:
            loc, log_scale = params, self.output_log_scale.expand_as(params)
        return loc, log_scale.clamp(min=float(self.log_scale_min)), out_z, kls

    @property
    def latent_resolutions(self) -> list[int]:
        """The resolution of each decoder block that holds a latent, top-down (the order of ``kl_layers``)."""
        return [r for block, r in zip(self.dec_blocks, self.block_res) if block.z_dim]

    def _enter(self, h: torch.Tensor, resolution: int) -> torch.Tensor:
        """``h`` brought to a block's resolution, and to its stage's width where that changes."""
        if h.shape[-1] == resolution:
            return h
        h = _resize(h, resolution)
        return self.up[str(resolution)](h) if str(resolution) in self.up else h

    def forward(self, x: torch.Tensor, pa: torch.Tensor, beta: float = 1.0, free_bits: float = 0.0) -> dict[str, torch.Tensor]:
        """Negative ELBO terms per dimension (nats), averaged over the batch; ``loss`` is what to minimise."""
        self._check(x, pa)
        acts = self.encoder(x)
        loc, log_scale, _, kls = self._decode(pa, acts)
        dims = x[0].numel()
        nll = -dgauss_log_prob(x, loc, log_scale).flatten(1).sum(1) / dims  # (B,)
        kl_layers = torch.stack([k.flatten(1).sum(1) for k in kls], 1) / dims  # (B, L)
        kl = kl_layers.sum(1)
        kl_train = kl_layers.mean(0).clamp(min=free_bits / len(kls)).sum() if free_bits > 0 else kl.mean()
        elbo = nll + kl
        return {
            "loss": nll.mean() + beta * kl_train,
            "elbo": elbo.mean(),
            "nll": nll.mean(),
            "kl": kl.mean(),
            "kl_layers": kl_layers.detach().mean(0),
            "elbo_per_sample": elbo.detach(),
        }

    def abduct_latents(
        self, x: torch.Tensor, pa: torch.Tensor, use_mean: bool = False, temperature: float = 1.0
    ) -> list[torch.Tensor | None]:
        """Latents ``z ~ q(z | x, pa)`` (or the posterior means), one per decoder block."""
        self._check(x, pa)
        return self._decode(pa, self.encoder(x), temperature=temperature, use_mean=use_mean)[2]

    def mediated_latents(
        self, x: torch.Tensor, pa: torch.Tensor, pa_cf: torch.Tensor, use_mean: bool = False
    ) -> tuple[list[torch.Tensor | None], list[torch.Tensor | None]]:
        """Latents ``z ~ q(z | x, pa)`` and their counterfactuals ``z*`` under ``pa*`` (see :meth:`DecoderBlock.mediate`)."""
        self._check(x, pa)
        self._check(None, pa_cf)
        acts = self.encoder(x)
        h = h_cf = self.h_top.expand(pa.shape[0], -1, -1, -1)
        zs: list[torch.Tensor | None] = []
        zs_cf: list[torch.Tensor | None] = []
        for block, r in zip(self.dec_blocks, self.block_res):
            h, h_cf = self._enter(h, r), self._enter(h_cf, r)
            h, h_cf, z, z_cf = block.mediate(h, h_cf, pa, pa_cf, acts[r], use_mean)
            zs.append(z)
            zs_cf.append(z_cf)
        return zs, zs_cf

    def decode(self, zs: Sequence[torch.Tensor | None], pa: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Location and log-scale of ``p(x | z, pa)`` with the latents held fixed."""
        self._check(None, pa)
        loc, log_scale, _, _ = self._decode(pa, zs=zs)
        return loc, log_scale

    @torch.no_grad()
    def sample(self, pa: torch.Tensor, temperature: float = 0.8) -> torch.Tensor:
        """Random images from the prior given parents (the location of the likelihood)."""
        self._check(None, pa)
        loc, _, _, _ = self._decode(pa, temperature=temperature)
        return loc.clamp(-1, 1)
