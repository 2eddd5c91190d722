import pytest

from lynx.decoder.shares import StepCostModel, step_shares

MODEL = StepCostModel(fixed_seconds=0.010, per_row_seconds=0.002, per_context_token_seconds=0.00001)


@pytest.mark.parametrize("contexts", [[100], [100, 100], [10, 500, 2000], list(range(1, 17))])
def test_shares_add_up_to_the_step_time_exactly(contexts):
    shares = step_shares(0.0371, contexts, MODEL)
    assert len(shares) == len(contexts)
    assert sum(shares) == 0.0371
    assert all(share > 0 for share in shares)


def test_equal_rows_pay_equal_shares_and_longer_contexts_pay_more():
    assert step_shares(0.03, [200, 200, 200], MODEL) == pytest.approx([0.01] * 3)
    short, long = step_shares(0.03, [100, 1900], MODEL)
    assert long > short
    # The fixed part is split evenly; the rest follows each row's own marginal cost.
    expected_long = 0.03 * (0.005 + 0.002 + 0.019) / (0.010 + 0.004 + 0.02)
    assert long == pytest.approx(expected_long)


def test_a_degenerate_model_splits_evenly():
    assert step_shares(0.09, [5, 50, 500], StepCostModel(0.0, 0.0, 0.0)) == pytest.approx([0.03] * 3)
    assert step_shares(1.0, [], MODEL) == []
