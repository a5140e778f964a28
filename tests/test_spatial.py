"""The spatial-intensity counterfactual mechanism: exact composition, locality by construction, moved layers."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest
import torch
from torch import nn

from segcft.causal.parents import fit_parent_scm
from segcft.causal.scm import build_deep_scm, training_parents
from segcft.cft import SegmentorGuide
from segcft.cft.factory import guide_kind, spatial_mechanism
from segcft.cft.recipe import SPATIAL, spatial_recipe
from segcft.data.datalist import load_datalist, structures_of
from segcft.data.phantom import make_phantom
from segcft.data.transforms import image_pipeline
from segcft.evaluate.cft import finetune, locality_and_drift
from segcft.evaluate.counterfactuals import EvalData, Judge, folding
from segcft.models import segmentor
from segcft.models.spatial import SpatialMechanism, folding_share, spatial_settings
from segcft.serve.package import load_model_package, save_model_package
from segcft.utils import InputError

STAGES = [{"resolution": 32, "width": 8, "z_dim": 0}, {"resolution": 8, "width": 16, "z_dim": 4}, {"resolution": 1, "width": 16, "z_dim": 4}]
AREAS = {"heart_area": "heart", "left_lung_area": "left_lung", "right_lung_area": "right_lung"}

pytestmark = pytest.mark.usefixtures("one_thread")


class Threshold(nn.Module):
    """A hand-made two-class segmentor: class 1 where the image is brighter than 0 (a sharp sigmoid)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([-20 * x, 20 * x], 1)


def _disk(size: int = 32, radius: float = 8.0) -> torch.Tensor:
    """A bright disk (0.6) on a dark background (-0.6), both with the same fine texture."""
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij")
    inside = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < radius**2).float()
    texture = 0.05 * torch.sin(xx * 1.7) * torch.cos(yy * 2.3)
    return (-0.6 + 1.2 * inside + texture)[None, None]


def _disk_mechanism(**options) -> SpatialMechanism:
    settings = spatial_settings({"disk_area": "disk"}, {"disk": 1}, 32, **options)
    return SpatialMechanism(settings, Threshold(), ["disk_area"])


def test_moving_a_layer_moves_its_boundary_and_keeps_the_texture_no_boundary_crosses():
    mech = _disk_mechanism(context=4)
    x = _disk()
    probs = mech.probabilities(x)
    ddf = torch.zeros(1, 2, 32, 32)
    ddf[:, 1] = -2.0  # sample two pixels to the left: the disk moves two pixels to the right
    band = torch.ones(1, 1, 32, 32)
    moved = mech.move(x, probs, ddf, band)
    row = moved[0, 0, 16]
    # the disk moved right: pixels 9 and 10 left it (background level), 24 and 25 joined it
    assert row[9] < -0.4 and row[10] < -0.4 and row[24] > 0.4 and row[25] > 0.4
    # texture where no boundary crossed is the factual image's, to the bit
    untouched = ((moved - x).abs() > 1e-6)[0, 0]
    assert not untouched[16, 12:22].any() and not untouched[0:4].any()
    # nothing changes outside the band
    half = torch.zeros_like(band)
    half[..., :16] = 1
    assert torch.equal(mech.move(x, probs, ddf, half)[..., 16:], x[..., 16:])


def test_the_band_is_the_dilated_mask_of_the_changed_structures_only():
    mech = _disk_mechanism(band=2)
    probs = mech.probabilities(_disk())
    band = mech.band(probs, torch.tensor([[True]]))
    mask = probs.argmax(1)[:, None] == 1
    assert band[mask].min() == 1 and band.sum() > mask.sum()  # the mask and a ring around it
    assert band[0, 0, 0, 0] == 0 and band[0, 0, 16, 16 + 8 + 1] == 1 and band[0, 0, 16, 16 + 8 + 3] == 0
    assert mech.band(probs, torch.tensor([[False]])).sum() == 0


