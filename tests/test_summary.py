"""`segcft bench summary` and `segcft plot cft-curves`: CFT reports of several runs merged, averaged, compared and drawn."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from segcft.cli.main import app
from segcft.evaluate.summary import cft_traces, parse_source, summarize_cft
from segcft.utils import InputError

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def method(mape: float, locality: float, drift: float, elbo: float = 3.0, within: bool = True) -> dict:
    """One method's entry as ``segcft bench cft`` writes it, for one variable ``v``."""
    return {
        "effectiveness": {"v": {"test distribution": mape, "-25%": 2 * mape, "+25%": mape + 1}},
        "locality": {"v": {"locality": locality, "off_target_drift_percent": drift}},
        "train_elbo_nats_per_dim": elbo, "elbo_nats_per_dim": elbo + 0.03, "within_eps": within,
    }


def report(path: Path, base: str, methods: dict, lagrange_lr: float = 0.3, seed: int = 0, **extra) -> Path:
    path.write_text(json.dumps({
        "benchmark": "cft", "datalist": "d.json", "variables": ["v"], "effectiveness_metric": "MAPE (%)", "test_cases": 3,
        "generator_run": base, "seed": seed, "eps": 3.1, "noise_floor": {"v": 1.0}, "steps": 9, "lr": 1e-4,
        "guide_weight": 50.0, "lagrange_lr": lagrange_lr, "relative_targets": True, "ema_decay": 0.0, "eps_slack": 0.02,
        "methods": methods, **extra,
    }), encoding="utf-8")
    return path


