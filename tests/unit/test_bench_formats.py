"""scripts/bench_formats.py reads what llama.cpp's file holds per weight group from llama-quantize's own log."""

import importlib.util
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
spec = importlib.util.spec_from_file_location("bench_formats", SCRIPTS / "bench_formats.py")
formats = importlib.util.module_from_spec(spec)
spec.loader.exec_module(formats)

# llama-quantize's per-tensor lines as this llama.cpp prints them (names padded, kept tensors without "converting").
LOG = """\
[   1/ 272]                   output_norm.weight - [   576,      1,      1,      1], type =    f32, size =    0.002 MiB
[   2/ 272]                    token_embd.weight - [   576,  49152,      1,      1], type =   q8_0, converting to q4_0 ..
[   3/ 272]               blk.0.attn_norm.weight - [   576,      1,      1,      1], type =    f32, size =    0.002 MiB
[   4/ 272]                blk.0.attn_output.weight - [   576,    576,      1,      1], type =   q4_1, converting to q4_0 ..
[   5/ 272]                  blk.0.attn_q.weight - [   576,    576,      1,      1], type =   q4_1, converting to q4_0 ..
[   6/ 272]                blk.0.ffn_down.weight - [  1536,    576,      1,      1], type =   q4_1, converting to q4_0 ..
[   7/ 272]                  blk.0.ffn_up.weight - [   576,   1536,      1,      1], type =   q4_1, size =     0.51 MiB
"""


def test_each_tensor_is_counted_in_its_group_with_the_type_it_ends_up_in():
    groups = formats.gguf_groups(LOG)
    assert groups["attention"] == {"Q4_0": 2}  # attn_output is attention's, not the output layer
    assert groups["MLP"] == {"Q4_0": 1, "Q4_1": 1}  # a tensor kept as it is keeps its type
    assert groups["embedding"] == {"Q4_0": 1}
    assert groups["output"] == {"Q4_0 (the embedding's matrix, tied)": 1}  # no output.weight: tied


def test_an_untied_output_layer_is_its_own_group():
    untied = LOG + ("[   8/ 272]                        output.weight - [   576,  49152,      1,      1], type =   q8_0, "
                    "size =    28.69 MiB\n")
    assert formats.gguf_groups(untied)["output"] == {"Q8_0": 1}
