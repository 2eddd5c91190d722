import numpy as np
import pytest

from lynx.decoder import kv


def numbered_pool(rows: int = 4, width: int = 6) -> kv.KVPool:
    """Row r, position p holds 10 * r + p in every buffer."""
    pool = kv.KVPool.allocate(2, rows, 3, width, 4, np.float32)
    for buffer in pool.buffers:
        buffer[:] = (10 * np.arange(rows)[:, None, None, None] + np.arange(width)[None, None, :, None])
    return pool


def test_a_view_is_the_pools_own_memory_for_consecutive_rows():
    pool = numbered_pool()
    view = pool.view(1, 2)
    assert view[0].shape == (2, 3, 6, 4) and view[0].flags["C_CONTIGUOUS"]
    view[1][0, 0, 0, 0] = -1.0
    assert pool.buffers[1][1, 0, 0, 0] == -1.0
    with pytest.raises(ValueError, match="outside"):
        pool.view(3, 2)


def test_moving_a_row_copies_its_first_positions_only():
    pool = numbered_pool()
    pool.move(3, 1, length=4)
    for buffer in pool.buffers:
        assert buffer[1, :, :4, 0].tolist() == [[30, 31, 32, 33]] * 3
        assert buffer[1, :, 4:, 0].tolist() == [[14, 15]] * 3  # past the length: left as it was
        assert buffer[3, 0, :, 0].tolist() == [30, 31, 32, 33, 34, 35]


@pytest.mark.parametrize("keep", [
    [True, False, True, True, False, True],
    [False, False, True, True],
    [True, True, False],
    [False, True],
    [True, True, True],
    [False, False],
])
def test_compaction_gathers_the_kept_rows_at_the_front_moving_only_rows_beyond_them(keep: list[bool]):
    order, moves = kv.compaction(keep)
    kept = [row for row, keeping in enumerate(keep) if keeping]
    assert sorted(order) == kept
    rows = list(range(len(keep)))  # what each row holds, after the moves
    for source, target in moves:
        assert source >= len(kept) > target
        rows[target] = rows[source]
    assert rows[:len(kept)] == order


def test_decode_mask_covers_each_rows_cache_plus_the_new_token():
    mask = kv.decode_attention_mask([2, 4], past_width=5)
    assert mask.tolist() == [[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]]


def test_prompts_are_right_padded():
    ids, mask = kv.right_padded([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