def test_folding_share_counts_non_positive_jacobians():
    identity = torch.zeros(2, 2, 16, 16)
    assert torch.equal(folding_share(identity), torch.zeros(2))
    flip = torch.zeros(1, 2, 16, 16)
    flip[:, 1] = -2 * torch.arange(16, dtype=torch.float32)  # x -> -x: orientation reversed everywhere
    assert folding_share(flip).item() == 1.0
    band = torch.zeros(1, 1, 16, 16)
    assert folding_share(flip, band).item() == 0.0  # an empty band has no fold to count


def test_own_layers_move_one_structure_and_keep_a_partition():
    """Two boxes, each with its own field: each moves by its own, a zero field keeps its box to the bit."""
    settings = spatial_settings({"a_area": "a", "b_area": "b"}, {"a": 1, "b": 2}, 32, layers="own")
    mech = SpatialMechanism(settings, Threshold(), ["a_area", "b_area"])
    assert settings.fields == 2 and mech.head.out.out_channels == 5
    probs = torch.zeros(1, 3, 32, 32)
    probs[:, 1, 10:20, 4:12] = 1  # structure a
    probs[:, 2, 10:20, 20:28] = 1  # structure b
    probs[:, 0] = 1 - probs[:, 1:].sum(1)
    ddf = torch.zeros(1, 4, 32, 32)
    ddf[:, 1] = -3.0  # a's field: sample three pixels to the left, so a moves right into the background
    ddf[:, 3] = 5.0  # b's field: sample five pixels to the right, so b moves left
    layers = mech.moved_layers(probs, ddf)
    assert torch.allclose(layers.sum(1), torch.ones(1, 32, 32)) and layers.min() >= 0
    assert layers[0, 1, 15, 13] == 1 and layers[0, 1, 15, 5] == 0  # a moved right by three
    assert layers[0, 2, 15, 23] == 0 and layers[0, 2, 15, 15] == 1  # b moved left by five
    ddf[:, 2:] = 0
    assert torch.equal(mech.moved_layers(probs, ddf)[:, 2], probs[:, 2])  # b's zero field keeps b
    one = {layers: SpatialMechanism(spatial_settings({"a_area": "a"}, {"a": 1}, 32, layers=layers), Threshold(), ["a_area"])
           for layers in ("shared", "own")}  # with one structure the two are the same move
    two_classes = torch.stack([1 - probs[:, 1], probs[:, 1]], 1)
    assert torch.allclose(one["shared"].moved_layers(two_classes, ddf[:, :2]), one["own"].moved_layers(two_classes, ddf[:, :2]))
    two = torch.zeros(1, 4, 8, 8)
    two[:, 3] = -2 * torch.arange(8, dtype=torch.float32)  # the second field folds everywhere, the first nowhere
    assert folding_share(two).item() == 1.0 and folding_share(two[:, :2]).item() == 0.0
    with pytest.raises(InputError, match="layers"):
        spatial_settings({"a_area": "a"}, {"a": 1}, 32, layers="many")


def test_warp_fill_gives_a_crossed_pixel_the_moved_tissue_at_full_contrast():
    x = _disk()
    ddf = torch.zeros(1, 2, 32, 32)
    ddf[:, 1] = -2.0  # the disk moves two pixels to the right
    band = torch.ones(1, 1, 32, 32)
    means, warp = _disk_mechanism(context=4), _disk_mechanism(context=4, fill="warp")
    probs = warp.probabilities(x)
    by_means, by_warp = means.move(x, probs, ddf, band), warp.move(x, probs, ddf, band)
    source = torch.roll(x, 2, dims=-1)  # the tissue two pixels to the left
    # the pixels the boundary crossed take the moved tissue, texture and full contrast included
    for col in (9, 10, 24, 25):
        assert torch.allclose(by_warp[0, 0, 16, col], source[0, 0, 16, col], atol=1e-4)
    # the local class means blur the contrast that the moved tissue keeps
    assert (by_warp[0, 0, 16, 24] - by_warp[0, 0, 16, 9]) > (by_means[0, 0, 16, 24] - by_means[0, 0, 16, 9])
    untouched = ((by_warp - x).abs() > 1e-6)[0, 0]
    assert not untouched[16, 12:22].any() and not untouched[0:4].any()
    # a fresh head (phi = 0) still gets a gradient
    still = torch.zeros(1, 2, 32, 32, requires_grad=True)
    warp.move(x, probs, still, band).sum().backward()
    assert still.grad.abs().max() > 0.1
    with pytest.raises(InputError, match="fill 'warp' needs layers 'shared'"):
        _disk_mechanism(fill="warp", layers="own")
    with pytest.raises(InputError, match="fill must be one of"):
        _disk_mechanism(fill="paint")
    with pytest.raises(InputError, match="needs the input image"):
        warp.full_resolution_change({}, lambda t: t, 2.0)


