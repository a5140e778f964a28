"""Counterfactual fine-tuning at CI size: the Lagrangian, the sampler, frozen guides, locality."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from segcft.causal.parents import fit_parent_scm
from segcft.causal.scm import build_deep_scm, training_parents
from segcft.cft import InterventionSampler, LagrangeMultiplier, RegressorGuide, SegmentorGuide
from segcft.data.datalist import load_datalist, structures_of
from segcft.data.phantom import make_phantom
from segcft.data.structures import CXR_REGIONS
from segcft.data.transforms import image_pipeline
from segcft.cft.engine import CFTTrainer, elbo_bound
from segcft.cft.locality import changing_band, locality_loss
from segcft.cft.recipe import LOCALITY_RECIPES, LocalityTerms, locality_terms
from segcft.cft.views import GuideViews
from segcft.evaluate.cft import finetune, region_change
from segcft.evaluate.counterfactuals import EvalData, frechet_distance, locality, relabelled_share
from segcft.models import segmentor
from segcft.utils import InputError
from monai.networks.nets import Regressor
from tests.conftest import run_python

STAGES = [{"resolution": 32, "width": 8, "z_dim": 0}, {"resolution": 8, "width": 16, "z_dim": 4}, {"resolution": 1, "width": 16, "z_dim": 4}]
AREAS = {"heart_area": "heart", "left_lung_area": "left_lung", "right_lung_area": "right_lung"}


pytestmark = pytest.mark.usefixtures("one_thread")


def test_lambda_rises_while_the_elbo_exceeds_eps_and_never_goes_negative():
    lag = LagrangeMultiplier(init=0.0, lr=0.1, damping=1.0)
    for _ in range(3):
        lag.penalty(torch.tensor(5.0), eps=4.0).backward()  # ELBO above eps: violated
        lag.step()
    high = float(lag.value.detach())
    assert high > 0
    for _ in range(50):
        lag.penalty(torch.tensor(3.0), eps=4.0).backward()  # satisfied: lambda falls, clamped at 0
        lag.step()
    assert float(lag.value.detach()) == 0.0


def test_damping_acts_on_violations_only():
    lag = LagrangeMultiplier(init=0.0, lr=0.1, damping=10.0)
    satisfied = torch.tensor(3.0, requires_grad=True)
    lag.penalty(satisfied, eps=4.0).backward()
    assert float(satisfied.grad) == 0.0  # a satisfied bound with lambda = 0 leaves the model to the guide
    violated = torch.tensor(4.5, requires_grad=True)
    lag.penalty(violated, eps=4.0).backward()
    assert float(violated.grad) == pytest.approx(10.0 * 0.5)  # damping pulls the ELBO back under eps


def test_relative_targets_cancel_a_guide_bias():
    from segcft.cft.guides import Guide

    class Biased(Guide):  # measures 1.1x the image mean as "area"
        variables = ["a"]

        def measure(self, x, spacing, factual):
            return {"a": 1.1 * x.flatten(1).mean(1)}

    guide = Biased()
    x, x_cf = torch.full((2, 1, 4, 4), 10.0), torch.full((2, 1, 4, 4), 8.0)
    pa, pa_cf = {"a": torch.full((2,), 10.0)}, {"a": torch.full((2,), 8.0)}  # the true change: -20%
    assert float(guide.loss(x_cf, pa_cf, torch.ones(2, 2), factual=x)) == pytest.approx(0.1)  # the bias counts as error
    assert float(guide.loss(x_cf, pa_cf, torch.ones(2, 2), factual=x, pa=pa)) == pytest.approx(0.0, abs=1e-6)
    wrong = torch.full((2, 1, 4, 4), 9.0)
    assert float(guide.loss(wrong, pa_cf, torch.ones(2, 2), factual=x, pa=pa)) == pytest.approx(0.125)


def test_guide_loss_sums_the_group_means_so_regions_do_not_dilute_the_structures():
    from segcft.cft.guides import Guide
    from segcft.data.structures import CCTA_REGIONS, CCTA_STRUCTURES

    class Two(Guide):  # one structure, two regions; each measures the image mean
        variables = ["s", "r1", "r2"]

        def measure(self, x, spacing, factual):
            return dict.fromkeys(self.variables, x.flatten(1).mean(1))

        def groups(self):
            return [["s"], ["r1", "r2"]]

    x = torch.full((1, 1, 4, 4), 2.0)
    pa_cf = {"s": torch.tensor([4.0]), "r1": torch.tensor([2.0]), "r2": torch.tensor([1.0])}
    # errors 0.5 (structure) and 0, 1 (regions): 0.5 + mean(0, 1), not mean(0.5, 0, 1)
    assert float(Two().loss(x, pa_cf, torch.ones(1, 2), factual=x)) == pytest.approx(1.0)

    spec = next(s for s in CCTA_REGIONS if s.structure == "calcified_plaque")
    net = segmentor("unet", len(CCTA_STRUCTURES) + 1, width=4)
    regional = {v: (spec, i) for i, v in enumerate(spec.variable_names())}
    assert SegmentorGuide(net, CCTA_STRUCTURES, 32, {"lumen_area": "lumen"}, regional).groups() == [
        ["lumen_area"], spec.variable_names()]
    assert SegmentorGuide(net, CCTA_STRUCTURES, 32, {"lumen_area": "lumen"}).groups() == [["lumen_area"]]


def test_do_on_a_structure_spreads_its_change_over_its_regions():
    from segcft.data.structures import CXR_STRUCTURES

    spec = next(s for s in CXR_REGIONS if s.structure == "left_lung")
    zones = spec.variable_names()
    guide = SegmentorGuide(segmentor("unet", len(CXR_STRUCTURES) + 1, width=4), CXR_STRUCTURES, 32,
                           {"left_lung_area": "left_lung", "heart_area": "heart"}, {v: (spec, i) for i, v in enumerate(zones)})
    # do(left lung *= 0.75): its parents, the zones, stay at 40, 40, 20 and no image can meet all four targets
    targets = {"left_lung_area": torch.tensor([75.0]), "heart_area": torch.tensor([50.0]), **dict(zip(zones, torch.tensor([[40.0], [40.0], [20.0]])))}
    spread = guide.consistent(targets, ["left_lung_area"])
    assert [float(spread[v]) for v in zones] == pytest.approx([30.0, 30.0, 15.0])
    assert float(spread["left_lung_area"]) == 75.0 and float(spread["heart_area"]) == 50.0
    # a do() on a zone, or on another structure, leaves every target as asked
    for intervened in (["left_lung_lower_area"], ["heart_area"], []):
        assert all(torch.equal(guide.consistent(targets, intervened)[v], targets[v]) for v in targets)


def test_empty_regions_get_a_finite_error_scale_and_an_absolute_target():
    from segcft.cft.guides import Guide
    from segcft.data.structures import CCTA_REGIONS, CCTA_STRUCTURES

    spec = next(s for s in CCTA_REGIONS if s.structure == "calcified_plaque")
    names = spec.variable_names()
    guide = SegmentorGuide(segmentor("unet", len(CCTA_STRUCTURES) + 1, width=4), CCTA_STRUCTURES, 32, {},
                           {v: (spec, i) for i, v in enumerate(names)})
    targets = dict(zip(names, torch.tensor([[2.0], [0.0], [0.0], [0.4]])))
    scales = guide.scales(targets)
    floor = 2.4 / (8 * 4)  # an eighth of the mean sector
    assert [float(scales[v]) for v in names] == pytest.approx([2.0, floor, floor, 0.4])

    class Area(Guide):  # measures the image mean as "area"
        variables = ["a"]

        def measure(self, x, spacing, factual):
            return {"a": x.flatten(1).mean(1)}

    x, x_cf = torch.zeros(1, 1, 4, 4), torch.full((1, 1, 4, 4), 3.0)
    # an empty factual region asked to hold 3 mm2 gets the absolute target 3, not 3 / 0
    assert float(Area().loss(x_cf, {"a": torch.tensor([3.0])}, torch.ones(1, 2), factual=x, pa={"a": torch.zeros(1)})) == 0.0


def test_sampler_picks_one_variable_within_support():
    support = {"a": (1.0, 10.0), "b": (0.0, 2.0)}
    pa = {"a": torch.tensor([2.0, 5.0, 9.0]), "b": torch.tensor([1.0, 1.5, 0.5])}
    draws = [InterventionSampler(["a", "b"], support, seed=3)(pa) for _ in range(2)]
    assert draws[0].keys() == draws[1].keys() and all(torch.equal(draws[0][k], draws[1][k]) for k in draws[0])
    sampler = InterventionSampler(["a", "b"], support, max_change=5.0, seed=0)
    for _ in range(20):
        do = sampler(pa)
        ((name, target),) = do.items()
        assert (target >= support[name][0]).all() and (target <= support[name][1]).all()


def test_guide_views_show_every_image_the_same_area_keeping_view():
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    disk = (((yy - 30) ** 2 + (xx - 34) ** 2) < 15**2).float()[None, None].repeat(8, 1, 1, 1)
    shifted = disk + 1
    rng = torch.get_rng_state()
    same = GuideViews(0.0)(disk, shifted)
    assert same[0] is disk and same[1] is shifted  # strength 0: no view, no noise...
    assert torch.equal(torch.get_rng_state(), rng)  # ...and no random draw: runs without views repeat earlier ones
    torch.manual_seed(0)
    a, b = GuideViews(1.0)(disk, disk * 2)
    # one view for both images: resampling is linear, so b - a is the viewed disk and 2a - b the shared noise
    viewed, noise = b - a, 2 * a - b
    assert 0.015 < float(noise.std()) < 0.025  # the segmentors' training noise, SD 0.02
    assert not torch.allclose(viewed, disk, atol=0.1)  # a view moves the image...
    assert torch.allclose(viewed.sum((1, 2, 3)), disk.sum((1, 2, 3)), rtol=0.01)  # ...but keeps the area
    assert not torch.allclose(viewed[0], viewed[1], atol=0.1)  # a view per sample
    torch.manual_seed(0)
    again = GuideViews(1.0)(disk, disk * 2)
    assert torch.equal(again[0], a) and torch.equal(again[1], b)  # the same seed, the same views
    x = disk.clone().requires_grad_(True)
    GuideViews(1.0)(x)[0].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(InputError, match="guide_views"):
        GuideViews(1.5)


def test_locality_is_one_for_a_change_inside_the_mask_and_falls_outside():
    x = torch.zeros(2, 1, 20, 20)
    mask = torch.zeros(2, 20, 20, dtype=torch.bool)
    mask[:, 5:10, 5:10] = True
    x_cf = x.clone()
    x_cf[0, 0, 6:9, 6:9] = 0.5  # inside
    x_cf[1, 0, 0:2, 15:20] = 0.5  # far outside
    share = locality(x, x_cf, mask, dilation=2)
    assert share[0] == 1.0 and share[1] == 0.0
    assert locality(x, x, mask)[0] == 1.0


def test_relabelled_share_splits_moved_boundaries_from_repainting():
    x = torch.zeros(3, 1, 8, 8)
    before = torch.zeros(3, 4, 4, dtype=torch.long)  # the judge's label maps, at half the images' size
    before[:, :2] = 1
    after = before.clone()
    after[:, 2] = 1  # the structure grows by one judged row: image rows 4 and 5
    x_cf = x.clone()
    x_cf[0, 0, 4:6] = -0.5  # all of the change where the label moved
    x_cf[1, 0, 0:2] = 0.5  # all of it where the structure stays: repainting
    x_cf[2, 0, 4:6], x_cf[2, 0, 6:8] = 0.3, 0.1  # 3/4 of it on the moved rows
    share = relabelled_share(x, x_cf, before, after)
    assert share.tolist() == pytest.approx([1.0, 0.0, 0.75])
    assert relabelled_share(x, x, before, before)[0] == 1.0


def test_frechet_distance_on_hand_made_feature_sets():
    # columns of a 4 x 4 Hadamard matrix: zero-mean, orthogonal, so each set's sample covariance is diagonal
    hadamard = torch.tensor([[1.0, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]], dtype=torch.float64)[:, 1:]
    a = hadamard * torch.tensor([1.0, 2.0, 3.0])
    b = hadamard * torch.tensor([2.0, 2.0, 1.0]) + torch.tensor([1.0, 0.0, -2.0])
    var_a, var_b = (a**2).sum(0) / 3, (b - b.mean(0)).pow(2).sum(0) / 3
    # diagonal covariances: |mu_a - mu_b|^2 + sum (sd_a - sd_b)^2
    expected = 1.0 + 4.0 + float(((var_a.sqrt() - var_b.sqrt()) ** 2).sum())
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(b, a) == pytest.approx(expected, rel=1e-9)
    # fewer cases than features (singular covariances): finite, >= 0, zero on itself up to rounding
    few = torch.randn(5, 16, generator=torch.Generator().manual_seed(0))
    assert frechet_distance(few, few) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(few, few + 1.0) == pytest.approx(16.0, rel=1e-6)
    assert frechet_distance(few, few * 2.0) > 0.1


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny phantom, and a deep SCM whose parents include the regional left_lung_lower_area."""
    torch.manual_seed(0)
    path = make_phantom("cxr", 64).write_dataset(tmp_path_factory.mktemp("cxr"), 16, seed=0, progress=False)
    dl = load_datalist(path)
    graph = {**dl["graph"], "left_lung_lower_area": ["left_lung_area"]}
    variables = list(graph)
    scm = build_deep_scm(dl, variables, graph, stages=STAGES, log_vars=[*AREAS, "left_lung_lower_area"])
    fit_parent_scm(scm.parents, training_parents(dl, variables), steps=20, seed=0)
    pipeline = image_pipeline(32, "cxr", with_label=False, variables=variables)
    items = [pipeline(item) for item in dl["training"]]
    batch = {
        "image": torch.stack([torch.as_tensor(i["image"]) for i in items]),
        "parents": {v: torch.stack([i["parents"][v] for i in items]) for v in variables},
        "spacing": torch.stack([i["spacing"] for i in items]),
    }
    return dl, scm, batch


