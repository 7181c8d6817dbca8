#!/usr/bin/env bash
# The GPU check of issue 19 in one command, from the project root:
#
#     bash benchmarks/gpu_check.sh            # on a GPU host: benchmarks/GPU.md and GPU.json
#     bash benchmarks/gpu_check.sh --quick    # tiny sizes; runs on a CPU too (about a minute)
#
# Any other arguments (--out PATH, relative to the project root; --repeats N) go to
# benchmarks/gpu.py, which measures PGD-40 with XLA on vs off on the MNIST-8k CNN and the
# ResNet, mixed precision on vs off, native vs CleverHans vs ART, the tf.distribute path on
# the GPU (identical outcomes, its overhead), and one epoch of PGD-AT,
# and judges the targets (native PGD >= 3x faster than CleverHans on the small CNN, >= 1.5x
# on the ResNet); see its docstring.
#
# What it does, in order:
#   1. Python: $VENV/bin/python (VENV defaults to .venv, as in the Makefile) when it imports
#      robustlab and TensorFlow; otherwise it bootstraps the venv as the Makefile does
#      (`make .venv/.installed-stamp`: python3 -m venv, pip install -e ".[dev]").
#   2. Prints `nvidia-smi` when there is one.
#   3. Asks TensorFlow for its GPUs. When `nvidia-smi` works but TensorFlow sees no GPU (the
#      venv holds the CPU build), it says so; with ROBUSTLAB_GPU_CHECK_INSTALL=1 it installs
#      tensorflow[and-cuda]==<the venv's TensorFlow version> into the venv (needs PyPI) and
#      asks again (never without being asked: it changes the venv).
#   4. Fails (exit 3) when TensorFlow still sees no GPU, before any heavy work, unless --quick
#      is given or ROBUSTLAB_GPU_CHECK_ALLOW_CPU=1 is set (then it runs on the CPU and the
#      results say the targets were not judged).
#   5. Runs benchmarks/gpu.py: the full check on a GPU under `timeout 300` (5 minutes;
#      an estimate for an H200-class GPU, not yet measured: about 2), --quick under `timeout 900`, the full sizes
#      on a CPU (allowed as above: tens of minutes) under `timeout 3600`; prints where the
#      results went.
#
# Exit status: 0 done (targets met, or not judged), 3 no GPU, 4 a target failed (results
# written), 124 the time limit ran out, anything else an error of the run (1: an exception,
# 2: a bad argument).
#
# Where it can run: a GPU host with an NVIDIA driver where `pip install tensorflow[and-cuda]`
# works (PyPI reachable), or an image prepared with TensorFlow for CUDA. The GPU machine lent
# to this project has no TensorFlow installed and cannot reach PyPI, so the check cannot run
# there as it is.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

quick=0
out=benchmarks/GPU.md
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    --quick) quick=1 ;;
    --out) out="${args[i + 1]:-$out}" ;;
    --out=*) out="${args[i]#--out=}" ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
      exit 0 ;;
  esac
done

say() { echo "gpu_check: $*"; }

VENV="${VENV:-.venv}"
PY="$VENV/bin/python"

# the number of GPUs TensorFlow sees; prints nothing when robustlab or TensorFlow is missing
gpu_count() {
  [ -x "$PY" ] || return 0
  TF_CPP_MIN_LOG_LEVEL=3 "$PY" -c "import robustlab, tensorflow as tf
print(len(tf.config.list_physical_devices('GPU')))" 2>/dev/null | tail -n 1 || true
}

gpus="$(gpu_count)"
if [ -z "$gpus" ]; then
  say "no usable $VENV (robustlab and TensorFlow): bootstrapping it as the Makefile does"
  if command -v make >/dev/null 2>&1; then
    make "$VENV/.installed-stamp" VENV="$VENV"
  else
    "${PYTHON:-python3}" -m venv "$VENV"
    "$PY" -m pip install --quiet --upgrade pip
    "$PY" -m pip install --quiet -e ".[dev]"
    touch "$VENV/.installed-stamp"
  fi
  gpus="$(gpu_count)"
  if [ -z "$gpus" ]; then
    say "FAILED: $PY cannot import robustlab and TensorFlow" >&2
    exit 1
  fi
fi

have_smi=0
if command -v nvidia-smi >/dev/null 2>&1; then
  if nvidia-smi; then have_smi=1; else say "nvidia-smi is there but failed"; fi
else
  say "nvidia-smi not found"
fi

if [ "$gpus" = 0 ] && [ "$have_smi" = 1 ] && [ "${ROBUSTLAB_GPU_CHECK_INSTALL:-0}" != 1 ]; then
  say "nvidia-smi sees a GPU but TensorFlow does not (a CPU build?): rerun with" \
    "ROBUSTLAB_GPU_CHECK_INSTALL=1 to install tensorflow[and-cuda] into $VENV"
elif [ "$gpus" = 0 ] && [ "$have_smi" = 1 ]; then
  tf_version="$("$PY" -c "import importlib.metadata as m; print(m.version('tensorflow'))")"
  say "nvidia-smi sees a GPU but TensorFlow does not: installing" \
    "tensorflow[and-cuda]==$tf_version into $VENV"
  if "$PY" -m pip install --quiet "tensorflow[and-cuda]==$tf_version"; then
    gpus="$(gpu_count)"
    gpus="${gpus:-0}"
  else
    say "installing tensorflow[and-cuda]==$tf_version failed (is PyPI reachable?)"
  fi
fi

if [ "$gpus" = 0 ]; then
  if [ "$quick" = 1 ] || [ "${ROBUSTLAB_GPU_CHECK_ALLOW_CPU:-0}" = 1 ]; then
    say "no GPU visible to TensorFlow: running on the CPU (targets not judged)"
  else
    say "FAILED: no GPU visible to TensorFlow (tf.config.list_physical_devices('GPU') is" \
      "empty). This check needs a GPU and TensorFlow built for CUDA" \
      "(pip install \"tensorflow[and-cuda]\"); use --quick or" \
      "ROBUSTLAB_GPU_CHECK_ALLOW_CPU=1 to run it on the CPU anyway." >&2
    exit 3
  fi
else
  say "TensorFlow sees $gpus GPU(s)"
fi

if [ "$quick" = 1 ]; then limit=900; elif [ "$gpus" = 0 ]; then limit=3600; else limit=300; fi
say "running benchmarks/gpu.py $* (time limit ${limit} s)"
rc=0
timeout "$limit" "$PY" benchmarks/gpu.py "$@" || rc=$?
case "$rc" in
  0) say "done: results in $out and ${out%.md}.json" ;;
  4) say "a target FAILED: results in $out and ${out%.md}.json" ;;
  124) say "FAILED: the run took longer than $limit s" >&2 ;;
  *) say "FAILED: benchmarks/gpu.py exited with $rc" >&2 ;;
esac
exit "$rc"
