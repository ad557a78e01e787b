"""The CPU kernel caps that make a CPU run give the same bits on other x86-64 machines."""

from __future__ import annotations

import platform

import pytest

from mtcxr.reproducibility import has_avx2, pin_cpu_kernels


def test_caps_are_set_where_the_cpu_has_avx2_and_the_user_set_none():
    environ = {"MKL_CBWR": "COMPATIBLE"}
    added = pin_cpu_kernels(environ, avx2=True)
    assert added == {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "OPENBLAS_CORETYPE": "Haswell"}
    assert environ == {"MKL_CBWR": "COMPATIBLE", **added}  # the user's own setting stays


def test_nothing_is_capped_without_avx2():
    environ: dict[str, str] = {}
    assert pin_cpu_kernels(environ, avx2=False) == {} and environ == {}


def test_avx2_is_read_from_the_cpu_flags(tmp_path):
    with_avx2, without = tmp_path / "a", tmp_path / "b"
    with_avx2.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n")
    without.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx\n")
    on_x86 = platform.machine().lower() in ("x86_64", "amd64")
    assert has_avx2(with_avx2) is on_x86 and has_avx2(without) is False
    assert has_avx2(tmp_path / "missing") is False


@pytest.mark.slow
def test_the_demo_backbone_computes_with_the_pinned_kernels(tiny_results):
    """The caps the Snakefile sets reach the job processes: the pretraining log names the kernels and threads
    (one: tests/tiny_workflow.py runs the tiny study with `--max-threads 1`, the rule asks for two)."""
    log = (tiny_results / "logs/pretrain_demo_backbone.log").read_text()
    if has_avx2():
        assert "CPU math: threads 1, AVX2 kernels (MKL_CBWR=AVX2)" in log
    else:
        assert "CPU math: threads 1," in log
