import numpy as np

from lynx.decoder.sampling import NUCLEUS_CANDIDATES, SamplingParams, nucleus, sample, softmax


def test_greedy_takes_the_largest_logit():
    assert sample(np.array([0.1, 3.0, 2.9]), SamplingParams(), np.random.default_rng(0)) == 1


def test_nucleus_keeps_the_smallest_set_reaching_top_p():
    probabilities = np.array([0.5, 0.3, 0.15, 0.05])
    ids, weights = nucleus(probabilities, 0.75)
    assert ids.tolist() == [0, 1]
    assert np.isclose(weights.sum(), 1.0)


def test_nucleus_falls_back_to_the_full_vocabulary_when_the_mass_is_spread():
    flat = np.full(NUCLEUS_CANDIDATES * 4, 1.0 / (NUCLEUS_CANDIDATES * 4))
    ids, _ = nucleus(flat, 0.9)
    assert len(ids) > NUCLEUS_CANDIDATES


def test_top_p_sampling_never_leaves_the_nucleus():
    logits = np.log(np.array([0.6, 0.3, 0.05, 0.05]))
    rng = np.random.default_rng(1)
    drawn = {sample(logits, SamplingParams(temperature=1.0, top_p=0.85), rng) for _ in range(300)}
    assert drawn == {0, 1}


def test_same_seed_same_tokens():
    logits = np.random.default_rng(3).normal(size=1000)
    params = SamplingParams(temperature=0.8, top_p=0.95)
    first = [sample(logits, params, np.random.default_rng(42)) for _ in range(5)]
    assert first == [sample(logits, params, np.random.default_rng(42)) for _ in range(5)]


def test_softmax_is_stable_for_large_logits():
    assert np.isclose(softmax(np.array([1000.0, 1000.0])).sum(), 1.0)


def test_a_temperature_near_zero_samples_the_largest_logit():
    """The smallest positive double as temperature (found by fuzzing the gateway) is greedy, not NaN."""
    logits = np.array([1.0, 3.5, -2.0, 3.0], dtype=np.float32)
    params = SamplingParams(temperature=2.225073858507e-311, top_p=0.5)
    assert {sample(logits, params, np.random.default_rng(seed)) for seed in range(20)} == {1}
    assert softmax(logits.astype(np.float64), params.temperature).tolist() == [0.0, 1.0, 0.0, 0.0]
