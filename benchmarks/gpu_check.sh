#!/usr/bin/env bash
# The CUDA paths proved in minutes (benchmarks/gpu_check.py says what runs): the tiny study with every GPU
# rule on cuda, its tables checked, and the embedding, head-training and fine-tuning rates, written to
# OUTDIR/gpu_check.md. Needs the package installed (`pip install -e .`); PYTHON picks the interpreter
# (default: the repository's .venv, else python3). Where no CUDA GPU is visible it stops at once.
#
# Usage: bash benchmarks/gpu_check.sh OUTDIR
set -uo pipefail
out=${1:?usage: bash benchmarks/gpu_check.sh OUTDIR}
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$repo/.venv/bin/python}
[ -x "$python" ] || python=python3
if ! "$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1; then
  echo "gpu_check: no CUDA GPU is visible to torch ($python) on $(hostname); nothing was checked" >&2
  exit 2
fi
exec "$python" "$repo/benchmarks/gpu_check.py" "$out"
