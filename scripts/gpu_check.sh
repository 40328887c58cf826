#!/usr/bin/env bash
# The one prepared GPU check (under 10 minutes on an H100/H200 with torch 2.11, Triton 3.6):
# fast paths against their references, timings against the references and SDPA, our FIR
# kernel against the reference conv, exploration-model training tokens/s, the start-up time with
# the Triton cache kept, and one exploration experiment through sandbox, export and the
# evaluator (tokens/s, peak memory, evaluation time), then, time allowing, a second one in
# the standby sandbox the first started (time outside training of each, fresh and in a
# standby: the standby's gain on a GPU node). Prints a table; the rows also go to
# $OUT/gpu_check.json when OUT is set. See scripts/gpu_check.py for the sizes.
#
#   bash scripts/gpu_check.sh               on the GPU machine
#   bash scripts/gpu_check.sh --cpu-smoke   dry run of every code path on the CPU
#
# fla: when the machine's Python lacks it, wheels carried in wheels/ are unpacked onto
# PYTHONPATH (fetch them beforehand: pip download fla-core==0.6.0 einops --no-deps -d wheels;
# wheels/ is git-ignored, so name it in the device run's carry list);
# without them the fla rows say "skipped" and the dispatcher runs the references.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
"$PY" - <<'PYEOF' || { echo "gpu_check: $PY needs Python >= 3.11 with torch, numpy, triton" >&2; exit 2; }
import sys
assert sys.version_info >= (3, 11), sys.version
import numpy, torch, triton  # noqa: F401
PYEOF
if ! "$PY" -c "import einops" 2>/dev/null || ! "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('fla') is None)"; then
    shopt -s nullglob
    wheels=(wheels/einops-*.whl wheels/fla_core-*.whl)
    if [ ${#wheels[@]} -gt 0 ]; then
        # Pure-Python wheels unpack into an importable tree: no pip, no network, and the
        # machine's own environment is left as it was.
        site="${TMPDIR:-/tmp}/asi-node-gpu-site"
        mkdir -p "$site"
        for wheel in "${wheels[@]}"; do
            echo "gpu_check: unpacking $wheel into $site"
            "$PY" -m zipfile -e "$wheel" "$site" || echo "gpu_check: could not unpack $wheel" >&2
        done
        export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    else
        echo "gpu_check: fla is not installed and no wheels/ were carried; fla rows will be skipped" >&2
    fi
fi
args=("$@")
if [ -n "${OUT:-}" ]; then args+=(--json "$OUT/gpu_check.json"); fi
exec timeout 580 "$PY" scripts/gpu_check.py --budget 550 "${args[@]}"
