#!/usr/bin/env bash
# One prepared GPU check: build with CUDA, check every GPU backend against the float64
# reference, time them. Run from the repository root on a CUDA machine:
#   bash bench/gpu_check.sh            (writes gpu_check.{csv,json} to $OUT or bench/results)
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -m venv /tmp/pf-gpu && . /tmp/pf-gpu/bin/activate
pip install --quiet "torch==2.14.1" pybind11 scikit-build-core numpy safetensors pillow 2>&1 | grep -v "^WARNING" || true
pip install --quiet --no-build-isolation -Ccmake.define.PERCEPTUAL_FAST_CUDA=ON -Ccmake.define.PERCEPTUAL_FAST_WERROR=ON . 2>&1 | tail -3
python -P -c "import perceptual_fast._C as C; assert C.has_cuda, 'built without CUDA'; print('built with CUDA')"
python -P bench/gpu_check.py
