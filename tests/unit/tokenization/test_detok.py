from lynx.tokenization.detok import IncrementalDetokenizer

# A byte-level toy vocabulary: token i is one byte, as byte-BPE tokenizers do for rare characters.
BYTES = list("hi é!".encode())


def decode(ids: list[int]) -> str:
    return bytes(ids).decode("utf-8", errors="replace")


def test_deltas_rebuild_the_text_and_never_split_a_character():
    detok = IncrementalDetokenizer(decode)
    deltas = [detok.push(b) for b in BYTES]
    assert "".join(deltas) == "hi é!"
    assert all("\ufffd" not in d for d in deltas)
    assert deltas[3] == ""  # first byte of "é" alone is not yet text
