"""learning/precision.py: policy names, CPU flags, the emulated-bfloat16 warning."""
from __future__ import annotations

import keras
import pytest
from commands import run_command

from common.errors import ConfigError
from learning.config import RunConfig
from learning.precision import POLICIES, PRECISIONS, cpu_flags, emulated_bfloat16_warning

# Shortened /proc/cpuinfo files: two processors, as Linux writes them.
AMD_AVX2 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx avx2 fma
bogomips\t: 4000.00

processor\t: 1
flags\t\t: fpu sse2 avx avx2 fma
"""
INTEL_BF16 = "processor\t: 0\nflags\t\t: avx2 avx512f avx512_bf16 avx512_vnni\n"
INTEL_AMX = "processor\t: 0\nflags\t\t: avx2 amx_bf16 amx_tile\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes\nCPU implementer\t: 0x41\n"


def write(tmp_path, text):
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    return path


def test_cpu_flags_are_the_first_processors_flags_line(tmp_path):
    assert cpu_flags(write(tmp_path, AMD_AVX2)) == {"fpu", "sse2", "avx", "avx2", "fma"}


def test_cpu_flags_are_unknown_without_a_flags_line_or_a_file(tmp_path):
    assert cpu_flags(write(tmp_path, ARM)) is None
    assert cpu_flags(tmp_path / "missing") is None


def test_bf16_on_a_cpu_without_bfloat16_arithmetic_warns_naming_the_file_and_the_fix(tmp_path):
    path = write(tmp_path, AMD_AVX2)
    message = emulated_bfloat16_warning("bf16", 0, path)
    assert message == (f"--mixed-precision bf16 on a CPU without native bfloat16 (neither "
                       f"avx512_bf16 nor amx_bf16 in {path}): TensorFlow emulates it, several "
                       f"times slower than float32 (python benchmarks/bf16_conv.py measures "
                       f"it); leave out --mixed-precision to train in float32")


@pytest.mark.parametrize("text, precision, num_gpus", [
    (INTEL_BF16, "bf16", 0),      # AVX512-BF16
    (INTEL_AMX, "bf16", 0),       # AMX
    (AMD_AVX2, "bf16", 1),        # the compute runs on the GPU
    (AMD_AVX2, "fp16", 0),        # not bfloat16
    (AMD_AVX2, None, 0),          # float32
    (ARM, "bf16", 0),             # flags unknown: no guess
])
def test_no_warning_where_bfloat16_is_native_not_asked_for_or_unknown(tmp_path, text, precision,
                                                                      num_gpus):
    assert emulated_bfloat16_warning(precision, num_gpus, write(tmp_path, text)) is None


def test_every_precision_is_a_keras_policy_and_the_cli_offers_exactly_these():
    assert PRECISIONS == ("bf16", "fp16")
    assert [keras.mixed_precision.Policy(POLICIES[p]).compute_dtype for p in PRECISIONS] == [
        "bfloat16", "float16"]
    with pytest.raises(ConfigError, match=r"^--mixed-precision \(mixed_precision\) must be one "
                       r"of bf16, fp16, got 'fp8'$"):
        RunConfig(mixed_precision="fp8")


def test_train_warns_about_emulated_bfloat16_before_it_reads_any_data(tmp_path, monkeypatch):
    # The data of a real run can take minutes to list and check: the warning comes first. Here
    # the data folder does not exist, so the run stops at the data, after the warning.
    import learning.precision

    monkeypatch.setattr(learning.precision, "emulated_bfloat16_warning",
                        lambda *args, **kwargs: "SLOW CPU")
    result = run_command("train.py", "--data", tmp_path / "missing", "--mixed-precision",
                         "bf16", "--save-dir", tmp_path / "run")
    lines = result.stderr.splitlines()
    warned = [i for i, line in enumerate(lines) if "SLOW CPU" in line]
    failed = [i for i, line in enumerate(lines) if line.startswith("error: ")]
    assert result.returncode != 0 and len(warned) == 1 and len(failed) == 1, result.stderr
    assert warned[0] < failed[0] and "missing" in lines[failed[0]]
    assert not (tmp_path / "run").exists()
