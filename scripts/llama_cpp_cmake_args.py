#!/usr/bin/env python3
"""Print the CMAKE_ARGS that build llama.cpp (the `bench` extra) for the CPU this runs on.

ggml's native build (-march=native) and the documented fixed flag lists both went wrong on this project's VMs: one
kind advertises AMX and faults in ggml's AMX kernels, another (AMD Zen 4) has AVX-512 VNNI but not AVX-VNNI and dies
with SIGILL in ggml_vec_dot_q4_1_q8_1 when built with -DGGML_AVX_VNNI=ON. So each ggml instruction-set option is
switched on exactly when /proc/cpuinfo lists the flag it compiles for, and AMX stays off (a VM that advertises it may
still fault on it; pass --amx to build it where it is known to work).

Usage: CMAKE_ARGS="$(python scripts/llama_cpp_cmake_args.py)" LLAMA_CPP_BUILD_JOBS=2 pip install -e '.[bench]'
"""

from __future__ import annotations

import argparse
from pathlib import Path

# ggml's CMake option -> the /proc/cpuinfo flag of the instructions it compiles in.
GGML_OPTION_FLAG = {
    "GGML_SSE42": "sse4_2",
    "GGML_AVX": "avx",
    "GGML_AVX2": "avx2",
    "GGML_AVX_VNNI": "avx_vnni",
    "GGML_BMI2": "bmi2",
    "GGML_FMA": "fma",
    "GGML_F16C": "f16c",
    "GGML_AVX512": "avx512f",
    "GGML_AVX512_VBMI": "avx512vbmi",
    "GGML_AVX512_VNNI": "avx512_vnni",
    "GGML_AVX512_BF16": "avx512_bf16",
}
GGML_AMX_OPTION_FLAG = {"GGML_AMX_TILE": "amx_tile", "GGML_AMX_INT8": "amx_int8", "GGML_AMX_BF16": "amx_bf16"}
# Only the libraries the benchmark uses: the tests and examples double the build time on 2 cores.
FIXED = ("-DGGML_NATIVE=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF")


def cpu_flags(cpuinfo: str) -> set[str]:
    """The instruction-set flags of the first processor listed in /proc/cpuinfo's text."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    raise ValueError("no 'flags' line in /proc/cpuinfo: not an x86 Linux CPU?")


def cmake_args(flags: set[str], amx: bool = False) -> list[str]:
    """ggml's build options for a CPU with these flags: each instruction set on only where the CPU has it."""
    options = dict(GGML_OPTION_FLAG)
    options.update({name: flag if amx else "" for name, flag in GGML_AMX_OPTION_FLAG.items()})
    return [*FIXED, *(f"-D{name}={'ON' if flag and flag in flags else 'OFF'}" for name, flag in options.items())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpuinfo", type=Path, default=Path("/proc/cpuinfo"))
    parser.add_argument("--amx", action="store_true", help="build the AMX kernels where the CPU lists them")
    args = parser.parse_args()
    print(" ".join(cmake_args(cpu_flags(args.cpuinfo.read_text()), amx=args.amx)))


if __name__ == "__main__":
    main()
