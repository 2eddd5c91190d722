import pytest

from lynx.accounting.shares import StepCostModel, step_shares

MODEL = StepCostModel(fixed_seconds=0.010, per_row_seconds=0.002, per_context_token_seconds=0.00001)


@pytest.mark.parametrize("contexts", [[100], [100, 100], [10, 500, 2000], list(range(1, 17)), [700, 5, 700]])
def test_shares_add_up_to_the_step_time_exactly(contexts):
    shares = step_shares(0.0371, contexts, MODEL)
    assert len(shares) == len(contexts)
    assert sum(shares) == 0.0371
    assert all(share > 0 for share in shares)


def test_the_weights_add_up_to_the_models_prediction():
    for contexts in ([64, 64, 64, 1024], [16, 128, 512, 1536], [700, 5, 700]):
        assert sum(MODEL.weights(contexts)) == pytest.approx(MODEL.predict(contexts), rel=1e-12)


def test_equal_rows_pay_equal_shares():
    assert step_shares(0.03, [200, 200, 200], MODEL) == pytest.approx([0.01] * 3)


def test_a_row_pays_for_its_own_context_whoever_its_neighbours_are():
    """Beside a long row or beside its equals, a short row's weight is the same (the batch's size aside)."""
    beside_long = MODEL.weights([100, 100, 2000])[0]
    beside_short = MODEL.weights([100, 100, 100])[0]
    assert beside_long == pytest.approx(beside_short)
    short, long = step_shares(0.05, [100, 2000], MODEL)
    assert long - short == pytest.approx(0.05 * MODEL.per_context_token_seconds * 1900 / MODEL.predict([100, 2000]))


def test_a_degenerate_model_splits_evenly():
    assert step_shares(0.09, [5, 50, 500], StepCostModel(0.0, 0.0, 0.0)) == pytest.approx([0.03] * 3)
    assert step_shares(1.0, [], MODEL) == []
