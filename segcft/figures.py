"""Figures people would rather look at than read: image grids and counterfactual grids with difference maps."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from segcft.utils import InputError, atomic_path  # noqa: E402


def save_figure(fig: plt.Figure, path: str | os.PathLike, dpi: int = 100, **kwargs) -> Path:
    """Write a figure as PNG atomically and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", **kwargs)
    plt.close(fig)
    return Path(path)


def counterfactual_grid(
    rows: Sequence[Mapping[str, object]],
    path: str | os.PathLike,
    title: str = "",
    diff_limit: float | None = None,
) -> Path:
    """Rows of cases; columns: the original, then each counterfactual and its difference map.

    Each row is ``{"label": str, "original": (H, W), "counterfactuals": {name: (H, W)}}``,
    optionally with ``"uncertainty": (H, W)`` (a per-pixel standard deviation), drawn in a
    last column. Difference maps show ``x* - x`` on one symmetric colour scale for the whole
    figure (red brighter, blue darker), so rows and methods compare at a glance.
    """
    names = list(rows[0]["counterfactuals"])
    diffs = [np.asarray(r["counterfactuals"][n]) - np.asarray(r["original"]) for r in rows for n in names]
    limit = diff_limit or max(float(np.abs(d).max()) for d in diffs) or 1.0
    with_sd = "uncertainty" in rows[0]
    sd_max = (max(float(np.max(r["uncertainty"])) for r in rows) or 1.0) if with_sd else 1.0
    ncols = 1 + 2 * len(names) + int(with_sd)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(1.9 * ncols, 1.9 * len(rows) + 0.4), squeeze=False)
    for i, row in enumerate(rows):
        original = np.asarray(row["original"])
        axes[i, 0].imshow(original, cmap="gray", vmin=original.min(), vmax=original.max())
        axes[i, 0].set_ylabel(str(row["label"]), fontsize=7)
        for j, name in enumerate(names):
            cf = np.asarray(row["counterfactuals"][name])
            axes[i, 1 + 2 * j].imshow(cf, cmap="gray", vmin=original.min(), vmax=original.max())
            im = axes[i, 2 + 2 * j].imshow(cf - original, cmap="RdBu_r", vmin=-limit, vmax=limit)
            if i == 0:
                axes[i, 1 + 2 * j].set_title(name, fontsize=8)
                axes[i, 2 + 2 * j].set_title("x* - x", fontsize=8)
        if with_sd:
            sd_im = axes[i, -1].imshow(np.asarray(row["uncertainty"]), cmap="magma", vmin=0, vmax=sd_max)
        if i == 0:
            axes[i, 0].set_title("original", fontsize=8)
            if with_sd:
                axes[i, -1].set_title("uncertainty (sd)", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    # constrained layout makes room for the colour bars; otherwise each bar narrows the column it sits by
    fig.set_layout_engine("constrained")
    if with_sd:
        fig.colorbar(im, ax=axes[:, -2].tolist(), shrink=0.8, label="x* - x")
        fig.colorbar(sd_im, ax=axes[:, -1].tolist(), shrink=0.8, label="sd")
    else:
        fig.colorbar(im, ax=axes[:, -1].tolist(), shrink=0.8, label="x* - x")
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path, dpi=110, bbox_inches="tight")


def image_grid(rows: Mapping[str, np.ndarray], path: str | os.PathLike, title: str = "") -> Path:
    """Named rows of ``(N, H, W)`` images in ``[-1, 1]``, one column per case."""
    names = list(rows)
    n = next(iter(rows.values())).shape[0]
    fig, axes = plt.subplots(len(names), n, figsize=(1.3 * n + 1.2, 1.3 * len(names)), squeeze=False)
    for i, name in enumerate(names):
        for j in range(n):
            axes[i, j].imshow(np.asarray(rows[name][j]), cmap="gray", vmin=-1, vmax=1)
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
        axes[i, 0].set_ylabel(name, fontsize=7, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path, bbox_inches="tight")


def to_uint8(image: np.ndarray) -> np.ndarray:
    """An image in ``[-1, 1]`` as 8-bit grey levels."""
    return np.rint((np.clip(image, -1, 1) + 1) * 127.5).astype(np.uint8)


def diff_png(diff: np.ndarray, path: str | os.PathLike, limit: float = 0.5) -> Path:
    """A difference map ``x* - x`` as a red (brighter) / blue (darker) PNG, saturating at ``limit``."""
    rgba = plt.get_cmap("RdBu_r")(np.clip(diff / limit, -1, 1) * 0.5 + 0.5)
    with atomic_path(path) as tmp:
        plt.imsave(tmp, (rgba[..., :3] * 255).astype(np.uint8), format="png")
    return Path(path)


