"""``segcft bench summary``: several ``segcft bench cft`` reports (base models, seeds) as one table.

One report measures one base model fine-tuned with one seed; a claim that turns on a point or
two (the JSRT heart) needs several. Reports of one *instance* (the same base generator and the
same seed) are merged, so methods run in separate commands count as one comparison. Every
instance must share the test set and variables, and every fine-tuned method the fine-tuning
settings, or the summary refuses the reports: a mean over different settings means nothing.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from segcft.evaluate.cft import METHODS, method_traces
from segcft.figures import paired_differences
from segcft.utils import InputError, atomic_path, read_json, write_json

SETS = ("test distribution", "-25%", "-10%", "+10%", "+25%")
SHARED = ("datalist", "variables", "latents", "effectiveness_metric", "test_cases")
SETTINGS = ("steps", "lr", "guide_weight", "lagrange_lr", "damping", "lagrange_init", "relative_targets", "guide_views",
            "ema_decay", "eps_slack")
# Settings that reports written before they were recorded all used.
UNRECORDED = {"damping": 10.0, "lagrange_init": 0.0, "guide_views": 0.0, "latents": "fixed"}
# Per instance, the base model and the judge fix these: two reports of one instance must agree.
INSTANCE = ("eps", "noise_floor")
# Which way is better, per compared metric.
LOWER_IS_BETTER = {**{s: True for s in SETS}, "locality": False, "locality_causal": False, "off_target_drift_percent": True}
LABELS = {"test distribution": "do ~ test split", "locality": "locality", "locality_causal": "with descendants",
          "off_target_drift_percent": "drift %"}


def parse_source(spec: str) -> tuple[Path, list[str] | None]:
    """``FILE`` or ``FILE:m1,m2``: a report and, optionally, the methods to take from it."""
    path, sep, tail = spec.rpartition(":")
    if sep and tail and all(m in METHODS for m in tail.split(",")):
        return Path(path), tail.split(",")
    return Path(spec), None


def load_cft_report(path: Path, methods: Sequence[str] | None) -> dict[str, Any]:
    """A ``segcft bench cft`` report, keeping only ``methods`` (all if None); errors name the file."""
    report = read_json(path, "report")
    if not isinstance(report, dict) or report.get("benchmark") != "cft":
        raise InputError(f"{path}: not a `segcft bench cft` report")
    chosen = list(report["methods"]) if methods is None else list(methods)
    missing = [m for m in chosen if m not in report["methods"]]
    if missing:
        raise InputError(f"{path}: has no method(s) {missing}; it has {list(report['methods'])}")
    return {**report, "methods": {m: report["methods"][m] for m in chosen}}


def _load_all(sources: Sequence[tuple[str | os.PathLike, Sequence[str] | None]]) -> list[tuple[Path, dict[str, Any]]]:
    """Every ``(FILE, METHODS)`` source loaded; an error if there are none."""
    loaded = [(Path(p), load_cft_report(Path(p), m)) for p, m in sources]
    if not loaded:
        raise InputError("no reports given")
    return loaded


def _agree(field: str, reports: Sequence[tuple[Path, Mapping[str, Any]]]) -> Any:
    """The value of ``field`` shared by ``reports``; an error naming two files that differ."""
    (first_path, first), *rest = reports
    value = first.get(field, UNRECORDED.get(field))
    for path, report in rest:
        other = report.get(field, UNRECORDED.get(field))
        if other != value:
            raise InputError(f"{path} and {first_path} differ in {field!r}: {other!r} against {value!r}")
    return value


def _stats(values: Sequence[float]) -> dict[str, Any]:
    return {"mean": round(statistics.fmean(values), 4), "sd": round(statistics.stdev(values), 4) if len(values) > 1 else None,
            "n": len(values), "values": list(values)}


def _metrics(entry: Mapping[str, Any], variable: str) -> dict[str, float]:
    """One method's compared numbers for one variable: effectiveness per set, locality (of the target, and with its
    causal descendants where the report has it), drift."""
    out = {s: entry["effectiveness"][variable][s] for s in SETS if s in entry["effectiveness"].get(variable, {})}
    loc = entry.get("locality", {}).get(variable, {})
    out.update({k: loc[k] for k in LOWER_IS_BETTER if k not in SETS and k in loc})
    return out


def _over(entries: Sequence[Mapping[str, Any]], variable: str) -> dict[str, Any]:
    """Statistics over instances of every metric that all of ``entries`` report for ``variable``."""
    per = [_metrics(e, variable) for e in entries]
    keys = [k for k in per[0] if all(k in p for p in per)]
    return {k: _stats([p[k] for p in per]) for k in keys}


def aggregate_cft(
    sources: Sequence[tuple[str | os.PathLike, Sequence[str] | None]],
    pairs: Sequence[tuple[str, str]] = (("seg", "reg"), ("seg", "none")),
    command: str | None = None,
    out: str | os.PathLike = "summary.json",
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Merge reports into instances, then per method the mean and SD over instances, and per pair the wins.

    Returns the summary and the merged instances (with their methods' entries); nothing is
    written. ``out`` only names the paired-difference figures the summary lists.
    """
    loaded = _load_all(sources)
    shared = {f: _agree(f, loaded) for f in SHARED}
    tuned = [(p, r) for p, r in loaded if set(r["methods"]) - {"none"}]
    settings = {f: _agree(f, tuned) for f in SETTINGS} if tuned else {}
    instances: dict[tuple[str, int], dict[str, Any]] = {}
    for path, report in loaded:
        key = (report["generator_run"], report["seed"])
        inst = instances.setdefault(key, {"generator_run": key[0], "seed": key[1], "report_of": {}, "methods": {}, "_loaded": []})
        inst["_loaded"].append((path, report))
        inst.update({f: _agree(f, inst["_loaded"]) for f in INSTANCE})
        for method, entry in report["methods"].items():
            if method in inst["methods"]:
                raise InputError(f"{path}: method {method!r} of {key[0]} (seed {key[1]}) is also in {inst['report_of'][method]}")
            inst["methods"][method] = entry
            inst["report_of"][method] = str(path)
    for inst in instances.values():
        del inst["_loaded"]
    names = [m for m in METHODS if any(m in i["methods"] for i in instances.values())]
    variables = [v for v in shared["variables"]
                 if any(v in e["effectiveness"] for i in instances.values() for e in i["methods"].values())]
    methods: dict[str, Any] = {}
    for m in names:
        entries = [i["methods"][m] for i in instances.values() if m in i["methods"]]
        methods[m] = {
            "instances": len(entries),
            "train_elbo_nats_per_dim": _stats([e["train_elbo_nats_per_dim"] for e in entries]),
            "elbo_nats_per_dim": _stats([e["elbo_nats_per_dim"] for e in entries]),
            "within_eps": sum(bool(e["within_eps"]) for e in entries),
            "variables": {v: _over(entries, v) for v in variables},
        }
    comparisons = {}
    for a, b in pairs:
        both = [i for i in instances.values() if a in i["methods"] and b in i["methods"]]
        if not both:
            raise InputError(f"no instance has both {a!r} and {b!r}")
        table = {}
        for v in variables:
            ma, mb = [_metrics(i["methods"][a], v) for i in both], [_metrics(i["methods"][b], v) for i in both]
            table[v] = {}
            for k, lower in LOWER_IS_BETTER.items():
                if not all(k in m for m in ma + mb):
                    continue
                diffs = [x[k] - y[k] for x, y in zip(ma, mb)]
                table[v][k] = {"difference": _stats([round(d, 4) for d in diffs]),
                               "wins": sum((d < 0) if lower else (d > 0) for d in diffs)}
        comparisons[f"{a} vs {b}"] = {"a": a, "b": b, "instances": len(both), "variables": table,
                                      "figure": str(Path(out).with_name(f"{Path(out).stem}_{a}_vs_{b}.png"))}
    # Each instance names its reports rather than repeating their measurements.
    listed = [{**{k: v for k, v in i.items() if k != "methods"}, "methods": list(i["methods"])} for i in instances.values()]
    summary = {
        "benchmark": "cft summary", "command": command, **shared, "settings": settings,
        "reports": [{"path": str(p), "command": r.get("command")} for p, r in loaded],
        "instances": listed, "methods": methods, "comparisons": comparisons,
    }
    return summary, list(instances.values())


