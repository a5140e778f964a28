"""The MONAI Label tests run in their own environment (``make test-monailabel``, .venv-monailabel).

Elsewhere, without monailabel, they are not collected. With ``SEGCFT_REQUIRE_MONAILABEL=1``
(as ``make test-monailabel`` sets) a missing monailabel stops the run as a failure.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import pytest

REQUIRE_ENV = "SEGCFT_REQUIRE_MONAILABEL"
REQUIRED = os.environ.get(REQUIRE_ENV, "") not in ("", "0")
AVAILABLE = importlib.util.find_spec("monailabel") is not None

if REQUIRED and not AVAILABLE:
    pytest.exit(f"{REQUIRE_ENV} is set but monailabel is not importable by {sys.executable}; run `make monailabel-env`", returncode=1)

collect_ignore_glob = [] if AVAILABLE else ["test_*.py"]
