"""Hard and soft areas and region partitions on hand-made shapes."""

from __future__ import annotations

import math

import pytest
import torch

from segcft.measure import RegionSpec, hard_areas, partition, region_areas, soft_areas
from segcft.measure.regions import centroid


def disc(size: int, radius: float, centre: tuple[float, float] | None = None) -> torch.Tensor:
    r0, c0 = centre or ((size - 1) / 2, (size - 1) / 2)
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return ((rows - r0) ** 2 + (cols - c0) ** 2 <= radius**2).long()


def test_disc_area_matches_pi_r_squared_in_pixels_and_mm2():
    labels = disc(128, 30.0)[None] * 2
    areas = hard_areas(labels, {"lumen": 2}, spacing=(0.1, 0.2))["lumen"]
    assert abs(areas["px"].item() / (math.pi * 30**2) - 1) < 0.01
    assert abs(areas["mm2"].item() / (math.pi * 30**2 * 0.02) - 1) < 0.01


def test_soft_area_of_one_hot_probabilities_equals_hard_area_and_passes_gradients():
    labels = disc(64, 12.0)[None]
    logits = torch.nn.functional.one_hot(labels, 2).permute(0, 3, 1, 2).float().mul(20).requires_grad_()
    probs = logits.softmax(1)
    soft = soft_areas(probs, {"lumen": 1}, spacing=[(0.5, 0.5)])["lumen"]["mm2"]
    hard = hard_areas(labels, {"lumen": 1}, spacing=(0.5, 0.5))["lumen"]["mm2"]
    assert torch.allclose(soft, hard, rtol=1e-3)
    soft.sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_unknown_label_channel_is_refused():
    with pytest.raises(ValueError, match="heart"):
        soft_areas(torch.rand(1, 2, 8, 8), {"heart": 3})


@pytest.mark.parametrize(
    "spec",
    [
        RegionSpec("lung", "bands", ("upper", "middle", "lower"), axis=0),
        RegionSpec("lung", "bands", ("lateral", "medial"), axis=1),
        RegionSpec("lung", "sectors", ("q1", "q2", "q3", "q4"), centre_of="lumen", offset_deg=45.0),
    ],
)
def test_regional_areas_add_up_to_the_structure_area_hard_and_soft(spec):
    g = torch.Generator().manual_seed(0)
    labels = torch.zeros(2, 64, 64, dtype=torch.long)
    labels[:, 10:50, 12:40] = 1
    labels[:, 28:36, 28:36] = 2
    structures = {"lung": 1, "lumen": 2}
    regions = partition(labels, structures, spec)
    assert torch.allclose(regions.sum(1), torch.ones(2, 64, 64))
    hard = region_areas((labels == 1).float(), regions, spec, spacing=(0.7, 0.7))
    total = hard_areas(labels, structures, spacing=(0.7, 0.7))["lung"]["mm2"]
    assert torch.allclose(sum(a["mm2"] for a in hard.values()), total)
    probs = torch.rand(2, 3, 64, 64, generator=g).softmax(1)
    soft = region_areas(probs[:, 1], regions, spec)
    assert torch.allclose(sum(a["px"] for a in soft.values()), probs[:, 1].flatten(1).sum(1), rtol=1e-5)
    assert list(hard) == spec.variable_names()


def test_bands_follow_the_structure_extent():
    labels = torch.zeros(1, 60, 20, dtype=torch.long)
    labels[0, 15:45, 5:15] = 1  # rows 15..44: bands of 10 rows
    spec = RegionSpec("lung", "bands", ("upper", "middle", "lower"))
    areas = region_areas((labels == 1).float(), partition(labels, {"lung": 1}, spec), spec)
    assert [a["px"].item() for a in areas.values()] == [100.0, 100.0, 100.0]


def test_sectors_are_counter_clockwise_from_three_o_clock():
    labels = torch.zeros(1, 41, 41, dtype=torch.long)
    labels[0, 18:23, 18:23] = 2  # lumen centred at (20, 20)
    labels[0, 2:8, 18:23] = 1  # plaque at 12 o'clock
    spec = RegionSpec("plaque", "sectors", ("q1", "q2", "q3", "q4"), centre_of="lumen", offset_deg=45.0)
    areas = region_areas((labels == 1).float(), partition(labels, {"plaque": 1, "lumen": 2}, spec), spec)
    assert areas["plaque_q1_area"]["px"].item() == 30.0 and areas["plaque_q3_area"]["px"].item() == 0.0
    assert torch.allclose(centroid(labels == 2), torch.tensor([[20.0, 20.0]]))


def test_unknown_structure_in_region_spec_is_named():
    with pytest.raises(KeyError, match="spleen"):
        partition(torch.zeros(1, 8, 8, dtype=torch.long), {"lung": 1}, RegionSpec("spleen", "bands", ("a", "b")))
