#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): at most 8 minutes on one H100/H200 with 16 cores; every section prints
# a RESULT or FAILED line beside its same-run baseline. `--cpu-smoke`: every section tiny on the CPU (a few minutes on a loaded 2-core machine).
# Usage: bash benchmarks/gpu_check.sh [--cpu-smoke] [--sections train_step,data_path,gpu_decode,train_fed,scoring,runs,compile]
set -u
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python}"
echo "gpu_check: $(date -u +%Y-%m-%dT%H:%M:%SZ), loadavg $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
limit=480
for arg in "$@"; do [ "$arg" = "--cpu-smoke" ] && limit=420; done
PYTHONPATH="$(dirname "$here")${PYTHONPATH:+:$PYTHONPATH}" timeout "$limit" "$python" "$here/gpu_check.py" "$@"
rc=$?
[ "$rc" = 124 ] && echo "FAILED gpu_check: stopped after ${limit}s (sections not printed above did not finish)"
echo "gpu_check: done, loadavg $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"
exit "$rc"
