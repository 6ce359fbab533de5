#!/usr/bin/env bash
# Prepares what scripts/gpu_check.sh carries to a lent GPU machine (run HERE, where PyPI is reachable):
#   .whl/        the Python packages splatseg needs that the device image lacks, as Python 3.12 wheels
#                (the image has torch, numpy, scipy, scikit-image, numba, ninja, rich, jaxtyping,
#                transformers, timm, pytest, PyYAML, pillow, tqdm: see /work/.library/device/KINDS.md)
#   .gpu_data/   a copy of the maryrose scene (the shared data folder does not travel)
# Both folders are git-ignored. Then call the device tool with carry [".whl", ".gpu_data"] (gpu_check.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
WHEELS=(
  gsplat==1.5.3 tyro==1.0.17 docstring-parser==0.18.0 typeguard==4.6.1
  viser==1.1.1 msgspec==0.23.0 websockets==16.1.1 zstandard==0.25.0 trimesh==5.2.0
  plyfile==1.1.5 gsply==0.4.6 segment-anything==1.0 open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4
)
mkdir -p .whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}"
mkdir -p .gpu_data
rm -rf .gpu_data/maryrose && cp -r "${MARYROSE:-/work/shared/data/maryrose}" .gpu_data/maryrose
du -sh .whl .gpu_data
