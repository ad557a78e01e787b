"""The same bits on every x86-64 machine: pin the vector instruction set of the CPU math libraries.

PyTorch (ATen), MKL, oneDNN and OpenBLAS each pick their kernels by the CPU they run on; an AVX-512 CPU sums in
another order than an AVX2 one, so the demo's weights, and every number after them, differ in the last
bits and then, through training, in the third decimal. Capping all four at AVX2, which every x86-64
server CPU since 2015 has, makes a CPU run compute with the same kernels everywhere. The other source
of difference is the number of threads a job computes with (docs/methods.md, Reproducibility): the rules that
train or embed declare 2, so any machine that gives Snakemake two cores or more runs them alike.
A variable the user has set is left as it is.
"""

from __future__ import annotations

import os
import platform
from collections.abc import MutableMapping
from pathlib import Path

# Read by ATen at its first dispatch, by MKL (Conditional Numerical Reproducibility) and by oneDNN at
# their first call, and by OpenBLAS (NumPy's and FAISS's BLAS, which scores exact search: mtcxr.metrics)
# when it loads: the workflow sets them before any job process starts, so every job inherits them.
CPU_KERNEL_ENVIRONMENT = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "AVX2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "OPENBLAS_CORETYPE": "Haswell",  # OpenBLAS's AVX2 kernels
}


def has_avx2(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether this is an x86-64 CPU with AVX2 (Linux's /proc/cpuinfo flags); False where unknown."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return False
    return any(line.startswith("flags") and " avx2" in line for line in text.splitlines())


def pin_cpu_kernels(environ: MutableMapping[str, str] = os.environ, avx2: bool | None = None) -> dict[str, str]:
    """Set the CPU kernel caps in `environ` where the CPU has AVX2 and the user set none; return those set.

    On a CPU without AVX2 (or not x86-64) nothing is set: capping there could ask for kernels it lacks.
    """
    if not (has_avx2() if avx2 is None else avx2):
        return {}
    added = {name: value for name, value in CPU_KERNEL_ENVIRONMENT.items() if name not in environ}
    environ.update(added)
    return added
