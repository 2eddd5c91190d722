import numpy as np

from lynx.decoder import kv


def cache(batch: int, width: int, fill: float) -> list[np.ndarray]:
    return [np.full((batch, 3, width, 4), fill, dtype=np.float32) for _ in range(2)]


def test_joining_pads_both_sides_to_the_wider_cache_on_the_right():
    joined = kv.join(cache(2, 5, 1.0), cache(1, 8, 2.0))
    assert joined[0].shape == (3, 3, 8, 4)
    assert (joined[0][:2, :, :5] == 1).all() and (joined[0][:2, :, 5:] == 0).all()
    assert (joined[0][2] == 2).all()


def test_joining_into_an_empty_batch_keeps_the_newcomer():
    newcomer = cache(1, 4, 3.0)
    assert kv.join(None, newcomer) is newcomer


def test_keeping_rows_trims_to_the_longest_survivor():
    kept = kv.keep_rows(cache(3, 10, 1.0), rows=[0, 2], lengths=[4, 6])
    assert kept[0].shape == (2, 3, 6, 4)
    assert kept[0].flags["C_CONTIGUOUS"]
    assert kv.keep_rows(cache(1, 3, 1.0), rows=[], lengths=[]) is None


def test_decode_mask_covers_each_rows_cache_plus_the_new_token():
    mask = kv.decode_attention_mask([2, 4], past_width=5)
    assert mask.tolist() == [[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]]


def test_prompts_are_right_padded():
    ids, mask = kv.right_padded([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
