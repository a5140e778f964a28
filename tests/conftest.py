"""Shared fixtures: the real JSRT folder, the real RG1_UNCR radiograph, a built JSRT datalist."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
JSRT_ENV = "SEGCFT_JSRT"
RG1_ENV = "SEGCFT_RG1_UNCR"


@pytest.fixture(scope="session")
def jsrt_root() -> Path:
    """The JSRT folder: ``$SEGCFT_JSRT`` or ``../shared/data/jsrt`` beside the repository.

    Missing data skips these tests on a developer's machine but fails them in CI.
    """
    root = Path(os.environ.get(JSRT_ENV, REPO.parent / "shared" / "data" / "jsrt"))
    if not (root / "cases.csv").is_file():
        message = f"JSRT data not found at {root} (set {JSRT_ENV})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return root


@pytest.fixture(scope="session")
def jsrt_datalist(jsrt_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from segcft.data.jsrt import build_jsrt_datalist

    return build_jsrt_datalist(jsrt_root, tmp_path_factory.mktemp("jsrt"), seed=0, progress=False)


@pytest.fixture(scope="session")
def jsrt_subset(jsrt_datalist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """34 JSRT cases (24 training, 4 validation, 6 test): chains of every stage at CI size."""
    import json

    from segcft.data.datalist import load_datalist

    dl = load_datalist(jsrt_datalist)  # item paths made absolute, so the subset can live elsewhere
    sizes = {"training": 24, "validation": 4, "test": 6}
    path = tmp_path_factory.mktemp("jsrt_subset") / "datalist.json"
    path.write_text(json.dumps({**dl, **{split: dl[split][:n] for split, n in sizes.items()}}), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def rg1_path() -> Path:
    """``RG1_UNCR.dcm``: a real MONOCHROME1 CR chest radiograph shipped by pydicom-data.

    ``$SEGCFT_RG1_UNCR`` names a copy instead, for machines without pydicom-data's 34 MB
    wheel (the offline device check carries the one file, ``scripts/prepare_device.sh``).
    """
    if os.environ.get(RG1_ENV):
        path = Path(os.environ[RG1_ENV])
        assert path.is_file(), f"{RG1_ENV}={path} is not a file"
        return path
    from pydicom.data import get_testdata_file

    path = get_testdata_file("RG1_UNCR.dcm")
    assert path is not None, "pydicom-data is not installed"
    return Path(path)


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's small models on one thread: on 2 cores, thread contention costs more than it gains."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_python(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``python ARGS`` as a user would, on one thread, decoding its output as UTF-8.

    Progress bars print non-ASCII characters, and CI may run without a UTF-8 locale. The
    timeout only guards against a hang.
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8"}
    proc = subprocess.run(
        [sys.executable, *args], capture_output=True, encoding="utf-8", errors="replace", env=env, timeout=1800
    )
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc
