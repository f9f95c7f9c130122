#!/usr/bin/env bash
# One prepared GPU check (one H200, nothing downloadable there, ~9 minutes in all). From the repository root:
#   bash bench/gpu_check.sh
# Uses the image's python3 (no venv, no downloads). Steps, in order, each under `timeout` within one
# time budget (GPU_CHECK_BUDGET_S, default 520 s), each recorded, so one failure hides nothing:
#   0. the machine: nvidia-smi, python / torch / triton / nvcc / cmake versions
#   1. build: pip install . with PERCEPTUAL_FAST_CUDA=ON and PERCEPTUAL_FAST_WERROR=ON; if that fails, the
#      log's tail is printed, then: CUDA without WERROR (only when warnings were turned into errors),
#      else CPU-only (triton-only checks), else the sources on PYTHONPATH (no _C at all)
#   2. pytest of the fused op's tests (tests/ops/fused_distance: triton and cuda run there on the GPU)
#   3. bench/gpu_check.py --section correctness   (triton and cuda against float64)
#   4. bench/gpu_check.py --section timings       (torch vs triton vs cuda, bf16, ~3 minutes at most)
#   5. bench/gpu_check.py --section summary       (the steps and every failure)
# The exit status is nonzero if any step or check failed. Results in $OUT (bench/results when OUT is
# unset): gpu_check.json, gpu_check.csv, gpu_check.log (everything printed), pytest.log, build.log.
#
# Without a GPU: GPU_CHECK_DRY_RUN=1 runs gpu_check.py with --cpu-dry-run (TRITON_INTERPRET=1, cpp in
# place of cuda, tiny shapes) and skips the build, using the installed package, unless
# GPU_CHECK_PIP_TARGET=DIR names a folder to build into (pip --target; the installed package is left alone).
set -uo pipefail

cd "$(dirname "$0")/.." || exit 2
OUT_DIR=${OUT:-$PWD/bench/results}
mkdir -p "$OUT_DIR" || exit 2
PY=${PYTHON:-python3}
BUDGET_S=${GPU_CHECK_BUDGET_S:-520}
DRY=${GPU_CHECK_DRY_RUN:-0}
PIP_TARGET_DIR=${GPU_CHECK_PIP_TARGET:-}
BUILD_LOG=$OUT_DIR/build.log
PYTEST_LOG=$OUT_DIR/pytest.log
STEPS_FILE=$(mktemp /tmp/gpu_check_steps.XXXXXX)
START=$(date +%s)
DEADLINE=$((START + BUDGET_S))
[[ $DRY == 1 ]] || unset TRITON_INTERPRET # on the GPU, Triton compiles for real
export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}

# Seconds a step must leave for the ones after it (their useful minimum, plus timeout's kill grace).
MIN_PYTEST=60 MIN_CORRECTNESS=120 MIN_TIMINGS=60 MIN_SUMMARY=30

remaining() { echo $((DEADLINE - $(date +%s))); }

# record NAME STATUS RC SECONDS: one line of the steps file the summary reads.
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$STEPS_FILE"; }

# run_step NAME CAP RESERVE LOG CMD...: runs CMD (stdin /dev/null; output to LOG, or to the console when
# LOG is -) under `timeout`, for at most CAP seconds and never into the last RESERVE seconds of the
# budget; exports GPU_CHECK_STEP_LIMIT_S (the limit) to it; records ok / FAILED / TIMEOUT / skipped.
run_step() {
  local name=$1 cap=$2 reserve=$3 log=$4 left limit rc t0 status
  shift 4
  left=$(($(remaining) - reserve))
  limit=$((cap < left ? cap : left))
  if ((limit < 20)); then
    echo "=== $name: skipped, $(remaining) s left of the budget"
    record "$name" skipped - 0
    return 125
  fi
  echo "=== $name (timeout ${limit} s; $(remaining) s left of the budget) ==="
  t0=$(date +%s)
  if [[ $log == - ]]; then
    GPU_CHECK_STEP_LIMIT_S=$limit timeout --kill-after=10 "$limit" "$@" </dev/null
  else
    GPU_CHECK_STEP_LIMIT_S=$limit timeout --kill-after=10 "$limit" "$@" </dev/null >>"$log" 2>&1
  fi
  rc=$?
  status=ok
  if ((rc == 124 || rc == 137)); then status=TIMEOUT; elif ((rc != 0)); then status=FAILED; fi
  record "$name" "$status" "$rc" "$(($(date +%s) - t0))"
  echo "=== $name: $status (exit $rc, $(($(date +%s) - t0)) s)"
  return "$rc"
}

machine() {
  echo "=== machine ($(date -u +%FT%TZ)); budget ${BUDGET_S} s; results in $OUT_DIR"
  timeout 30 nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || echo "(no nvidia-smi)"
  timeout 30 nvidia-smi || true
  echo "cpus: $(nproc); $(command -v "$PY") is $("$PY" --version 2>&1)"
  timeout 60 "$PY" -c '
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(),
      "devices", torch.cuda.device_count(), *(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())))
try:
    import triton
    print("triton", triton.__version__)
except Exception as err:
    print("triton: not importable:", err)
' || echo "(python3 cannot import torch)"
  timeout 30 nvcc --version 2>&1 | tail -n 2 || echo "(no nvcc)"
  timeout 30 cmake --version 2>&1 | head -n 1 || echo "(no cmake)"
  timeout 30 "$PY" -m pip --version || true
  timeout 60 "$PY" -m pip list 2>/dev/null | grep -iE '^(torch|triton|pybind11|scikit.build.core|cmake|ninja|numpy|pytest|pytest.timeout) ' || true
}

