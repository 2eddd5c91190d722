"""The decoder's logits at the positions asked for only: an edit of onnxruntime-genai's graph, made at build time.

The exported graph runs the output layer (49152 x 576, about a fifth of a token's multiply-adds) on every position of
every call, and serving reads one position per row: the last prompt token in a prefill, the new one in a decode step.
The edit adds an input ``logits_positions [batch, logits_length]`` (int64 positions within the call's tokens) and
gathers those rows of the final hidden states (``GatherND``, one batch dimension) before the output layer, so
``logits`` is ``[batch, logits_length, vocab]``. The values are those the unedited graph gives at the same positions
(the rows are not mixed: the output layer is a row-wise product).

Runs in the model build environment (it needs ``onnx``): ``python -m lynx.tools.models.logits_positions <model.onnx>``.
"""

from __future__ import annotations

import sys
from pathlib import Path

INPUT = "logits_positions"
OUTPUT_LAYER = "/lm_head/MatMul_Q4"


def add_logits_positions(model_path: Path) -> None:
    """Rewrite ``model_path`` (and its external data file) with the ``logits_positions`` input; once only."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(model_path))
    graph = model.graph
    if any(i.name == INPUT for i in graph.input):
        return
    output_layer = next((n for n in graph.node if n.name == OUTPUT_LAYER), None)
    if output_layer is None:
        raise SystemExit(f"{model_path}: no {OUTPUT_LAYER} node; the builder's graph changed, update this edit")
    graph.input.append(helper.make_tensor_value_info(INPUT, TensorProto.INT64, ["batch_size", "logits_length"]))
    graph.initializer.append(helper.make_tensor(f"{INPUT}_axis", TensorProto.INT64, [1], [2]))
    as_indices = helper.make_node("Unsqueeze", [INPUT, f"{INPUT}_axis"], [f"{INPUT}_indices"],
                                  name="/lm_head/Unsqueeze_positions")
    gathered = helper.make_node("GatherND", [output_layer.input[0], f"{INPUT}_indices"], ["/lm_head/positions_hidden"],
                                name="/lm_head/GatherND_positions", batch_dims=1)
    output_layer.input[0] = "/lm_head/positions_hidden"
    at = list(graph.node).index(output_layer)
    graph.node.insert(at, gathered)
    graph.node.insert(at, as_indices)
    logits = next(o for o in graph.output if o.name == "logits")
    logits.type.tensor_type.shape.dim[1].dim_param = "logits_length"
    data = model_path.with_name(model_path.name + ".data")
    data.unlink(missing_ok=True)  # save_model appends to an existing file
    onnx.save_model(model, str(model_path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data.name, size_threshold=1024)
    # onnx writes the weights file owner-only (0600): the images' services run as another user than the build's.
    for written in (model_path, data):
        written.chmod(0o644)


if __name__ == "__main__":
    add_logits_positions(Path(sys.argv[1]))