def _guide(dl, name):
    structures = structures_of(dl)
    if name == "reg":
        network = Regressor(in_shape=(1, 32, 32), out_shape=(3,), channels=(4, 8), strides=(2, 2))
        return RegressorGuide(network, list(AREAS), {v: (9.5, 0.3) for v in AREAS})
    regional = None
    if name == "pos-seg":
        spec = next(s for s in CXR_REGIONS if s.structure == "left_lung")
        regional = {"left_lung_lower_area": (spec, spec.regions.index("lower"))}
    return SegmentorGuide(segmentor("unet", 4, width=4), structures, 32, AREAS, regional=regional)


@pytest.mark.parametrize("name", ["reg", "seg", "pos-seg"])
def test_a_few_cft_steps_train_the_hvae_and_leave_guide_and_parents_frozen(setup, name):
    dl, scm, batch = setup
    guide = _guide(dl, name)
    guide_before = {k: v.clone() for k, v in guide.state_dict().items()}
    parents_before = {k: v.clone() for k, v in scm.parents.state_dict().items() if torch.is_tensor(v)}
    image_before = [p.detach().clone() for p in scm.image.parameters()]
    loader = [batch, batch]
    eps = elbo_bound(scm, loader, slack=0.01)
    targets = [*AREAS, "left_lung_lower_area"] if name == "pos-seg" else list(AREAS)
    trainer = CFTTrainer(
        "cpu", 1, loader, scm, guide, InterventionSampler(targets, scm.support, seed=0),
        torch.optim.AdamW(scm.image.parameters(), lr=1e-3), LagrangeMultiplier(lr=0.1), eps,
    )
    trainer.run()
    out = trainer.state.output
    assert out["lambda"] >= 0 and out["eps"] == pytest.approx(eps) and out["guide_loss"] > 0
    assert set(guide.variables) == set(targets)
    assert all(torch.equal(v, guide_before[k]) for k, v in guide.state_dict().items())
    assert all(torch.equal(v, parents_before[k]) for k, v in scm.parents.state_dict().items() if torch.is_tensor(v))
    assert any(not torch.equal(p, q) for p, q in zip(scm.image.parameters(), image_before))


