#!/usr/bin/env bash
# Measure a served vLLM (CPU) engine with the benchmark model on one core, then fit the profile.
#   bash benchmarks/vllm_cpu_profile/run.sh      (about 12 minutes on a quiet 2-core machine)
# Writes results/{steps.csv,meta.json,fit.json,fit.md,fit.png} and flotilla/profiles/data/vllm-cpu-bench.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
make -s vllm
.venv/bin/python -P benchmarks/vllm_cpu_profile/measure.py "$@"
.venv/bin/python -P benchmarks/vllm_cpu_profile/fit.py
