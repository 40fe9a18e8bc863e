#!/usr/bin/env bash
# The GPU machine's half of the GPU check (`make gpu-check OUT=DIR` runs it; docs/performance.md): install
# the wheels `make gpu-check-prepare` downloaded into .gpu-wheels/ into a temporary folder, without network,
# and run benchmarks/gpu_check.py with src/ on the path. Needs only python3 with PyTorch.
#   usage: benchmarks/gpu_check.sh OUT_DIR [options of benchmarks/gpu_check.py]
set -euo pipefail
out=${1:?usage: benchmarks/gpu_check.sh OUT_DIR [options of benchmarks/gpu_check.py]}
shift
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
site=$(mktemp -d)
trap 'rm -rf "$site"' EXIT
wheels=("$repo"/.gpu-wheels/*.whl)
if [ -e "${wheels[0]}" ]; then
    "$python" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --target "$site" "${wheels[@]}"
fi
mkdir -p "$out"
PYTHONPATH="$site:$repo/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 \
    "$python" "$repo/benchmarks/gpu_check.py" --out "$out" "$@" 2>&1 | tee "$out/gpu_check.log"