def test_locality_recipes_are_named_and_their_fields_checked():
    assert locality_terms(None) == LOCALITY_RECIPES["seeds"] == LocalityTerms() and not LocalityTerms().active
    assert locality_terms(["local", "band=2"]) == LocalityTerms(**{**LOCALITY_RECIPES["local"].__dict__, "band": 2})
    assert locality_terms(["hold_weight=1"]) == LocalityTerms(hold_weight=1.0)  # overrides of seeds
    for bad, named in ((["nearby"], "unknown locality recipe 'nearby'"), (["local", "radius=2"], "unknown locality field 'radius'"),
                       (["hold_weight=x"], "'hold_weight' must be a number"), (["band=-1"], "'band' must be >= 0"),
                       (["local", "band"], "must be KEY=VALUE")):
        with pytest.raises(InputError, match=named):
            locality_terms(bad)


def test_the_band_covers_the_structures_whose_variable_changes_and_nothing_else(setup):
    dl, _, _ = setup
    guide = _guide(dl, "seg")
    labels = torch.zeros(2, 16, 16, dtype=torch.long)
    labels[:, 2:5, 2:5] = guide.structures["heart"]
    labels[:, 10:13, 10:13] = guide.structures["left_lung"]
    pa = {v: torch.ones(2) for v in AREAS}
    pa_cf = {**pa, "heart_area": torch.tensor([1.2, 1.0])}  # the heart changes in the first sample only
    band = changing_band(labels, guide, pa, pa_cf, band=1)[:, 0]
    assert band[0, 1:6, 1:6].all() and band[0].sum() == 25  # the heart, grown by one pixel
    assert band[1].sum() == 0  # nothing changes: everything is held