def summarize_cft(
    sources: Sequence[tuple[str | os.PathLike, Sequence[str] | None]],
    out: str | os.PathLike,
    pairs: Sequence[tuple[str, str]] = (("seg", "reg"), ("seg", "none")),
    command: str | None = None,
) -> dict[str, Any]:
    """:func:`aggregate_cft`, written as JSON, a Markdown table and one paired-difference figure per pair."""
    summary, instances = aggregate_cft(sources, pairs, command, out)
    comparisons = summary["comparisons"]
    write_json(summary, out)
    _write_table(summary, instances, Path(out).with_suffix(".md"))
    for comp in comparisons.values():
        diffs = {v: {LABELS.get(k, k): m["difference"]["values"] for k, m in metrics.items()} for v, metrics in comp["variables"].items()}
        paired_differences(diffs, {LABELS.get(k, k): lower for k, lower in LOWER_IS_BETTER.items()}, comp["figure"],
                           title=f"{comp['a']} minus {comp['b']}, one dot per instance ({comp['instances']})")
    return summary


def cft_traces(sources: Sequence[tuple[str | os.PathLike, Sequence[str] | None]]) -> tuple[dict[str, Any], float]:
    """The fine-tuning traces of several reports of one base model, labelled ``<report stem>: <method>``, and their eps.

    The curves are drawn against one bound, so the reports must share it (the same base
    model and training split); methods without fine-tuning (``none``) have no trace.
    """
    loaded = _load_all(sources)
    eps = _agree("eps", loaded)
    traces = {f"{path.stem}: {method}": trace for path, report in loaded for method, trace in method_traces(report).items()}
    if not traces:
        raise InputError(f"{', '.join(str(p) for p, _ in loaded)}: no fine-tuning trace (reports before the trace was recorded, or only 'none')")
    return traces, eps


