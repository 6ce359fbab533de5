#!/usr/bin/env bash
# The GPU path, checked on a lent GPU machine (an H200 through the device tool) in two calls.
# UNTESTED ON A GPU so far: written and dry-run on a CPU machine only (see README, "GPU path").
#
# Here, once:   bash scripts/gpu_wheels.sh            # .whl/ (wheels for Python 3.12) and .gpu_data/maryrose
# Device call 1 (carry [".whl", ".gpu_data"]):  bash scripts/gpu_check.sh build
#               installs the wheels into /tmp/site and builds gsplat's CUDA code (MAX_JOBS=16);
#               a few minutes, its own call so the checks' 8 minutes are the checks'
# Device call 2, at once (the machine stays warm ~30 s; carry the same):  bash scripts/gpu_check.sh check
#               within 8 minutes: the CUDA tests, recon --preset gpu on maryrose (short schedule),
#               train --preset gpu on those splats, bench_render GPU rows, bench_query click rows,
#               one bench_scale row on cuda; then one table. Logs and the table go to $OUT.
# Anywhere:     bash scripts/gpu_check.sh check --dry-run    # prints the commands, runs nothing
# CPU-safe parts by hand: SKIP_WHEELS=1 PYTHON=.venv/bin/python ONLY=cuda-tests,bench-query bash scripts/gpu_check.sh check
#               (ONLY: comma-separated step names; SKIP_WHEELS=1 uses the packages already installed)
#
# Each step has its own time limit (the second field of each STEPS entry, 450 s in all; train-gpu includes the weights-free segments of the 69 maryrose photos) and a failed or timed-out
# step is reported in the table, never stops the others. Exit status: 0 when every step passed.
set -uo pipefail
cd "$(dirname "$0")/.."

MODE=${1:-check}
DRY=0
[ "${2:-}" = "--dry-run" ] || [ "${1:-}" = "--dry-run" ] && DRY=1
[ "${1:-}" = "--dry-run" ] && MODE=check
OUT=${OUT:-/tmp/gpu_check_out}
WORK=${WORK:-/tmp/gpu_check_work}
SITE=/tmp/site
export MAX_JOBS=16 TORCH_EXTENSIONS_DIR=/tmp/torch_ext PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
SCENE=${SCENE:-.gpu_data/maryrose}
rm -rf "$WORK/recon" "$WORK/run"; mkdir -p "$OUT" "$WORK"

install_wheels() {
  if [ "${SKIP_WHEELS:-0}" != 1 ] && [ ! -d "$SITE/gsplat" ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl || return 1
  fi
}

if [ "$MODE" = "build" ]; then
  if [ $DRY = 1 ]; then echo "pip install .whl/*.whl --target $SITE; build gsplat (MAX_JOBS=$MAX_JOBS)"; exit 0; fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  install_wheels || { echo "wheel install failed"; exit 1; }
  t=$(date +%s)
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))
from gsplat.cuda._backend import _C
assert _C is not None, 'gsplat CUDA build failed'
print('gsplat CUDA extension ready')" 2>&1 | tee "$OUT/build.log"
  rc=${PIPESTATUS[0]}
  echo "build: rc=$rc in $(( $(date +%s) - t )) s"
  exit $rc
fi

[ "$MODE" = "check" ] || { echo "usage: gpu_check.sh build|check [--dry-run]"; exit 2; }

# name | limit (s) | command | a grep pattern for the figure shown in the table
STEPS=(
  "cuda-tests|90|$PY -m pytest -q -p no:cacheprovider -rs tests/test_render.py tests/test_mesh.py tests/test_train.py -k 'cuda or gsplat or raster' >$WORK/tests.txt 2>&1; rc=\$?; cat $WORK/tests.txt; if grep -q skipped $WORK/tests.txt; then echo 'a CUDA test skipped on the GPU machine'; exit 3; fi; exit \$rc|passed|failed|error|skipped"
  "recon-gpu|80|$PY -m splatseg.cli recon --preset gpu --data $SCENE --out $WORK/recon --steps 3000 --no-progress|psnr|PSNR|splats written"
  "train-gpu|120|$PY -m splatseg.cli train --preset gpu --data $SCENE --splats $WORK/recon --segments $WORK/segments --out $WORK/run --steps 1500 --overwrite --no-progress|run written"
  "bench-render|50|$PY scripts/bench_render.py --ns 100000 1000000 --resolutions 512 --channels 16 --reps 3 --timeout 60 --no-target|gsplat|cuda"
  "bench-query|20|$PY scripts/bench_query.py --sizes 1000000 3000000 --no-train|^ *[0-9]{6,}"
  "bench-scale|100|$PY scripts/bench_scale.py --device cuda --threads 16 --sizes 100000 --views 12 --resolution 512|^\\| [0-9]"
)

if [ $DRY = 1 ]; then
  for s in "${STEPS[@]}"; do IFS='|' read -r name limit cmd _ <<<"$s"; echo "[$name, ${limit}s] $cmd"; done
  exit 0
fi

install_wheels || { echo "wheel install failed (run build first)"; exit 1; }
printf '%s\n' "| step | status | seconds | figure |" "|---|---|---|---|" >"$OUT/table.md"
all_ok=0
for s in "${STEPS[@]}"; do
  IFS='|' read -r name limit cmd pattern <<<"$s"
  if [ -n "${ONLY:-}" ] && [[ ",$ONLY," != *",$name,"* ]]; then continue; fi
  log="$OUT/$name.log"
  t=$(date +%s)
  timeout --kill-after=5 "$limit" bash -c "$cmd" >"$log" 2>&1
  rc=$?
  secs=$(( $(date +%s) - t ))
  case $rc in 0) status=ok ;; 124|137) status="timeout (${limit}s)"; all_ok=1 ;; *) status="FAIL rc=$rc"; all_ok=1 ;; esac
  figure=$(grep -E "$pattern" "$log" | tail -n 2 | tr '\n' ' ' | tr '|' '/' | cut -c1-160)
  echo "| $name | $status | $secs | $figure |" | tee -a "$OUT/table.md"
done
echo
cat "$OUT/table.md"
exit $all_ok
