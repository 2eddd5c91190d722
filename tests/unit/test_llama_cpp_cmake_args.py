"""scripts/llama_cpp_cmake_args.py: llama.cpp is built with exactly the instruction sets /proc/cpuinfo lists."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "llama_cpp_cmake_args.py"
spec = importlib.util.spec_from_file_location("llama_cpp_cmake_args", SCRIPT)
cmake = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cmake)

# An AMD Zen 4 VM's flags: AVX-512 with VNNI, no AVX-VNNI, no AMX (the one where -DGGML_AVX_VNNI=ON died with SIGILL).
ZEN4 = ("processor\t: 0\nflags\t\t: fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c bmi1 avx2 bmi2 avx512f avx512dq "
        "avx512cd avx512bw avx512vl avx512_bf16 avx512vbmi avx512_vnni\nprocessor\t: 1\nflags\t\t: fpu\n")
SAPPHIRE_RAPIDS = "flags\t: sse4_2 avx avx2 fma f16c bmi2 avx_vnni avx512f avx512_vnni amx_tile amx_int8 amx_bf16\n"


def options(args: list[str]) -> dict[str, str]:
    return dict(arg.removeprefix("-D").split("=") for arg in args)


def test_an_instruction_set_is_built_only_where_the_cpu_lists_it():
    built = options(cmake.cmake_args(cmake.cpu_flags(ZEN4)))
    assert built["GGML_NATIVE"] == "OFF"
    assert built["GGML_AVX512_VNNI"] == "ON" and built["GGML_AVX512"] == "ON" and built["GGML_AVX2"] == "ON"
    assert built["GGML_AVX_VNNI"] == "OFF"
    assert {built[name] for name in cmake.GGML_AMX_OPTION_FLAG} == {"OFF"}


def test_amx_stays_off_unless_asked_for_and_listed():
    assert {options(cmake.cmake_args(cmake.cpu_flags(SAPPHIRE_RAPIDS)))[n] for n in cmake.GGML_AMX_OPTION_FLAG} == {"OFF"}
    asked = options(cmake.cmake_args(cmake.cpu_flags(SAPPHIRE_RAPIDS), amx=True))
    assert {asked[n] for n in cmake.GGML_AMX_OPTION_FLAG} == {"ON"}
    assert {options(cmake.cmake_args(cmake.cpu_flags(ZEN4), amx=True))[n] for n in cmake.GGML_AMX_OPTION_FLAG} == {"OFF"}


def test_on_this_machine_every_option_switched_on_is_a_flag_of_its_cpu():
    flags = cmake.cpu_flags(Path("/proc/cpuinfo").read_text())
    built = options(cmake.cmake_args(flags))
    on = [name for name, flag in cmake.GGML_OPTION_FLAG.items() if built[name] == "ON"]
    assert on and all(cmake.GGML_OPTION_FLAG[name] in flags for name in on)
    assert all(built[name] == "OFF" for name, flag in cmake.GGML_OPTION_FLAG.items() if flag not in flags)