def _cell(s: Mapping[str, Any], digits: int = 2) -> str:
    return f"{s['mean']:.{digits}f}" + (f" ± {s['sd']:.{digits}f}" if s["sd"] is not None else "")


def _digits(metric: str) -> int:
    return 3 if metric.startswith("locality") else 2


def _instance_rows(summary: Mapping[str, Any], instances: Sequence[Mapping[str, Any]]) -> list[str]:
    """Each instance's own figures, one row per method, the variables side by side, so the spread behind a mean shows."""
    variables = list(next(iter(summary["methods"].values()))["variables"]) if summary["methods"] else []
    lines = ["Per instance (each cell: " + " / ".join(variables) + "; train ELBO in bold when within eps; lambda at the end):", "",
             "| base model, seed | eps | method | do ~ test split | -25% | locality | drift % | train ELBO | lambda |",
             "|---|---|---|---|---|---|---|---|---|"]
    for inst in instances:
        for m, e in sorted(inst["methods"].items(), key=lambda item: METHODS.index(item[0])):
            per = [_metrics(e, v) for v in variables]
            cells = [" / ".join(f"{p[k]:.{_digits(k)}f}" if k in p else "-" for p in per)
                     for k in ("test distribution", "-25%", "locality", "off_target_drift_percent")]
            elbo = f"{e['train_elbo_nats_per_dim']:.3f}"
            lam = e.get("finetune", {}).get("lambda")
            lines.append(f"| {Path(inst['generator_run']).name}, {inst['seed']} | {inst['eps']:.3f} | {m} | " + " | ".join(cells)
                         + f" | {f'**{elbo}**' if e['within_eps'] else elbo} | {'-' if lam is None else f'{lam:.1f}'} |")
    return lines


def _write_table(summary: Mapping[str, Any], instances: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Per instance its figures; mean ± SD over instances per method and variable; per pair, the mean difference and the wins."""
    n = len(summary["instances"])
    lines = [f"{n} instance(s) (base model, seed): " + "; ".join(f"{i['generator_run']} seed {i['seed']}" for i in summary["instances"]),
             "", *_instance_rows(summary, instances), "",
             f"Mean ± SD over instances; effectiveness is {summary['effectiveness_metric']}.", "",
             "| method | variable | do ~ test split | -25% | +25% | locality | with descendants | off-target drift % |",
             "|---|---|---|---|---|---|---|---|"]
    for m, entry in summary["methods"].items():
        for v, stats in entry["variables"].items():
            cells = [_cell(stats[k], _digits(k)) if k in stats else "-"
                     for k in ("test distribution", "-25%", "+25%", "locality", "locality_causal", "off_target_drift_percent")]
            lines.append(f"| {m} | {v} | " + " | ".join(cells) + " |")
    lines += ["", "| method | instances | train ELBO | test ELBO | within eps |", "|---|---|---|---|---|"]
    lines += [f"| {m} | {e['instances']} | {_cell(e['train_elbo_nats_per_dim'], 3)} | {_cell(e['elbo_nats_per_dim'], 3)} | {e['within_eps']} of {e['instances']} |"
              for m, e in summary["methods"].items()]
    for pair, comp in summary["comparisons"].items():
        a = comp["a"]
        lines += ["", f"{pair}: mean difference ({a} minus the other) ± SD, and in how many of {comp['instances']} instance(s) {a} is better",
                  "", "| variable | " + " | ".join(LABELS.get(k, k) for k in LOWER_IS_BETTER) + " |", "|---|" + "---|" * len(LOWER_IS_BETTER)]
        for v, metrics in comp["variables"].items():
            cells = [f"{_cell(metrics[k]['difference'], _digits(k))} ({metrics[k]['wins']}/{comp['instances']})" if k in metrics else "-"
                     for k in LOWER_IS_BETTER]
            lines.append(f"| {v} | " + " | ".join(cells) + " |")
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