def test_reports_of_one_base_merge_and_instances_average(tmp_path):
    # Base a: seg and reg fine-tuned in two separate runs; base b: both in one.
    a_seg = report(tmp_path / "a_seg.json", "a", {"none": method(20, 0.1, 0.3), "seg": method(10, 0.5, 2.0)})
    a_reg = report(tmp_path / "a_reg.json", "a", {"reg": method(12, 0.4, 3.0, within=False) | {"finetune": {"lambda": 4.3}}})
    b = report(tmp_path / "b.json", "b", {"none": method(30, 0.1, 0.3), "reg": method(14, 0.3, 1.0), "seg": method(16, 0.6, 2.0)})
    out = tmp_path / "summary.json"
    summary = summarize_cft([(a_seg, None), (a_reg, None), (b, None)], out, pairs=[("seg", "reg")])

    assert [i["generator_run"] for i in summary["instances"]] == ["a", "b"]
    assert summary["instances"][0]["report_of"] == {"none": str(a_seg), "seg": str(a_seg), "reg": str(a_reg)}
    seg = summary["methods"]["seg"]["variables"]["v"]["test distribution"]
    assert seg["mean"] == 13.0 and seg["sd"] == pytest.approx(4.2426, abs=1e-4) and seg["values"] == [10, 16]
    assert summary["methods"]["reg"]["within_eps"] == 1
    comp = summary["comparisons"]["seg vs reg"]["variables"]["v"]
    # seg - reg: MAPE -2 and +2 (one win), locality +0.1 and +0.3 (two wins), drift -1 and +1 (one win).
    assert comp["test distribution"]["difference"]["values"] == [-2.0, 2.0] and comp["test distribution"]["wins"] == 1
    assert comp["locality"]["wins"] == 2 and comp["off_target_drift_percent"]["wins"] == 1
    table = out.with_suffix(".md").read_text(encoding="utf-8")
    assert "| seg | v | 13.00 ± 4.24 |" in table and "1 of 2" in table
    # each instance's own rows, methods in their usual order whatever the order of the reports
    rows = [line for line in table.splitlines() if line.startswith("| a, 0 |")]
    assert rows == ["| a, 0 | 3.100 | none | 20.00 | 40.00 | 0.100 | 0.30 | **3.000** | - |",
                    "| a, 0 | 3.100 | reg | 12.00 | 24.00 | 0.400 | 3.00 | 3.000 | 4.3 |",
                    "| a, 0 | 3.100 | seg | 10.00 | 20.00 | 0.500 | 2.00 | **3.000** | - |"]
    assert (tmp_path / "summary_seg_vs_reg.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_methods_can_be_taken_from_part_of_a_report(tmp_path):
    other_rate = report(tmp_path / "r01.json", "a", {"none": method(20, 0.1, 0.3), "seg": method(9, 0.5, 2.0)}, lagrange_lr=0.1)
    tuned = report(tmp_path / "r03.json", "a", {"seg": method(10, 0.5, 2.0)})
    # The rate-0.1 report's seg would clash with the rate-0.3 settings; its "none" does not depend on them.
    with pytest.raises(InputError, match="lagrange_lr"):
        summarize_cft([(other_rate, None), (tuned, None)], tmp_path / "s.json", pairs=[("seg", "none")])
    summary = summarize_cft([parse_source(f"{other_rate}:none"), (tuned, None)], tmp_path / "s.json", pairs=[("seg", "none")])
    assert summary["comparisons"]["seg vs none"]["variables"]["v"]["test distribution"]["difference"]["values"] == [-10.0]
    assert summary["settings"]["lagrange_lr"] == 0.3


def test_a_report_from_before_damping_was_recorded_counts_as_damping_10(tmp_path):
    old = report(tmp_path / "old.json", "a", {"seg": method(10, 0.5, 2.0)})
    new = report(tmp_path / "new.json", "b", {"seg": method(12, 0.5, 2.0)}, damping=10.0)
    assert summarize_cft([(old, None), (new, None)], tmp_path / "s.json", pairs=[])["settings"]["damping"] == 10.0
    other = report(tmp_path / "other.json", "b", {"seg": method(12, 0.5, 2.0)}, damping=100.0)
    with pytest.raises(InputError, match="other.json and .*old.json differ in 'damping': 100.0 against 10.0"):
        summarize_cft([(old, None), (other, None)], tmp_path / "s.json", pairs=[])


def test_fixed_and_mediated_latents_do_not_pool_and_older_reports_had_fixed(tmp_path):
    old = report(tmp_path / "old.json", "a", {"none": method(20, 0.1, 0.3), "seg": method(10, 0.5, 2.0)})
    fixed = report(tmp_path / "fixed.json", "b", {"seg": method(12, 0.5, 2.0)}, latents="fixed", guide_views=0.0)
    summary = summarize_cft([(old, None), (fixed, None)], tmp_path / "s.json", pairs=[])
    assert summary["latents"] == "fixed" and summary["settings"]["guide_views"] == 0.0
    mediated = report(tmp_path / "mediated.json", "b", {"none": method(19, 0.1, 0.3)}, latents="mediated")
    with pytest.raises(InputError, match="mediated.json and .*old.json differ in 'latents'"):  # even untuned: the SCM differs
        summarize_cft([(old, None), (mediated, None)], tmp_path / "s.json", pairs=[])
    viewed = report(tmp_path / "viewed.json", "b", {"seg": method(11, 0.5, 2.0)}, guide_views=1.0)
    with pytest.raises(InputError, match="differ in 'guide_views': 1.0 against 0.0"):
        summarize_cft([(old, None), (viewed, None)], tmp_path / "s.json", pairs=[])


def test_bad_reports_are_refused_with_the_file_named(tmp_path):
    first = report(tmp_path / "first.json", "a", {"seg": method(10, 0.5, 2.0)})
    again = report(tmp_path / "again.json", "a", {"seg": method(11, 0.5, 2.0)})
    with pytest.raises(InputError, match="again.json: method 'seg' of a .* also in .*first.json"):
        summarize_cft([(first, None), (again, None)], tmp_path / "s.json", pairs=[])
    with pytest.raises(InputError, match=r"first.json: has no method\(s\) \['reg'\]"):
        summarize_cft([(first, ["reg"])], tmp_path / "s.json", pairs=[])
    with pytest.raises(InputError, match="no instance has both 'seg' and 'reg'"):
        summarize_cft([(first, None)], tmp_path / "s.json")
    (tmp_path / "broken.json").write_text("{", encoding="utf-8")
    with pytest.raises(InputError, match="broken.json: not valid JSON"):
        summarize_cft([(tmp_path / "broken.json", None)], tmp_path / "s.json")
    assert not (tmp_path / "s.json").exists()


def test_cli_summarizes_the_committed_jsrt_reports(tmp_path):
    """The real reports of docs/results.md's second base: 'none' from one run, seg and reg at rate 0.3 from two others."""
    bench = REPO / "docs" / "bench"
    out = tmp_path / "summary.json"
    result = runner.invoke(app, ["bench", "summary", "--report", f"{bench / 'cft_jsrt_900.json'}:none",
                                 "--report", str(bench / "cft_jsrt_900_lam03.json"),
                                 "--report", str(bench / "cft_jsrt_900_lam03_reg.json"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads(out.read_text(encoding="utf-8"))
    assert len(summary["instances"]) == 1 and set(summary["methods"]) == {"none", "reg", "seg"}
    reports = {m: json.loads((bench / name).read_text(encoding="utf-8"))["methods"][m]
               for m, name in [("seg", "cft_jsrt_900_lam03.json"), ("reg", "cft_jsrt_900_lam03_reg.json")]}
    heart = summary["comparisons"]["seg vs reg"]["variables"]["heart_area"]["-25%"]
    expected = reports["seg"]["effectiveness"]["heart_area"]["-25%"] - reports["reg"]["effectiveness"]["heart_area"]["-25%"]
    assert heart["difference"]["mean"] == pytest.approx(expected, abs=1e-3) and heart["wins"] == 1
    bad = runner.invoke(app, ["bench", "summary", "--report", str(bench / "cft_jsrt_900.json"), "--pair", "seg", "--out", str(out)])
    assert bad.exit_code == 2 and "--pair 'seg' is not A,B" in bad.output


def test_cft_curves_draw_the_traces_of_one_base_and_refuse_two_bounds(tmp_path):
    trace = {"step": [25, 50], "elbo": [3.2, 3.1], "guide_loss": [0.1, 0.08], "lambda": [0.5, 1.0]}
    tuned = {"seg": {**method(10, 0.5, 2.0), "finetune": {"lambda": 1.0, "trace": trace}}}
    a = report(tmp_path / "a.json", "a", {"none": method(20, 0.1, 0.3), **tuned})
    b = report(tmp_path / "b.json", "a", tuned)
    result = runner.invoke(app, ["plot", "cft-curves", "--report", str(a), "--report", f"{b}:seg", "--out", str(tmp_path / "c.png")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    traces, eps = cft_traces([(a, None), (b, ["seg"])])
    assert list(traces) == ["a: seg", "b: seg"] and traces["a: seg"] == trace and eps == 3.1
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**json.loads(b.read_text(encoding="utf-8")), "eps": 3.2}), encoding="utf-8")
    with pytest.raises(InputError, match="other.json and .*a.json differ in 'eps'"):
        cft_traces([(a, None), (other, None)])
    with pytest.raises(InputError, match="no fine-tuning trace"):
        cft_traces([(a, ["none"])])
