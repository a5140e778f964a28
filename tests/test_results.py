"""docs/results.md is what `segcft bench report` makes from the reports docs/results.yaml names.

The page is generated; these tests regenerate it into a temporary folder and compare, so a
hand edit or a report changed without regenerating the page fails here. They also show that
a claim's verdict follows the figures: changing one figure in a copied report flips it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from segcft.evaluate.report import build_results, load_manifest
from segcft.utils import InputError

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
MAX_LINES = 350


def test_the_page_is_what_its_manifest_and_reports_make(tmp_path):
    text = build_results(DOCS / "results.yaml", tmp_path / "results.md", figures_dir=tmp_path / "figures")
    assert (DOCS / "results.md").read_text(encoding="utf-8") == text, (
        "docs/results.md differs from what its reports make: run `make results-page`")
    assert len(text.splitlines()) <= MAX_LINES
    manifest = load_manifest(DOCS / "results.yaml")
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == sorted(f"overview_{g['key']}.png" for g in manifest["cft"])


def _copy_docs(tmp_path: Path) -> Path:
    """The manifest and the reports it names, copied, so a test can change one figure."""
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(DOCS / "results.yaml", docs / "results.yaml")
    manifest = load_manifest(docs / "results.yaml")
    reports = [manifest["demo"], *(s["report"] for s in manifest["segmentors"] + manifest["generators"] + manifest.get("fullres", [])),
               *(r for g in manifest["cft"] for r in g["reports"])]
    for r in reports:
        (docs / r).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(DOCS / r, docs / r)
    return docs


def test_a_verdict_follows_the_figures(tmp_path):
    docs = _copy_docs(tmp_path)
    claim = "Spatial Seg-CFT closer to the true counterfactual (pixel error) than the unchanged input, at -25% and +25%: **partly**, 4 of 6"
    assert claim in build_results(docs / "results.yaml", docs / "results.md")
    path = docs / "bench/spatial/chest64_shared.json"
    report = json.loads(path.read_text(encoding="utf-8"))
    for c in ("-25%", "+25%"):
        entry = report["methods"]["spatial-seg"]["ground_truth"]["heart_area"][c]
        entry["model_mae"] = entry["unchanged_mae"] / 2
    path.write_text(json.dumps(report), encoding="utf-8")
    text = build_results(docs / "results.yaml", docs / "results.md")
    assert claim.replace("**partly**, 4 of 6", "**holds**, 6 of 6") in text
    assert "| heart | -25% | 0.0143 | 0.0371 | **0.0072** |" in text


def test_bad_manifests_are_named(tmp_path):
    docs = _copy_docs(tmp_path)
    manifest = (docs / "results.yaml").read_text(encoding="utf-8")
    (docs / "results.yaml").write_text(manifest.replace("measure: positional", "measure: beauty"), encoding="utf-8")
    with pytest.raises(InputError, match="beauty"):
        build_results(docs / "results.yaml", docs / "results.md")
    (docs / "results.yaml").write_text(manifest.replace("bench/spatial/chest64_shared.json", "bench/spatial/missing.json"), encoding="utf-8")
    with pytest.raises(InputError, match="missing.json"):
        build_results(docs / "results.yaml", docs / "results.md")
    (docs / "results.yaml").write_text("title: x\n", encoding="utf-8")
    with pytest.raises(InputError, match="'intro' missing"):
        build_results(docs / "results.yaml", docs / "results.md")
    assert not (docs / "results.md").exists()


def test_the_reproduction_script_parses():
    subprocess.run(["bash", "-n", str(REPO / "scripts" / "reproduce_results.sh")], check=True)
