"""Structure measurements: hard and soft areas, region partitions and per-region areas."""

from segcft.measure.areas import hard_areas, pixel_area_mm2, soft_areas
from segcft.measure.metrics import AreaErrorMetric
from segcft.measure.regions import (
    RegionSpec,
    angular_sectors,
    axial_bands,
    partition,
    region_areas,
    region_variable_name,
    regional_area_values,
)

__all__ = [
    "AreaErrorMetric",
    "RegionSpec",
    "angular_sectors",
    "axial_bands",
    "hard_areas",
    "partition",
    "pixel_area_mm2",
    "region_areas",
    "region_variable_name",
    "regional_area_values",
    "soft_areas",
]
