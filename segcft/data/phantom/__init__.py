"""Synthetic phantoms with a known structural causal model: true counterfactuals for evaluation.

``make_phantom("cxr", 128)`` gives chest radiographs (DICOM), ``make_phantom("ccta", 64)``
coronary cross-sections (NIfTI, HU). A datalist written by ``Phantom.write_dataset``
records kind, size and seed, so ``phantom_from_datalist`` re-creates its phantom.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from segcft.data.phantom.base import Phantom
from segcft.data.phantom.ccta import CCTAPhantom
from segcft.data.phantom.cxr import CXRPhantom
from segcft.utils import InputError

PHANTOMS: dict[str, type[Phantom]] = {"cxr": CXRPhantom, "ccta": CCTAPhantom}


def make_phantom(kind: str, size: int) -> Phantom:
    """The phantom of ``kind`` (``"cxr"`` or ``"ccta"``) with ``size`` x ``size`` images."""
    if kind not in PHANTOMS:
        raise InputError(f"unknown phantom kind {kind!r}; known kinds: {sorted(PHANTOMS)}")
    return PHANTOMS[kind](size)


def phantom_from_datalist(dl: Mapping[str, Any]) -> Phantom:
    """Re-create the phantom that wrote the datalist ``dl`` (from its ``"phantom"`` field)."""
    spec = dl.get("phantom")
    if not isinstance(spec, Mapping) or "kind" not in spec or "size" not in spec:
        raise InputError("datalist has no 'phantom' field with 'kind' and 'size'; it was not written by a phantom")
    return make_phantom(spec["kind"], spec["size"])


__all__ = ["PHANTOMS", "CCTAPhantom", "CXRPhantom", "Phantom", "make_phantom", "phantom_from_datalist"]
