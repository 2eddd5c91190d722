"""What the built ONNX decoder runs on each weight group: the quantized operators' formats, read from the graph.

Runs in the model build environment (it needs ``onnx``, which serving never installs):
``python -m lynx.tools.models.describe <model.onnx>`` prints one JSON object, group -> the distinct formats of its
weights with how many matrices have each. The benchmarks put it next to the GGUF formats llama.cpp runs.
"""

from __future__ import annotations

import json
import sys
from collections import Counter

# onnxruntime-genai's builder names each quantized node after the module it replaces.
GROUP_OF_MODULE = {"embed_tokens": "embedding", "qkv_proj": "attention", "q_proj": "attention", "k_proj": "attention",
                   "v_proj": "attention", "o_proj": "attention", "gate_proj": "MLP", "up_proj": "MLP",
                   "down_proj": "MLP", "lm_head": "output"}
QUANTIZED_OPS = ("MatMulNBits", "GatherBlockQuantized")
SCALE_TYPES = {1: "fp32", 10: "fp16", 16: "bf16"}  # onnx.TensorProto's data types


def weight_group(node_name: str) -> str:
    """The weight group of a node named like ``/model/layers.3/attn/qkv_proj/MatMul_Q4`` or ``/lm_head/MatMul_Q4``."""
    for part in node_name.split("/"):
        if part in GROUP_OF_MODULE:
            return GROUP_OF_MODULE[part]
    raise ValueError(f"no weight group known for quantized node {node_name!r}")


def node_format(op_type: str, attributes: dict, inputs: list[str], scale_type: str) -> str:
    """One quantized node's weight format, e.g. ``MatMulNBits int4 symmetric, fp32 scales per block of 32,
    accuracy_level 4``."""
    # MatMulNBits: A, B, scales[, zero_points[, g_idx[, bias]]]; GatherBlockQuantized: data, indices, scales[, zp].
    has_zero_points = len(inputs) > 3 and bool(inputs[3])
    text = (f"{op_type} int{attributes.get('bits', 4)} {'asymmetric' if has_zero_points else 'symmetric'}, "
            f"{scale_type} scales per block of {attributes['block_size']}")
    if op_type == "MatMulNBits":
        text += f", accuracy_level {attributes.get('accuracy_level', 0)}"
    return text


def describe(model_path: str) -> dict[str, dict[str, int]]:
    import onnx

    graph = onnx.load(model_path, load_external_data=False).graph
    scale_types = {i.name: SCALE_TYPES.get(i.data_type, str(i.data_type)) for i in graph.initializer}
    groups: dict[str, Counter] = {}
    for node in graph.node:
        if node.op_type in QUANTIZED_OPS:
            attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            scales = scale_types.get(node.input[2], "?") if len(node.input) > 2 else "?"
            formats = groups.setdefault(weight_group(node.name), Counter())
            formats[node_format(node.op_type, attributes, list(node.input), scales)] += 1
    return {group: dict(formats) for group, formats in groups.items()}


if __name__ == "__main__":
    print(json.dumps(describe(sys.argv[1])))