def test_the_warp_fill_full_resolution_change_is_its_model_change_at_ratio_one():
    mech = _disk_mechanism(context=4, fill="warp")
    torch.manual_seed(0)
    nn.init.normal_(mech.head.out.weight, std=0.5)  # a head that moves the disk under a change of its area
    x = _disk()
    with torch.no_grad():
        out = mech(x, torch.zeros(1, 1), torch.full((1, 1), 0.5))
        change = (out["image"] - x)[0, 0]
        assert change.abs().max() > 0.1
        fine = mech.full_resolution_change(out, lambda m: m, 1.0, x[0, 0])
        inside = out["image"][0, 0].abs() < 1  # x* is clamped to the image range; the change is not
        assert torch.allclose(fine[inside], change[inside], atol=1e-5)


class SoftThreshold(nn.Module):
    """Like :class:`Threshold`, with a boundary a few pixels wide (a segmentor less sure at edges)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([-2 * x, 2 * x], 1)


def _smooth_disk(radius: float = 8.0) -> torch.Tensor:
    """:func:`_disk` with a blurred edge, so the soft segmentor's probabilities ramp over pixels."""
    return torch.nn.functional.avg_pool2d(_disk(radius=radius), 3, stride=1, padding=1, count_include_pad=False)


def _disk_area(x: torch.Tensor) -> float:
    return float((x > 0).sum())


@pytest.mark.parametrize("ratio", [0.64, 0.81, 1.44])
def test_the_scale_prior_scales_a_structure_to_its_requested_area_about_its_centroid(ratio):
    mech = SpatialMechanism(spatial_settings({"disk_area": "disk"}, {"disk": 1}, 32, prior="scale", fill="strip"),
                            SoftThreshold(), ["disk_area"])
    x = _smooth_disk()
    cond, cond_cf = torch.zeros(1, 1), torch.full((1, 1), 0.3)
    with torch.no_grad():  # a fresh head moves nothing: the move is the prior's alone
        out = mech(x, cond, cond_cf, torch.tensor([[ratio]]))
        same = mech(x, cond, cond, torch.ones(1, 1))
    assert torch.equal(out["residual"], torch.zeros_like(out["residual"]))
    assert abs(_disk_area(out["image"]) / _disk_area(x) - ratio) < 0.08 * ratio  # whole pixels of a small disk
    # about the centroid: the disk stays centred, and its middle keeps its texture
    centre = (out["image"][0, 0] > 0).nonzero().float().mean(0)
    assert torch.allclose(centre, torch.tensor([15.5, 15.5]), atol=0.6)
    assert torch.allclose(out["image"][..., 14:18, 14:18], x[..., 14:18, 14:18], atol=1e-5)
    # a ratio of 1 is no move at all
    assert torch.equal(same["displacement"], torch.zeros_like(same["displacement"])) and torch.equal(same["image"], x)


