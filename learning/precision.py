"""Mixed precision: the ``--mixed-precision`` names, their Keras policies, and whether this CPU
computes in bfloat16 at all.

bfloat16 pays off only where the hardware has bfloat16 arithmetic: GPUs from Ampere on, TPUs,
and x86 CPUs with AVX512-BF16 or AMX, on which oneDNN runs bfloat16 convolutions natively.
Elsewhere TensorFlow emulates it, converting to and from float32 around every operation, several
times slower than float32 (``python benchmarks/bf16_conv.py`` measures it on a machine). train.py
warns before such a run rather than letting it crawl unexplained.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["POLICIES", "PRECISIONS", "NATIVE_BFLOAT16_CPU_FLAGS", "cpu_flags",
           "emulated_bfloat16_warning"]

# --mixed-precision name -> Keras mixed-precision policy (float32 weights, cheaper compute).
POLICIES = {"bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
PRECISIONS = tuple(POLICIES)

# The /proc/cpuinfo flags of native bfloat16 on x86 (the Makefile's BF16 line greps the same two).
NATIVE_BFLOAT16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str] | None:
    """The first processor's feature flags from a Linux x86 ``/proc/cpuinfo``; None where that
    is unknown (no such file, or no ``flags`` line, as on ARM and other systems)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return None


def emulated_bfloat16_warning(precision: str | None, num_gpus: int,
                              cpuinfo: str | Path = "/proc/cpuinfo") -> str | None:
    """The warning for a bf16 run that would compute on a CPU without bfloat16 arithmetic, or
    None (another precision, a GPU to run on, a CPU with it, or flags that cannot be read)."""
    if precision != "bf16" or num_gpus > 0:
        return None
    flags = cpu_flags(cpuinfo)
    if flags is None or flags.intersection(NATIVE_BFLOAT16_CPU_FLAGS):
        return None
    return (f"--mixed-precision bf16 on a CPU without native bfloat16 (neither "
            f"{' nor '.join(NATIVE_BFLOAT16_CPU_FLAGS)} in {cpuinfo}): TensorFlow emulates it, "
            f"several times slower than float32 (python benchmarks/bf16_conv.py measures it); "
            f"leave out --mixed-precision to train in float32")
