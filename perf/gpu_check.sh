#!/usr/bin/env bash
# The prepared GPU check: one command on a GPU machine, about 5 minutes, no downloads.
#
#   bash perf/gpu_check.sh [perf/gpu_check.py options]     # e.g. --budget-s 280, --peak-tflops 989,67
#   VLLM_PYTHON=/path/to/vllm-env/bin/python bash perf/gpu_check.sh   # adds the vLLM side
#   bash perf/gpu_check.sh --prepare-site                  # here, once: see below
#
# Prints nvidia-smi, then runs perf/gpu_check.py; figures go to $OUT/gpu_check.json (./ without $OUT).
# Python: $PYTHON when set, else the checkout's .venv/bin/python, else python3 (a GPU image's own
# torch / transformers / peft). The project's src/ is put on PYTHONPATH, and so is outputs/gpu_site
# when present: the pure-Python packages such an image lacks for the project's generation path
# (omegaconf, antlr4), copied there from the project's venv by --prepare-site (outputs/ is ignored
# by git; carry outputs/gpu_site to the GPU machine).
set -u
cd "$(dirname "$0")/.." || exit 1

if [ -n "${PYTHON:-}" ]; then
    PY=$PYTHON
elif [ -x .venv/bin/python ]; then
    PY=.venv/bin/python
else
    PY=python3
fi

if [ "${1:-}" = "--prepare-site" ]; then
    site=outputs/gpu_site
    rm -rf "$site" && mkdir -p "$site" || exit 1
    for mod in omegaconf antlr4; do
        dir=$("$PY" -c "import os, $mod; print(os.path.dirname($mod.__file__))") || exit 1
        cp -r "$dir" "$site/" || exit 1
    done
    find "$site" -name __pycache__ -prune -exec rm -rf {} +
    echo "prepared $site ($(du -sh "$site" | cut -f1)) from $PY"
    exit 0
fi

echo "== nvidia-smi"
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi || echo "nvidia-smi failed (exit $?)"
else
    echo "nvidia-smi: not found (no NVIDIA driver on this machine)"
fi
echo "== python: $PY"

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=offline PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD/src:$PWD/outputs/gpu_site${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" perf/gpu_check.py "$@"