def test_locality_loss_is_zero_for_an_unchanged_image_and_counts_changes_outside_the_band(setup):
    dl, _, batch = setup
    guide = _guide(dl, "seg")
    x, pa = batch["image"][:4], {k: v[:4] for k, v in batch["parents"].items()}
    terms = LocalityTerms(hold_weight=1.0, pixel_weight=1.0, band=2)
    loss, values = locality_loss(guide, x, x.clone(), pa, pa, terms)
    assert float(loss) == pytest.approx(0.0, abs=1e-6) and values["pixel"] == 0.0
    x_cf = (x + 0.1).requires_grad_()
    loss, values = locality_loss(guide, x, x_cf, pa, pa, terms)  # nothing intervened: all of it is held
    assert values["pixel"] == pytest.approx(0.1, abs=1e-5) and values["hold"] >= 0
    loss.backward()
    assert x_cf.grad.abs().sum() > 0
    with pytest.raises(InputError, match="need a segmentor guide"):
        locality_loss(_guide(dl, "reg"), x, x, pa, pa, terms)


def test_the_trainer_adds_and_logs_the_locality_terms(setup):
    import copy

    dl, scm, batch = setup
    scm = copy.deepcopy(scm)
    trainer = CFTTrainer(
        "cpu", 1, [batch], scm, _guide(dl, "seg"), InterventionSampler(list(AREAS), scm.support, seed=0),
        torch.optim.AdamW(scm.image.parameters(), lr=1e-4), LagrangeMultiplier(lr=0.1), eps=10.0,
        locality=LOCALITY_RECIPES["local"],
    )
    trainer.run()
    out = trainer.state.output
    assert {"locality_hold", "locality_pixel", "locality_entropy"} <= set(out) and out["locality_entropy"] > 0


