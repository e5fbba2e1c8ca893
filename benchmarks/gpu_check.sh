#!/usr/bin/env bash
# The GPU check (<= 8 minutes on one H100/H200): training samples/s, peak memory and estimated MFU for
# ofa_base and ofa_large at 480 px in bf16, and caption generation throughput. Run from the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
timeout 150 "$PY" benchmarks/gpu_train.py --arch ofa_base --size 480 --batch 32 --steps 10
timeout 150 "$PY" benchmarks/gpu_train.py --arch ofa_large --size 480 --batch 16 --steps 10
timeout 60 "$PY" benchmarks/gpu_train.py --arch ofa_base --size 480 --batch 32 --generate
timeout 60 "$PY" benchmarks/gpu_train.py --arch ofa_large --size 480 --batch 16 --generate