def training_curves(logdir: str | os.PathLike, path: str | os.PathLike, tags: Sequence[str] | None = None) -> Path:
    """Plot the scalar series of TensorBoard event files under ``logdir``, one panel per tag."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    series: dict[str, list[tuple[int, float]]] = {}
    for events in sorted(Path(logdir).rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            if tags is None or tag in tags:
                series.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    if not series:
        raise InputError(f"{logdir}: no TensorBoard scalars{' for ' + ', '.join(tags) if tags else ''}")
    names = sorted(series)
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        steps, values = zip(*sorted(series[name]))
        ax.plot(steps, values, lw=1)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step (iteration or epoch)", fontsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    return save_figure(fig, path)


def cft_curves(traces: Mapping[str, Mapping[str, Sequence[float]]], eps: float, path: str | os.PathLike) -> Path:
    """Fine-tuning curves, one line per method: the factual ELBO against its bound ``eps``, lambda, the guide loss.

    ``traces[method]`` holds ``step``, ``elbo`` (not for a spatial head), ``lambda`` and ``guide_loss`` (window means, as
    ``segcft.evaluate.cft.finetune`` records them).
    """
    panels = (("elbo", "factual -ELBO (nats/dim), eps dashed"), ("lambda", "lambda"), ("guide_loss", "guide loss"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.0))
    for ax, (key, title) in zip(axes, panels):
        for method, trace in traces.items():
            if key in trace:  # a spatial head's trace has no ELBO
                ax.plot(trace["step"], trace[key], lw=1.2, label=method)
        if key == "elbo":
            ax.axhline(eps, color="k", ls="--", lw=0.8)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("fine-tuning step", fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=8)  # the guide loss: every method has one
    fig.tight_layout()
    return save_figure(fig, path)


def dose_response(curves: Mapping[str, Mapping[float, float]], path: str | os.PathLike, title: str = "") -> Path:
    """Measured against requested change (%), one line per method, with the ideal ``y = x`` dashed."""
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    requested = sorted({p for curve in curves.values() for p in curve})
    ax.plot(requested, requested, "k--", lw=1, label="ideal")
    for name, curve in curves.items():
        xs = sorted(curve)
        ax.plot(xs, [curve[p] for p in xs], marker="o", ms=3, lw=1.2, label=name)
    ax.set_xlabel("requested change of the area (%)")
    ax.set_ylabel("measured change (%), evaluation segmentor")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def robustness(dice: Mapping[str, Mapping[str, float]], path: str | os.PathLike, title: str = "") -> Path:
    """Worst structure's Dice per shift (x axis), one marker line per segmentor (legend)."""
    fig, ax = plt.subplots(figsize=(9.5, 3.4))
    for name, by_shift in dice.items():
        shifts = list(by_shift)
        ax.plot(range(len(shifts)), [by_shift[s] for s in shifts], marker="o", ms=4, lw=1.2, label=name)
    ax.set_xticks(range(len(shifts)), shifts, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("Dice of the worst structure")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1.0), loc="upper left")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def paired_differences(
    differences: Mapping[str, Mapping[str, Sequence[float]]], lower_is_better: Mapping[str, bool], path: str | os.PathLike,
    title: str = "",
) -> Path:
    """One panel per measure; per variable, one dot per instance for the difference A - B, and 0 dashed.

    ``differences[variable][measure]`` holds the per-instance differences. Each panel says on
    which side of 0 the first method is better, so a reader sees at once whether a win is
    the same in every instance or turns on one of them.
    """
    variables = list(differences)
    measures = [m for m in lower_is_better if any(m in differences[v] for v in variables)]
    fig, axes = plt.subplots(1, len(measures), figsize=(1.6 + 1.1 * len(measures) * max(1, len(variables)) / 2, 3.2),
                             squeeze=False, sharey=False)
    for ax, measure in zip(axes[0], measures):
        for x, v in enumerate(variables):
            values = differences[v].get(measure, [])
            ax.scatter([x] * len(values), values, s=14, alpha=0.8)
        ax.axhline(0.0, color="k", ls="--", lw=0.8)
        ax.set_xticks(range(len(variables)), [v.removesuffix("_area").replace("_", " ") for v in variables], rotation=45, fontsize=7)
        ax.set_title(f"{measure}\n(better {'below' if lower_is_better[measure] else 'above'} 0)", fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.set_xlim(-0.6, len(variables) - 0.4)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def overview(
    effectiveness: Mapping[str, Mapping[str, float]], floor: Mapping[str, float], locality: Mapping[str, Mapping[str, float]],
    path: str | os.PathLike, title: str = "", metric: str = "",
) -> Path:
    """Two panels, methods side by side per variable: the judged error with the noise floor as a grey band; locality.

    ``effectiveness[method][variable]`` and ``locality[method][variable]`` are the means to draw;
    ``floor[variable]`` is the evaluation segmentor's own error, below which no method can be read.
    """
    methods = list(effectiveness)
    variables = list(dict.fromkeys(v for m in methods for v in effectiveness[m]))
    width = 0.8 / max(1, len(methods))
    fig, axes = plt.subplots(1, 2, figsize=(3.0 + 1.2 * len(variables) * 2, 3.2))
    for ax, values, label in ((axes[0], effectiveness, f"{metric}, do ~ test split (lower is better)"),
                              (axes[1], locality, "locality (higher is better)")):
        for i, m in enumerate(methods):
            xs = [x + (i - (len(methods) - 1) / 2) * width for x in range(len(variables))]
            ax.bar(xs, [values[m].get(v, np.nan) for v in variables], width=width, label=m)
        ax.set_xticks(range(len(variables)), variables, fontsize=8)
        ax.set_title(label, fontsize=9)
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(axis="y", alpha=0.3)
    for x, v in enumerate(variables):
        if v in floor:
            axes[0].fill_between([x - 0.45, x + 0.45], 0, floor[v], color="0.3", alpha=0.45, lw=0, zorder=3,
                                 label="noise floor" if x == 0 else None)
    axes[1].set_ylim(0, 1)
    axes[0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