# pip_install STEP CAP CUDA WERROR: one build attempt, installed into the image's python3 (or
# GPU_CHECK_PIP_TARGET); --force-reinstall so a warm machine's earlier install is replaced.
pip_install() {
  local step=$1 cap=$2 cuda=$3 werror=$4 target=()
  [[ -n $PIP_TARGET_DIR ]] && target=(--target "$PIP_TARGET_DIR" --upgrade "-Cbuild-dir=$PIP_TARGET_DIR.build")
  echo "##### $step: PERCEPTUAL_FAST_CUDA=$cuda PERCEPTUAL_FAST_WERROR=$werror" >>"$BUILD_LOG"
  run_step "$step" "$cap" $((MIN_PYTEST + MIN_CORRECTNESS + MIN_TIMINGS + MIN_SUMMARY)) "$BUILD_LOG" \
    "$PY" -m pip install -v --no-build-isolation --no-deps --no-index --force-reinstall "${target[@]}" \
    "-Ccmake.define.PERCEPTUAL_FAST_CUDA=$cuda" "-Ccmake.define.PERCEPTUAL_FAST_WERROR=$werror" .
  local rc=$?
  if ((rc != 0)); then
    echo "--- last 40 lines of build.log ---"
    tail -n 40 "$BUILD_LOG"
    echo "---"
  fi
  return "$rc"
}

# The sources laid out as the wheel lays them (kernels/ as perceptual_fast/kernels), on PYTHONPATH:
# the triton backend runs, the compiled _C is missing.
source_overlay() {
  local dir=/tmp/gpu_check_overlay
  rm -rf "$dir" && mkdir -p "$dir" && cp -r perceptual_fast "$dir/" && cp -r kernels "$dir/perceptual_fast/kernels" &&
    export PYTHONPATH=$dir${PYTHONPATH:+:$PYTHONPATH}
}

build() {
  : >"$BUILD_LOG"
  if [[ $DRY == 1 && -z $PIP_TARGET_DIR ]]; then
    echo "=== build: skipped (dry run; the installed package is used)"
    record build info - 0
    return 0
  fi
  [[ -n $PIP_TARGET_DIR ]] && export PYTHONPATH=$PIP_TARGET_DIR${PYTHONPATH:+:$PYTHONPATH}
  pip_install build_cuda_werror 300 ON ON && return 0
  local last_rc=$?
  # Warnings turned into errors (gcc's [-Werror=...], nvcc's "error #NNN-D") and time to spare: CUDA without WERROR.
  if ((last_rc != 124 && last_rc != 137)) && grep -qE '\[-Werror|error #[0-9]+-D|treated as (an )?error' "$BUILD_LOG"; then
    pip_install build_cuda 240 ON OFF && return 0
  fi
  pip_install build_cpu_only 150 OFF OFF && return 0
  echo "=== every build failed: the sources go on PYTHONPATH (triton only, no compiled extension)"
  source_overlay
  record source_overlay info - 0
}

main() {
  rm -f "$OUT_DIR"/gpu_check.json "$OUT_DIR"/gpu_check.csv "$PYTEST_LOG" "$BUILD_LOG"
  machine
  build
  local pyflags=() dry_flag=() tests=() pytest_args=()
  "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' && pyflags=(-P) # never import ./perceptual_fast (no _C there)
  [[ $DRY == 1 ]] && dry_flag=(--cpu-dry-run)
  timeout 60 "$PY" "${pyflags[@]}" -c 'import perceptual_fast as p, importlib.util as u
try:
    from perceptual_fast import _C
    ext = f"_C has_cuda={_C.has_cuda}"
except ImportError as err:
    ext = f"no _C ({err})"
print("perceptual_fast from", p.__file__, ext, "kernels:", u.find_spec("perceptual_fast.kernels") is not None)' ||
    echo "(perceptual_fast does not import)"

  # the fused op's tests, every backend present (the ahead-of-time compile check is for CPU machines)
  tests=(tests/ops/fused_distance --ignore=tests/ops/fused_distance/test_triton_compile.py)
  # (a file that cannot be collected, e.g. one importing a missing _C, must not stop the others)
  pytest_args=(-q -p no:cacheprovider --continue-on-collection-errors "${tests[@]}")
  "$PY" -c 'import pytest_timeout' 2>/dev/null && pytest_args+=(--timeout=120)
  run_step pytest 150 $((MIN_CORRECTNESS + MIN_TIMINGS + MIN_SUMMARY)) "$PYTEST_LOG" "$PY" "${pyflags[@]}" -m pytest "${pytest_args[@]}"
  echo "--- last 40 lines of pytest.log ---"
  tail -n 40 "$PYTEST_LOG" 2>/dev/null
  echo "---"

  run_step correctness 260 $((MIN_TIMINGS + MIN_SUMMARY)) - \
    "$PY" "${pyflags[@]}" bench/gpu_check.py --section correctness --out "$OUT_DIR" "${dry_flag[@]}"
  run_step timings 200 "$MIN_SUMMARY" - \
    "$PY" "${pyflags[@]}" bench/gpu_check.py --section timings --out "$OUT_DIR" "${dry_flag[@]}"

  echo "=== total $(($(date +%s) - START)) s"
  timeout 60 "$PY" "${pyflags[@]}" bench/gpu_check.py --section summary --out "$OUT_DIR" --steps-file "$STEPS_FILE"
  local rc=$?
  if ((rc == 3)); then # failures, listed above
    rc=1
  elif ((rc != 0)); then # the summary itself failed: the steps as they are
    echo "(the summary failed, exit $rc) steps: name, status, exit status, seconds"
    cat "$STEPS_FILE"
    rc=1
  fi
  rm -f "$STEPS_FILE"
  return "$rc"
}

main "$@" 2>&1 | tee "$OUT_DIR/gpu_check.log"
exit "${PIPESTATUS[0]}"