def _split(batch: dict) -> EvalData:
    """The setup's batch as the in-memory split ``finetune`` trains on."""
    n = len(batch["image"])
    return EvalData([str(i) for i in range(n)], batch["image"], torch.zeros(n), batch["parents"], batch["spacing"], None)


def test_finetune_traces_window_means_of_the_elbo_and_lambda_at_each_window_end(setup):
    import copy

    dl, scm, batch = setup
    train = _split(batch)
    guide = _guide(dl, "seg")

    def run(every: int) -> dict:  # the same seed gives the same steps, so two runs differ only in their windows
        return finetune(copy.deepcopy(scm), guide, train, list(AREAS), eps=0.0, steps=5, lr=1e-4, seed=0,
                        batch_size=4, trace_every=every, desc="test")["trace"]

    each, trace = run(1), run(2)
    assert each["step"] == [1, 2, 3, 4, 5] and trace["step"] == [2, 4, 5]
    elbo = each["elbo"]
    assert trace["elbo"] == pytest.approx([(elbo[0] + elbo[1]) / 2, (elbo[2] + elbo[3]) / 2, elbo[4]], abs=2e-5)
    assert trace["lambda"] == [each["lambda"][i] for i in (1, 3, 4)]
    assert trace["lambda"][-1] > 0  # eps = 0 is always violated, so lambda rises


def test_the_trainer_shows_the_guide_its_views(setup):
    import copy

    dl, scm, batch = setup
    guide = _guide(dl, "seg")

    def first_loss(views: float) -> float:  # the same seed: step 1 differs only by the view
        out = finetune(copy.deepcopy(scm), guide, _split(batch), list(AREAS), eps=0.0, steps=1, lr=1e-4, seed=0,
                       batch_size=4, guide_views=views, trace_every=1, desc="test")
        return out["trace"]["guide_loss"][0]

    assert first_loss(0.0) == first_loss(0.0) != first_loss(1.0)