def test_the_strip_fill_moves_a_soft_boundary_in_full_where_the_warp_fill_falls_short():
    x = _smooth_disk()
    ratio = torch.tensor([[1.44]])
    areas = {}
    for fill in ("warp", "strip"):
        mech = SpatialMechanism(spatial_settings({"disk_area": "disk"}, {"disk": 1}, 32, prior="scale", fill=fill),
                                SoftThreshold(), ["disk_area"])
        with torch.no_grad():
            areas[fill] = _disk_area(mech(x, torch.zeros(1, 1), torch.full((1, 1), 0.3), ratio)["image"]) / _disk_area(x)
    # the soft edge takes only part of the move under "warp"; "strip" moves it whole
    assert areas["warp"] < 1.44 - 0.1 and abs(areas["strip"] - 1.44) < 0.07
    with pytest.raises(InputError, match="prior must be one of"):
        spatial_settings({"disk_area": "disk"}, {"disk": 1}, 32, prior="affine")
    with pytest.raises(InputError, match="prior 'scale' needs layers 'shared'"):
        spatial_settings({"disk_area": "disk"}, {"disk": 1}, 32, prior="scale", layers="own")
    with pytest.raises(InputError, match="area ratios"):
        mech(x, torch.zeros(1, 1), torch.full((1, 1), 0.3))


