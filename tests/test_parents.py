"""The parent mechanisms of the deep SCM, fitted on the chest phantom whose true SCM is known.

The fitted graph is the phantom's with ``right_lung_area`` made a root (the model then
learns its marginal), so that age has both descendants (heart, left lung) and
non-descendants (sex, right lung) to check.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from segcft.causal import (
    CausalGraph,
    Intervention,
    ParentSCM,
    fit_parent_scm,
    parent_stats,
    parse_do,
    resolve,
    support_from_data,
)
from segcft.data.phantom import make_phantom
from segcft.utils import InputError

N_SAMPLES = 300
LOG_VARS = ("heart_area", "left_lung_area", "right_lung_area")
# Small and few steps: the test machine's CPU is shared; this fits in about 2-3 s.
MODEL = {"transforms": 2, "hidden": 16}
FIT = {"steps": 60, "lr": 1e-2, "batch_size": N_SAMPLES, "seed": 0}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def phantom():
    return make_phantom("cxr", 64)


@pytest.fixture(scope="module")
def graph(phantom) -> CausalGraph:
    parents = {name: list(pas) for name, pas in phantom.graph.items()}
    parents["right_lung_area"] = []
    return CausalGraph.from_config(parents, phantom.variables)


@pytest.fixture(scope="module")
def sample(phantom, graph):
    """``(noise list, {variable: float64 tensor})`` of phantom samples."""
    rng = np.random.default_rng(0)
    noises = [phantom.sample_noise(rng) for _ in range(N_SAMPLES)]
    rows = [phantom.parents_from_noise(noise) for noise in noises]
    return noises, {name: torch.tensor([r[name] for r in rows], dtype=torch.float64) for name in graph.order}


def _model(graph: CausalGraph, data: dict, seed: int = 0) -> ParentSCM:
    torch.manual_seed(seed)
    return ParentSCM(graph, parent_stats(data, LOG_VARS), log_vars=LOG_VARS, **MODEL)


@pytest.fixture(scope="module")
def fitted(graph, sample):
    """``(model, losses, NLL before, NLL after)``."""
    data = sample[1]
    scm = _model(graph, data)
    with torch.no_grad():
        before = -scm.log_prob(data).mean().item()
    losses = fit_parent_scm(scm, data, **FIT)
    scm.eval()
    with torch.no_grad():
        after = -scm.log_prob(data).mean().item()
    return scm, losses, before, after


# ---------------------------------------------------------------------- the graph


def test_graph_order_relations_and_round_trip(phantom):
    g = CausalGraph.from_config(phantom.graph, phantom.variables)
    assert g.order == ("age", "sex", "heart_area", "left_lung_area", "right_lung_area")
    assert g.descendants("age") == {"heart_area", "left_lung_area", "right_lung_area"}
    assert g.ancestors("left_lung_area") == {"age", "sex", "heart_area"}
    assert g.ancestors("age") == set() and g.descendants("left_lung_area") == set()
    assert CausalGraph(**g.to_dict()) == g
    # Roots may be left out of a datalist's graph; pixel-area variables are not used.
    short = CausalGraph.from_config({"heart_area": ["age", "sex"]}, phantom.variables)
    assert short.parents == {"heart_area": ("age", "sex"), "age": (), "sex": ()}
    assert short.kinds["sex"] == "binary"


def test_graph_refuses_cycles_unknown_parents_and_kinds():
    kinds = {"a": "continuous", "b": "continuous", "c": "continuous"}
    with pytest.raises(InputError, match="cycle: .*a.*b"):
        CausalGraph({"a": ("c",), "b": ("a",), "c": ("b",)}, kinds)
    with pytest.raises(InputError, match="'zz'"):
        CausalGraph({"a": ("zz",), "b": (), "c": ()}, kinds)
    with pytest.raises(InputError, match="'b'.*'categorical'"):
        CausalGraph({"a": (), "b": (), "c": ()}, {**kinds, "b": "categorical"})
    with pytest.raises(InputError, match="'c'.*no description"):
        CausalGraph.from_config({"a": ["c"]}, {"a": {"kind": "continuous"}})


# ---------------------------------------------------------------------- fitting


def test_fitting_reduces_the_nll(fitted):
    _, losses, before, after = fitted
    assert len(losses) == FIT["steps"] and all(math.isfinite(x) for x in losses)
    assert after < before - 5.0, (before, after)


def test_fitting_is_deterministic_given_the_seed(graph, sample):
    curves = [fit_parent_scm(_model(graph, sample[1]), sample[1], steps=3, batch_size=64, seed=7) for _ in range(2)]
    assert curves[0] == curves[1]


# ---------------------------------------------------------------------- counterfactuals


def test_null_intervention_returns_the_factual_parents_exactly(fitted, sample):
    scm, data = fitted[0], sample[1]
    with torch.no_grad():
        cf = scm.counterfactual(data, {})
    assert set(cf) == set(data)
    for name, value in data.items():
        assert cf[name].dtype == value.dtype and torch.equal(cf[name], value), name


def test_abduction_inverts_the_mechanisms(fitted, sample):
    """Recomputing every descendant from its noise with unchanged parents gives the data back."""
    scm, data = fitted[0], sample[1]
    with torch.no_grad():
        cf = scm.predict(scm.abduct(data), data, {"age": data["age"]})
    for name in ("heart_area", "left_lung_area"):
        torch.testing.assert_close(cf[name], data[name], rtol=1e-4, atol=0.0)


def test_intervening_on_a_root_changes_only_its_descendants(fitted, sample):
    scm, data = fitted[0], sample[1]
    with torch.no_grad():
        cf = scm.counterfactual(data, {"age": 80.0})
    assert torch.equal(cf["age"], torch.full_like(data["age"], 80.0))
    for name in ("sex", "right_lung_area"):
        assert torch.equal(cf[name], data[name]), name
    moved = data["age"] < 75
    for name in ("heart_area", "left_lung_area"):
        assert (cf[name][moved] != data[name][moved]).all(), name


def test_intervening_on_a_child_leaves_its_ancestors_bit_identical(fitted, sample):
    scm, data = fitted[0], sample[1]
    with torch.no_grad():
        cf = scm.counterfactual(data, {"left_lung_area": data["left_lung_area"] * 0.9})
    for name in ("age", "sex", "heart_area", "right_lung_area"):
        assert torch.equal(cf[name], data[name]), name
    torch.testing.assert_close(cf["left_lung_area"], data["left_lung_area"] * 0.9)


def test_learned_age_effect_points_the_way_of_the_true_mechanism(fitted, sample, phantom):
    """do(age = 80) vs do(age = 25): the heart grows as in the phantom, by a similar amount."""
    scm, (noises, data) = fitted[0], sample
    with torch.no_grad():
        old, young = (scm.counterfactual(data, {"age": a})["heart_area"] for a in (80.0, 25.0))
    learned = (old - young).mean().item()
    true = np.mean(
        [phantom.parents_from_noise(n, {"age": 80.0})["heart_area"] - phantom.parents_from_noise(n, {"age": 25.0})["heart_area"]
         for n in noises]
    )
    assert true > 0 and learned > 0
    assert 0.5 < learned / true < 2.0, (learned, true)


def test_binary_descendant_keeps_its_value_when_its_parents_do_not_change():
    """The midpoint noise of a binary variable reproduces it through its mechanism."""
    graph = CausalGraph({"age": (), "smoker": ("age",)}, {"age": "continuous", "smoker": "binary"})
    torch.manual_seed(0)
    scm = ParentSCM(graph, {"age": (50.0, 15.0)}, **MODEL)
    pa = {"age": torch.tensor([30.0, 50.0, 70.0, 40.0]), "smoker": torch.tensor([0.0, 1.0, 1.0, 0.0])}
    with torch.no_grad():
        noise = scm.abduct(pa)
        cf = scm.predict(noise, pa, {"age": pa["age"]})
    assert ((noise["smoker"] > 0) & (noise["smoker"] < 1)).all()
    assert torch.equal(cf["smoker"], pa["smoker"])


def test_sampling_is_reproducible_and_in_range(fitted):
    scm = fitted[0]
    a, b = (scm.sample(200, torch.Generator().manual_seed(3)) for _ in range(2))
    for name in a:
        assert a[name].shape == (200,) and torch.equal(a[name], b[name]), name
    assert set(a["sex"].unique().tolist()) <= {0.0, 1.0}
    assert all((a[name] > 0).all() for name in LOG_VARS)


def test_state_dict_round_trip_gives_identical_outputs(fitted, graph, sample):
    scm, data = fitted[0], sample[1]
    twin = _model(graph, {name: v * 2 for name, v in data.items()}, seed=123)  # other stats and weights
    twin.load_state_dict(scm.state_dict())
    twin.eval()
    with torch.no_grad():
        assert torch.equal(twin.log_prob(data), scm.log_prob(data))
        do = {"age": 70.0}
        mine, theirs = scm.counterfactual(data, do), twin.counterfactual(data, do)
    for name in mine:
        assert torch.equal(mine[name], theirs[name]), name
    other = CausalGraph({**graph.parents, "right_lung_area": ("age",)}, graph.kinds)
    with pytest.raises(InputError, match="state dict"):
        ParentSCM(other, parent_stats(data, LOG_VARS), log_vars=LOG_VARS, **MODEL).load_state_dict(scm.state_dict())


def test_bad_parent_inputs_name_the_variable(fitted, sample):
    scm, data = fitted[0], sample[1]
    missing = {k: v for k, v in data.items() if k != "heart_area"}
    with pytest.raises(InputError, match="heart_area"):
        scm.log_prob(missing)
    nan = {**data, "left_lung_area": data["left_lung_area"].clone()}
    nan["left_lung_area"][3] = float("nan")
    with pytest.raises(InputError, match="left_lung_area.*non-finite"):
        scm.abduct(nan)
    with pytest.raises(InputError, match="'sex'.*0 or 1"):
        scm.counterfactual(data, {"sex": 0.5})
    with pytest.raises(InputError, match="'weight'"):
        scm.counterfactual(data, {"weight": 70.0})


# ---------------------------------------------------------------------- interventions


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("heart_area=12000", Intervention("heart_area", "set", 12000.0)),
        (" heart_area = *0.8 ", Intervention("heart_area", "scale", 0.8)),
        ("heart_area=+15%", Intervention("heart_area", "percent", 15.0)),
        ("heart_area = - 10 %", Intervention("heart_area", "percent", -10.0)),
        ("heart_area=+500", Intervention("heart_area", "shift", 500.0)),
        ("heart_area=-5e2", Intervention("heart_area", "shift", -500.0)),
        ("sex=1", Intervention("sex", "set", 1.0)),
    ],
)
def test_parse_do_forms(spec, expected):
    assert parse_do(spec) == expected


def test_relative_specs_resolve_to_the_right_numbers():
    pa = {"heart_area": torch.tensor([10000.0, 12000.0], dtype=torch.float64), "sex": torch.tensor([0.0, 1.0])}
    support = {"heart_area": (5000.0, 17000.0), "sex": (0.0, 1.0)}
    kinds = {"heart_area": "continuous", "sex": "binary"}
    cases = {
        "heart_area=*0.8": [8000.0, 9600.0],
        "heart_area=+15%": [11500.0, 13800.0],
        "heart_area=-10%": [9000.0, 10800.0],
        "heart_area=+500": [10500.0, 12500.0],
        "heart_area=-500": [9500.0, 11500.0],
        "heart_area=12000": [12000.0, 12000.0],
    }
    for spec, want in cases.items():
        got = resolve([parse_do(spec)], pa, support, kinds)["heart_area"]
        torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), msg=spec)
    both = resolve([parse_do("sex=1"), parse_do("heart_area=*1.1")], pa, support, kinds)
    assert torch.equal(both["sex"], torch.ones(2))


def test_bad_specs_raise_input_errors_that_name_the_problem():
    pa = {"heart_area": torch.tensor([10000.0, 16000.0]), "sex": torch.tensor([0.0, 1.0])}
    support = {"heart_area": (5000.0, 17000.0), "sex": (0.0, 1.0)}
    kinds = {"heart_area": "continuous", "sex": "binary"}
    with pytest.raises(InputError, match="'lung_area'.*heart_area"):
        resolve([parse_do("lung_area=*0.8")], pa, support, kinds)
    with pytest.raises(InputError, match="'heart_area'.*finite"):
        parse_do("heart_area=nan")
    with pytest.raises(InputError, match="'heart_area'.*finite"):
        parse_do("heart_area=-inf")
    with pytest.raises(InputError, match=r"'heart_area'.*18400.*\[5000, 17000\]"):
        resolve([parse_do("heart_area=+15%")], pa, support, kinds)
    for spec in ("heart_area", "heart_area=abc", "heart_area=*0.8%", "heart_area=15%", "=5", "heart area=5"):
        with pytest.raises(InputError, match="accepted forms") as err:
            parse_do(spec)
        assert repr(spec) in str(err.value)
    with pytest.raises(InputError, match="'sex' is binary"):
        resolve([parse_do("sex=0.5")], pa, support, kinds)
    with pytest.raises(InputError, match="'sex' is binary"):
        resolve([parse_do("sex=+1")], pa, support, kinds)
    with pytest.raises(InputError, match="'heart_area' is intervened on twice"):
        resolve([parse_do("heart_area=*0.9"), parse_do("heart_area=+1%")], pa, support, kinds)


def test_support_from_data_widens_the_range_and_stays_non_negative():
    data = {"area": torch.tensor([100.0, 300.0]), "shift": torch.tensor([-10.0, 10.0]), "sex": torch.tensor([0.0, 1.0])}
    kinds = {"area": "continuous", "shift": "continuous", "sex": "binary"}
    support = support_from_data(data, kinds, margin=0.25)
    assert support == {"area": (50.0, 350.0), "shift": (-15.0, 15.0), "sex": (0.0, 1.0)}
    assert support_from_data(data, kinds, margin=1.0)["area"] == (0.0, 500.0)