def test_lambda_can_start_in_force_but_not_below_zero(setup, tmp_path):
    import copy

    from segcft.evaluate.cft import bench_cft

    dl, scm, batch = setup
    train = _split(batch)
    eps = elbo_bound(scm, [batch], slack=10.0)  # far above the ELBO: lambda can only fall
    out = finetune(copy.deepcopy(scm), _guide(dl, "seg"), train, list(AREAS), eps=eps, steps=2, lr=1e-4, seed=0,
                   batch_size=4, lagrange_init=5.0, lagrange_lr=0.1, trace_every=1, desc="test")
    lam, elbo = out["trace"]["lambda"], out["trace"]["elbo"]  # each step ascends by rate * (ELBO - eps), from 5
    assert lam[0] == pytest.approx(5.0 + 0.1 * (elbo[0] - eps), abs=1e-4)
    assert lam[1] == pytest.approx(lam[0] + 0.1 * (elbo[1] - eps), abs=1e-4)
    with pytest.raises(InputError, match="lagrange_init must be >= 0"):
        bench_cft(tmp_path / "dl.json", tmp_path / "out.json", generator_run=tmp_path, segmentor_report=tmp_path / "s.json",
                  lagrange_init=-1.0)
    with pytest.raises(InputError, match="guide_views: strength must be in"):
        bench_cft(tmp_path / "dl.json", tmp_path / "out.json", generator_run=tmp_path, segmentor_report=tmp_path / "s.json",
                  guide_views=2.0)
    with pytest.raises(InputError, match="lagrange_init must be >= 0"):  # the bundles build the multiplier directly
        LagrangeMultiplier(init=-1.0)


def test_positional_guide_regions_sum_to_the_structure(setup):
    dl, scm, batch = setup
    guide = SegmentorGuide(segmentor("unet", 4, width=4), structures_of(dl), 32, AREAS, regional={
        name: (spec, i) for spec in CXR_REGIONS for i, name in enumerate(spec.variable_names())
    })
    x = batch["image"][:4]
    measured = guide.measure(x, batch["spacing"][:4], factual=x)
    for lung in ("left_lung", "right_lung"):
        zones = sum(measured[f"{lung}_{z}_area"] for z in ("upper", "middle", "lower"))
        assert torch.allclose(zones, measured[f"{lung}_area"], rtol=1e-4)


def test_region_change_on_a_hand_made_case():
    # two cases; the targeted region shrinks by 20% and 30% of 10 and 30 (-2 and -9: -27.5% in all),
    # the requested -25% targets are 7.5 and 22.5; the one other region moves by 1 of 20 and 0 of 40
    before = {"a": torch.tensor([10.0, 30.0]), "b": torch.tensor([20.0, 40.0])}
    after = {"a": torch.tensor([8.0, 21.0]), "b": torch.tensor([21.0, 40.0])}
    target = torch.tensor([7.5, 22.5])
    out = region_change(before, after, target, "a", ["b"], "mape")
    assert out["target_mape_percent"] == pytest.approx(100 * (0.5 / 7.5 + 1.5 / 22.5) / 2, abs=1e-3)
    assert out["target_change_percent"] == pytest.approx(-27.5)
    assert out["other_regions_change_percent"] == pytest.approx(2.5)
    mae = region_change(before, after, target, "a", ["b"], "mae")
    assert mae["target_mae_mm2"] == pytest.approx(1.0) and mae["other_regions_change_mm2"] == pytest.approx(0.5)


