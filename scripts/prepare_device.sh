#!/usr/bin/env bash
# Prepares here, where a package index is reachable, what scripts/gpu_check.sh needs on an
# offline CUDA machine that brings its own torch, typer, matplotlib and pytest (the device
# tool's machines: Python 3.12, x86-64, no registry):
#   .whl/     wheels of segcft and of the dependencies such a machine lacks, at the versions
#             installed in $VENV; SimpleITK (CCTA only, 50 MB) and pydicom-data (34 MB) stay behind
#   .device/  a copy of the JSRT folder and of RG1_UNCR.dcm, for that one run; research-use data,
#             ignored by git and never committed
# Both are ignored by git and together stay under the device tool's 64 MiB with the repository.
# Then, on the device, with .whl and .device carried:
#   WHEELS=.whl SEGCFT_JSRT=.device/jsrt SEGCFT_RG1_UNCR=.device/RG1_UNCR.dcm PYTHON=python3 \
#     OUT=$OUT scripts/gpu_check.sh
set -euo pipefail

VENV=${VENV:-.venv}
JSRT=${SEGCFT_JSRT:-../shared/data/jsrt}
WHEELS=.whl
DATA=.device
PY=$VENV/bin/python
# Imported by segcft (or by MONAI for it) and absent from the device image; fire needs termcolor.
PACKAGES=(monai pytorch-ignite pydicom nibabel zuko fire termcolor)

[ -f "$JSRT/cases.csv" ] || { echo "no JSRT folder at $JSRT (set SEGCFT_JSRT)" >&2; exit 2; }
rm -rf "$WHEELS" "$DATA"
mkdir -p "$WHEELS" "$DATA"

pins=()
for name in "${PACKAGES[@]}"; do
  pins+=("$name==$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")")
done
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$WHEELS" "${pins[@]}"
"$PY" -m pip wheel --quiet --no-deps -w "$WHEELS" .

cp -r "$JSRT" "$DATA/jsrt"
"$PY" -c "from pydicom.data import get_testdata_file; import shutil, sys; shutil.copy(get_testdata_file('RG1_UNCR.dcm'), sys.argv[1])" "$DATA/RG1_UNCR.dcm"

echo "prepared: ${pins[*]} segcft; $(du -sh "$WHEELS" | cut -f1) of wheels, $(du -sh "$DATA" | cut -f1) of data"
