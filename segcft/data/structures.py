"""Label indices of the structures of each modality, and their standard partitions."""

from __future__ import annotations

from segcft.measure import RegionSpec

#: Chest radiograph label map. Left and right are the patient's: the left lung is on the
#: image's right on a PA view.
CXR_STRUCTURES: dict[str, int] = {"left_lung": 1, "right_lung": 2, "heart": 3}

#: Coronary cross-section label map.
CCTA_STRUCTURES: dict[str, int] = {
    "lumen": 1,
    "vessel_wall": 2,
    "calcified_plaque": 3,
    "noncalcified_plaque": 4,
}

#: Upper, middle and lower zones of each lung along the cranio-caudal axis (image rows).
CXR_REGIONS: list[RegionSpec] = [
    RegionSpec("left_lung", "bands", ("upper", "middle", "lower"), axis=0),
    RegionSpec("right_lung", "bands", ("upper", "middle", "lower"), axis=0),
]

#: Four quadrant sectors of each plaque class around the lumen centre, centred on the
#: 12, 9, 6 and 3 o'clock directions (counter-clockwise from 45 degrees).
CCTA_REGIONS: list[RegionSpec] = [
    RegionSpec(p, "sectors", ("q1", "q2", "q3", "q4"), centre_of="lumen", offset_deg=45.0)
    for p in ("calcified_plaque", "noncalcified_plaque")
]