def test_bench_cft_compares_all_methods_on_one_base_model(tmp_path):
    import json

    run = run_python
    data = make_phantom("cxr", 64).write_dataset(tmp_path / "data", 20, seed=0, progress=False)
    run("-m", "segcft.cli.main", "bench", "segmentor", "--data", str(data), "--out", str(tmp_path / "seg.json"),
        "--work-dir", str(tmp_path / "seg"), "--image-size", "32", "--epochs", "1", "--device", "cpu")
    graph = {"age": [], "sex": [], "heart_area": ["age", "sex"], "left_lung_area": ["age", "sex", "heart_area"],
             "right_lung_area": ["age", "sex"], "left_lung_lower_area": ["left_lung_area"]}
    sets = {"graph": graph, "stages": STAGES, "image_size": 32, "log_vars": [*AREAS, "left_lung_lower_area"]}
    bundle = Path(__file__).resolve().parents[1] / "bundles" / "cxr_generator" / "configs"
    files = str([str(bundle / "train.json"), str(bundle / "phantom.json")])
    run("-m", "monai.bundle", "run", "--config_file", files, "--bundle_root", str(tmp_path / "gen"), "--datalist", str(data),
        "--epochs", "1", "--parent_steps", "20", "--progress", "False",
        *[a for k, v in sets.items() for a in (f"--{k}", json.dumps(v).replace('"', "'"))])
    run("-m", "segcft.cli.main", "bench", "cft", "--data", str(data), "--generator", str(tmp_path / "gen"),
        "--segmentors", str(tmp_path / "seg.json"), "--out", str(tmp_path / "cft.json"), "--steps", "2", "--regressor-epochs", "1",
        "--guide-views", "0.5", "--methods", "none,reg,seg,pos-seg,local-seg,spatial-seg", "--spatial", "steps=2",
        "--locality", "local", "--locality", "band=2", *[a for k, v in sets.items() for a in ("--set", f"{k}={json.dumps(v)}")])
    report = json.loads((tmp_path / "cft.json").read_text(encoding="utf-8"))
    assert list(report["methods"]) == ["none", "reg", "seg", "pos-seg", "local-seg", "spatial-seg"] and report["latents"] == "fixed"
    assert report["locality"] == {**LOCALITY_RECIPES["local"].__dict__, "band": 2}
    assert report["guide_views"] == 0.5
    for method, entry in report["methods"].items():
        assert entry["composition_max_abs"] < 1e-4
        assert set(entry["effectiveness"]) == set(AREAS) and "left_lung_lower_area" in entry["positional"]
        assert 0 <= entry["locality"]["heart_area"]["locality"] <= 1 and entry["ground_truth"]
        # the left lung is the heart's child in this graph: do(heart) may move it, so it is not counted as drift
        held = entry["locality"]["heart_area"]["held"]
        assert "left_lung" not in held and "right_lung" in held and "heart" not in held
        assert entry["within_eps"] == (entry["train_elbo_nats_per_dim"] <= report["eps"])
        truth = entry["ground_truth"]["heart_area"]["-25%"]
        assert all(0 <= truth[k] <= 1 for k in ("true_relabelled", "model_relabelled", "dice_unchanged", "dice_model"))
        assert ("guide_agreement" in entry) == (method != "none")
        if method != "none":
            # requested: -25% on the target, the flows' change on its child, nothing on the rest
            agree = entry["guide_agreement"]["heart_area"]["-25%"]
            assert agree["heart_area"]["requested"] == pytest.approx(-25.0, abs=0.01)
            assert agree["right_lung_area"]["requested"] == pytest.approx(0.0, abs=0.01)
            assert agree["left_lung_area"]["requested"] != pytest.approx(0.0, abs=0.01)
            assert set(agree["heart_area"]) == {"requested", "guide", "judge"}
            assert entry["finetune"]["lambda"] >= 0 and entry["finetune_seconds"] > 0
            trace = entry["finetune"]["trace"]  # 2 steps: one window, ending at the last step, whose output it averages
            assert trace["step"] == [2] and trace["lambda"] == [entry["finetune"]["lambda"]]
    # The base model's training-split ELBO is the bound itself, less the slack.
    assert abs(report["methods"]["none"]["train_elbo_nats_per_dim"] - (report["eps"] - report["eps_slack"])) < 1e-4
    table = (tmp_path / "cft.md").read_text(encoding="utf-8")
    assert table.count("| pos-seg |") == 3 + 1 and "| seg | left_lung_lower_area | -25.0 |" in table
    # the same method with the same seed gives the same figures whichever methods run before it
    run("-m", "segcft.cli.main", "bench", "cft", "--data", str(data), "--generator", str(tmp_path / "gen"),
        "--segmentors", str(tmp_path / "seg.json"), "--out", str(tmp_path / "alone.json"), "--guide-views", "0.5",
        "--methods", "spatial-seg", "--spatial", "steps=2", *[a for k, v in sets.items() for a in ("--set", f"{k}={json.dumps(v)}")])
    alone = json.loads((tmp_path / "alone.json").read_text(encoding="utf-8"))["methods"]["spatial-seg"]
    for key in ("effectiveness", "locality", "ground_truth", "guide_agreement"):
        assert alone[key] == report["methods"]["spatial-seg"][key], key
    assert (tmp_path / "cft.png").stat().st_size > 10_000
    assert (tmp_path / "cft_curves.png").stat().st_size > 10_000
