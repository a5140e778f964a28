"""Tests of the MONAI Label app (apps/monailabel), run in .venv-monailabel."""