def test_settings_and_recipe_refuse_unknown_fields_by_name():
    with pytest.raises(InputError, match="bogus"):
        spatial_settings({"disk_area": "disk"}, {"disk": 1}, 32, bogus=1)
    with pytest.raises(InputError, match="not structure variables"):
        SpatialMechanism(spatial_settings({"disk_area": "disk"}, {"disk": 1}, 32), Threshold(), ["other"])
    with pytest.raises(InputError, match="stepz"):
        spatial_recipe({"stepz": 3})
    with pytest.raises(InputError, match="'steps' must be a int"):
        spatial_recipe({"steps": 2.5})
    assert spatial_recipe({"lr": 1, "steps": 3}).lr == 1.0 and spatial_recipe({}) == SPATIAL
    assert guide_kind("spatial-pos-seg") == ("pos-seg", True) and guide_kind("seg") == ("seg", False)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny chest phantom and a deep SCM with a spatial mechanism whose head is not zero."""
    torch.manual_seed(0)
    path = make_phantom("cxr", 64).write_dataset(tmp_path_factory.mktemp("cxr"), 12, seed=0, progress=False)
    dl = load_datalist(path)
    variables = list(dl["graph"])
    scm = build_deep_scm(dl, variables, dl["graph"], stages=STAGES, log_vars=list(AREAS))
    fit_parent_scm(scm.parents, training_parents(dl, variables), steps=20, seed=0)
    pipeline = image_pipeline(32, "cxr", with_label=True, variables=variables)
    items = [pipeline(item) for item in dl["training"]]
    n = len(items)
    net = segmentor("unet", 4, width=4)  # a rough segmentor, so the band is a part of the image
    images = torch.stack([torch.as_tensor(i["image"]).as_subclass(torch.Tensor) for i in items])
    labels = torch.stack([torch.as_tensor(i["label"]).as_subclass(torch.Tensor) for i in items]).long()[:, 0]
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(40):
        opt.zero_grad()
        nn.functional.cross_entropy(net(images), labels).backward()
        opt.step()
    net.eval()
    scm.attach_spatial(spatial_mechanism(dl, variables, net, 32))
    nn.init.normal_(scm.spatial.head.out.weight, std=0.5)  # a head that moves something
    data = EvalData([str(i) for i in range(n)], images, labels, {v: torch.stack([i["parents"][v] for i in items]) for v in variables},
                    torch.stack([i["spacing"] for i in items]), None)
    return dl, scm, net, data


def test_null_intervention_is_exact_and_a_change_stays_in_its_band(setup):
    _, scm, _, data = setup
    with torch.no_grad():
        null = scm.counterfactual(data.images, data.parents, {})
        assert torch.equal(null.image, data.images)
        cf = scm.counterfactual(data.images, data.parents, {"right_lung_area": data.parents["right_lung_area"] * 0.7})
    assert scm.mechanism == "spatial" and cf.displacement.shape == (len(data), 2, 32, 32)
    change = (cf.image - data.images).abs()
    outside = (cf.band == 0).expand_as(change)
    assert change.sum() > 0 and outside.float().mean() > 0.3 and change[outside].max() == 0
    assert set(folding(scm, data, ["right_lung_area"])["right_lung_area"]) == {"-25%", "+25%"}


def test_locality_with_descendants_counts_the_change_a_child_structure_must_make(setup):
    dl, scm, net, data = setup
    judge = Judge(net, structures_of(dl), 32)
    report = locality_and_drift(scm, data, judge, AREAS)
    children = {v for v in AREAS if scm.graph.descendants(v) & set(AREAS)}
    assert children and children != set(AREAS)  # the phantom has structures with and without structure descendants
    for name, entry in report.items():
        assert 0.0 <= entry["locality"] <= entry["locality_causal"] <= 1.0
        if name in children:
            assert AREAS[name] not in entry["held"] and not set(entry["held"]) & {AREAS[d] for d in scm.graph.descendants(name) if d in AREAS}
        else:
            assert entry["locality_causal"] == entry["locality"]
    # the heart's child, the left lung, moves under do(heart): its change counts only with descendants
    assert report["heart_area"]["locality_causal"] > report["heart_area"]["locality"]


def test_spatial_cft_trains_the_head_only(setup):
    dl, scm, net, data = setup
    scm = copy.deepcopy(scm)
    frozen = {name: p.detach().clone() for name, p in scm.named_parameters() if not name.startswith("spatial.head.")}
    head = [p.detach().clone() for p in scm.spatial.head.parameters()]
    guide = SegmentorGuide(copy.deepcopy(net), structures_of(dl), 32, AREAS)

    def no_elbo(*args, **kwargs):
        raise AssertionError("a spatial head's fine-tuning ran the frozen HVAE")

    scm.image.forward = no_elbo  # the HVAE's ELBO is neither a constraint nor a loss here: not worth a forward pass
    out = finetune(scm, guide, data, list(AREAS), eps=10.0, steps=3, lr=1e-3, seed=0, batch_size=4, warmup=0, ema_decay=0.0, desc="test")
    assert out["lambda"] == 0.0 and out["skipped_updates"] == 0
    assert "elbo" not in out and set(out["trace"]) == {"step", "guide_loss", "lambda"} and out["trace"]["step"] == [3]
    assert all(torch.equal(p, frozen[name]) for name, p in scm.named_parameters() if name in frozen)
    assert any(not torch.equal(p, q) for p, q in zip(scm.spatial.head.parameters(), head))


def test_a_scale_prior_takes_each_structures_ratio_from_the_counterfactual_parents(setup):
    dl, scm, net, data = setup
    scm = copy.deepcopy(scm)
    settings = dataclasses.replace(scm.spatial.settings, prior="scale", fill="strip")
    scm.attach_spatial(SpatialMechanism(settings, copy.deepcopy(net), scm.variables))  # a fresh head: the prior alone
    do = {"right_lung_area": data.parents["right_lung_area"] * 0.7}
    with torch.no_grad():
        cf = scm.counterfactual(data.images, data.parents, do)
        null = scm.counterfactual(data.images, data.parents, {})
        ratio = torch.stack([cf.parents[v] / data.parents[v] for v in settings.structure_of], 1)
        expected = scm.spatial.scale_prior(cf.mechanism["probabilities"], ratio)
    assert torch.allclose(ratio[:, list(settings.structure_of).index("right_lung_area")], torch.full((len(data),), 0.7))
    assert torch.equal(cf.mechanism["residual"], torch.zeros_like(expected)) and torch.allclose(cf.displacement, expected)
    assert cf.displacement.abs().max() > 0.5 and torch.equal(null.image, data.images)


def test_a_package_keeps_the_spatial_mechanism(setup, tmp_path):
    dl, scm, net, data = setup
    config = {"modality": "cxr", "image_size": 32, "variables": scm.variables, "graph": dl["graph"], "log_vars": list(AREAS),
              "preset": "cpu64", "stages": STAGES, "latents": "fixed", "hvae": {}}
    path = save_model_package(tmp_path / "pkg", scm, config=config, datalist=dl, segmentor_net=net,
                              segmentor_entry={"network": "unet", "width": 4, "image_size": 32}, provenance={"method": "spatial-seg"})
    pkg = load_model_package(path)
    assert pkg.manifest["spatial"]["structure_of"] == AREAS and pkg.scm.mechanism == "spatial"
    do = {"heart_area": data.parents["heart_area"] * 1.2}
    with torch.no_grad():
        assert torch.equal(pkg.scm.counterfactual(data.images, data.parents, do).image,
                           scm.counterfactual(data.images, data.parents, do).image)


def test_the_full_resolution_change_is_the_model_change_at_ratio_one_and_zero_without_a_move(setup):
    _, scm, _, data = setup
    x, pa = data.images[:1], {v: t[:1] for v, t in data.parents.items()}
    pa_cf = scm.parents.counterfactual(pa, {"heart_area": pa["heart_area"] * 0.8})
    with torch.no_grad():
        out = scm.spatial(x, scm.condition(pa), scm.condition(pa_cf))
        same = scm.spatial.full_resolution_change(out, lambda m: m, 1.0)
        inside = out["image"][0, 0].abs() < 1  # x* is clamped to the image range; the change is not
        assert inside.float().mean() > 0.95
        assert torch.allclose(same[inside], (out["image"] - x)[0, 0][inside], atol=1e-5)
        null = scm.spatial(x, scm.condition(pa), scm.condition(pa))
        assert torch.equal(scm.spatial.full_resolution_change(null, lambda m: m, 4.0), torch.zeros(32, 32))


def test_counterfactuals_of_a_larger_input_move_sharp_boundaries_and_keep_the_rest(setup, tmp_path):
    """A 128 px DICOM through a 32 px package: the change made at 128 px stays out of the unmoved pixels,
    and its boundary is narrower than the resampled model-size change's."""
    from segcft.serve.counterfactual import counterfactual_files

    dl, scm, net, data = setup
    pkg = load_model_package(_package(setup, tmp_path))
    hi = make_phantom("cxr", 128)
    item = dl["test"][0]
    parents = hi.parents_from_noise(item["noise"])
    image, _ = hi.render(item["noise"], parents)
    hi.write_image(image, tmp_path / "in.dcm", item["case"], parents)
    load = image_pipeline(32, "cxr", with_label=False)
    read = lambda p: load({"image": str(p)}, end=1)["image"][0].as_tensor().float()  # noqa: E731
    changes = {}
    for full in (True, False):
        summary = counterfactual_files(pkg, [tmp_path / "in.dcm"], ["heart_area=*0.85"], tmp_path / str(full),
                                       parents={v: parents[v] for v in pkg.variables}, progress=False, full_resolution=full)
        assert not summary["failed"] and summary["resolution"] == ("input" if full else "model, resampled")
        changes[full] = read(summary["results"][0]["outputs"]["counterfactual"]) - read(tmp_path / "in.dcm")
    assert changes[True].abs().max() > 0.01
    moved = lambda c: (c.abs() > 0.01).float().mean()  # noqa: E731
    assert moved(changes[True]) < moved(changes[False])  # a sharp boundary: fewer pixels change by a visible amount


def _package(setup, tmp_path):
    dl, scm, net, _ = setup
    config = {"modality": "cxr", "image_size": 32, "variables": scm.variables, "graph": dl["graph"], "log_vars": list(AREAS),
              "preset": "cpu64", "stages": STAGES, "latents": "fixed", "hvae": {}}
    return save_model_package(tmp_path / "pkg", scm, config=config, datalist=dl, segmentor_net=net,
                              segmentor_entry={"network": "unet", "width": 4, "image_size": 32}, provenance={"method": "spatial-seg"})


def test_bench_fullres_compares_both_modes_with_the_rendered_truth(setup, tmp_path):
    from segcft.serve.resolution import MODES, bench_resolution

    dl, *_ = setup
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps(dl), encoding="utf-8")  # its item paths are absolute once loaded
    report = bench_resolution(_package(setup, tmp_path), datalist, tmp_path / "fullres.json", size=96, cases=1)
    entries = [e for per in report["error"].values() for e in per.values()]
    assert entries and report["size"] == 96 and report["model_size"] == 32
    assert all(all(m in e and f"{m}, changed pixels" in e for m in MODES) and e["unchanged"] > 0 for e in entries)
    assert (tmp_path / "fullres.png").is_file()
